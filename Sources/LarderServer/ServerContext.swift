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
    /// The client-memory budget and what connections hold against it.
    let clientMemory: ClientMemory
    /// One counter block per worker, fixed at start.
    public let workerCounters: [CounterBlock]
    /// Runtime verbosity (`verbosity N`).
    public let verbosity = ManagedAtomic<Int>(0)
    /// `watch` clients and the log lines they receive.
    public let watch = WatchHub()
    /// Ports actually bound (differ from the config when it asked for port 0).
    public let boundPort = ManagedAtomic<Int>(0)
    /// The users of the `-Y` auth file (nil without -Y); read after privileges are dropped,
    /// replaced on SIGHUP. Looked up once per authentication attempt, never per request.
    let authUsers = Reloadable<AuthUsers?>(nil)
    /// Wakes the acceptor when it paused accepting for lack of descriptors.
    let acceptorWake = AcceptorWake()
    private let registryLock = Mutex()
    // nonisolated(unsafe): only accessed inside registryLock.withLock. Slots hold weak
    // references: a closing connection does not touch the registry; its slot goes stale and
    // is dropped by the sweeper or reused by the next connection on that fd.
    nonisolated(unsafe) private var registry: [Int32: WeakConnectionInfo] = [:]

    /// The OpenSSL context of the TLS listeners (nil without -Z).
    let tls: TLSContext?

    init(config: ServerConfig, store: Store, workers: Int, tls: TLSContext? = nil) {
        self.config = config
        self.tls = tls
        self.store = store
        startTime = store.clock.now()
        workerCounters = (0..<workers).map { _ in CounterBlock() }
        clientMemory = ClientMemory(limitBytes: config.clientMemoryMB * 1024 * 1024, workers: workers)
        verbosity.store(config.verbosity, ordering: .relaxed)
        let hub = watch
        store.setEvictionObserver { key, fetched, exptime in
            guard hub.wants(.evictions) else { return }
            hub.eviction(key, fetched: fetched, ttl: exptime == 0 ? -1 : exptime - Int64(time(nil)))
        }
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

    /// A worker closed a connection: if accepting is paused on EMFILE, resume it now.
    @inline(__always)
    func descriptorFreed() {
        acceptorWake.descriptorFreed()
    }

    /// Bytes client connections hold against the budget (`--client-memory`).
    public var clientMemoryBytes: Int { clientMemory.total() }
    /// Connections closed because the client-memory budget was reached.
    public var clientsEvicted: UInt64 { clientMemory.evicted.load(ordering: .relaxed) }
    /// Connections closed because their replies sat at the output limit too long.
    public var outputTimeouts: UInt64 { clientMemory.outputTimeouts.load(ordering: .relaxed) }
}

/// How a worker closing a connection wakes the acceptor paused on EMFILE/ENFILE: one
/// atomic load per close while accepting, an event_active while paused.
final class AcceptorWake: @unchecked Sendable {
    // @unchecked Sendable: `event` is written once by the server before any worker thread
    // starts (pthread_create orders that write before the workers' reads) and is read-only
    // afterwards; event_active is thread-safe after evthread_use_pthreads().
    nonisolated(unsafe) var event: OpaquePointer?
    /// True while the acceptor is paused for lack of descriptors.
    let paused = ManagedAtomic<Bool>(false)

    func descriptorFreed() {
        guard paused.load(ordering: .relaxed), let e = event else { return }
        if paused.exchange(false, ordering: .acquiringAndReleasing) { Libevent.activate(e) }
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
