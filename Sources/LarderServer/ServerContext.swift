// State shared by every worker: configuration, the store, counters of all workers, and the
// registry of open connections for `stats conns`. Read-mostly; the mutable parts are atomics
// or behind a mutex on cold paths.
import Atomics
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
    /// Ports actually bound (differ from the config when it asked for port 0).
    public let boundPort = ManagedAtomic<Int>(0)
    private let registryLock = Mutex()
    // nonisolated(unsafe): only accessed inside registryLock.withLock.
    nonisolated(unsafe) private var registry: [Int32: ConnectionInfo] = [:]

    public init(config: ServerConfig, store: Store, workers: Int) {
        self.config = config
        self.store = store
        startTime = store.clock.now()
        workerCounters = (0..<workers).map { _ in CounterBlock() }
        verbosity.store(config.verbosity, ordering: .relaxed)
    }

    /// Sum of one counter over all workers.
    public func total(_ c: Counter) -> UInt64 {
        var t: UInt64 = 0
        for b in workerCounters { t &+= b.get(c) }
        return t
    }

    func register(_ info: ConnectionInfo) {
        registryLock.withLock { registry[info.fd] = info }
    }

    func unregister(fd: Int32) {
        registryLock.withLock { _ = registry.removeValue(forKey: fd) }
    }

    func openConnections() -> [ConnectionInfo] {
        registryLock.withLock { Array(registry.values) }.sorted { $0.fd < $1.fd }
    }
}

/// What `stats conns` shows of a connection; immutable.
struct ConnectionInfo: Sendable {
    var fd: Int32
    var peer: String
    var openedAt: Int64
}
