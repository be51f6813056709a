// State shared by every worker: configuration, the store, counters of all workers, and the
// registry of open connections for `stats conns`. Read-mostly; the mutable parts are atomics
// or behind a mutex on cold paths.
import Atomics
import LarderMetrics
import LarderStore
#if canImport(Glibc)
import Glibc
#endif

/// The version string `version` reports. It starts with memcached's version number so
/// clients that compare versions to enable features treat Larder like memcached 1.6.
public let larderVersion = "1.6.18-larder-0.1.0"

public final class ServerContext: Sendable {
    public let config: ServerConfig
    public let store: Store
    public let startTime: Int64
    public let connections = ConnectionCounters()
    /// One counter block per worker, fixed at start.
    public let workerCounters: [CounterBlock]
    /// Runtime verbosity (`verbosity N`).
    public let verbosity = ManagedAtomic<Int>(0)
    /// `watch` clients and the log lines they receive.
    public let watch = WatchHub()
    /// Ports actually bound (differ from the config when it asked for port 0).
    public let boundPort = ManagedAtomic<Int>(0)
    private let registryLock = Mutex()
    // nonisolated(unsafe): only accessed inside registryLock.withLock. Slots hold weak
    // references: a closing connection does not touch the registry; its slot goes stale and
    // is dropped by the sweeper or reused by the next connection on that fd.
    nonisolated(unsafe) private var registry: [Int32: WeakConnectionInfo] = [:]

    public init(config: ServerConfig, store: Store, workers: Int) {
        self.config = config
        self.store = store
        startTime = store.clock.now()
        workerCounters = (0..<workers).map { _ in CounterBlock() }
        verbosity.store(config.verbosity, ordering: .relaxed)
        let hub = watch
        store.setEvictionObserver { key, fetched, exptime in
            guard hub.wants(.evictions) else { return }
            hub.eviction(key, fetched: fetched, ttl: exptime == 0 ? -1 : exptime - Int64(time(nil)))
        }
    }

    /// Sum of one counter over all workers.
    public func total(_ c: Counter) -> UInt64 {
        var t: UInt64 = 0
        for b in workerCounters { t &+= b.get(c) }
        return t
    }

    func register(_ info: ConnectionInfo) {
        registryLock.withLock { registry[info.fd] = WeakConnectionInfo(info: info) }
    }

    func openConnections() -> [ConnectionInfo] {
        registryLock.withLock { registry.values.compactMap { $0.info } }.sorted { $0.fd < $1.fd }
    }

    /// Registry slots whose connection has closed.
    public func staleRegistrySlots() -> Int {
        registryLock.withLock { registry.values.reduce(0) { $0 + ($1.info == nil ? 1 : 0) } }
    }

    /// Drops stale registry slots (run by the sweeper).
    func sweepRegistry() {
        registryLock.withLock { registry = registry.filter { $0.value.info != nil } }
    }

    /// Stale slots in every secondary structure: the store's expiry index and the registry.
    /// `counters` is a snapshot the caller already took (stats and /metrics both have one).
    public func staleSlots(_ counters: StoreCounters) -> Int {
        counters.staleSlots + staleRegistrySlots()
    }
}

/// What `stats conns` shows of a connection; immutable, owned by the connection.
final class ConnectionInfo: Sendable {
    let fd: Int32
    let peer: String
    let openedAt: Int64
    init(fd: Int32, peer: String, openedAt: Int64) {
        self.fd = fd
        self.peer = peer
        self.openedAt = openedAt
    }
}

/// A registry slot: does not keep its connection's info alive.
struct WeakConnectionInfo: @unchecked Sendable {
    // @unchecked Sendable: the weak reference is read and written only under registryLock,
    // and Swift's weak references are safe to load from any thread.
    weak var info: ConnectionInfo?
}
