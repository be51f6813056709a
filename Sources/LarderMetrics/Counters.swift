// Per-worker counters. Each worker thread owns one block and is its only writer, so an
// increment is a relaxed load and store (a plain add, no locked instruction, no shared cache
// line); a scrape or `stats` on another thread sums the blocks with relaxed loads. Counts are
// exact: no increment is lost, because no two threads ever write the same counter — not even
// `stats reset`, which only records a baseline (under a lock of its own) that `stats`
// subtracts; the counts themselves only ever grow, so /metrics never jumps back.
// Measured against swift-prometheus 2.4.1 on this machine (20M increments per thread):
// its Counter.increment costs 3.3-3.7 ns and Histogram.record 42 ns (1 thread) / 103 ns
// (2 threads, it takes a lock), against ~0.2 ns for a single-writer counter here; so Larder
// keeps its own per-worker counters and histograms and renders the text format at scrape time.
import Atomics
import LarderProtocol

/// Every counter a worker keeps. `rawValue` indexes the block.
public enum Counter: Int, CaseIterable, Sendable {
    // memcached's general stats
    case cmdGet, cmdSet, cmdFlush, cmdTouch
    case getHits, getMisses, getExpired
    case deleteHits, deleteMisses
    /// Deletes that found the key already expired (memcached counts them as misses).
    case deleteExpired
    case incrHits, incrMisses, decrHits, decrMisses
    case casHits, casMisses, casBadval
    /// `touch` command hits and misses; `gat`/`gats` keys are counted apart.
    case touchHits, touchMisses
    case gatHits, gatMisses
    case bytesRead, bytesWritten
    case storeTooLarge, storeNoMemory
    /// Delete requests refused for their syntax or key.
    case deleteBadRequest
    /// `md` with a cas that did not match (memcached counts these in delete_misses).
    case deleteCasMismatch
    /// `md ... I`: the item was marked stale instead of removed.
    case deleteInvalidated
    /// Requests answered with an error line, by any command.
    case protocolErrors
    /// Authentication attempts (`-Y`), and those that failed (memcached's auth_cmds, auth_errors).
    case authCmds, authErrors
    /// TLS handshakes completed, and failed or timed out (not a TLS client, bad certificate...).
    case tlsHandshakes, tlsHandshakeErrors
}

/// The status label of `larder_commands_total`.
public enum CommandStatus: Int, CaseIterable, Sendable {
    case hit, miss, stored, notStored, badval, error, ok

    public var label: String {
        switch self {
        case .hit: "hit"
        case .miss: "miss"
        case .stored: "stored"
        case .notStored: "not_stored"
        case .badval: "badval"
        case .error: "error"
        case .ok: "ok"
        }
    }

    /// The statuses exported for each command (all from the start, at 0).
    public static func exported(for c: CommandFamily) -> [CommandStatus] {
        switch c {
        case .get, .gets, .gat, .gats, .incr, .decr, .touch, .delete: [.hit, .miss, .error]
        case .set, .add, .replace, .append, .prepend: [.stored, .notStored, .error]
        case .cas: [.hit, .miss, .badval, .error]
        case .flush_all, .verbosity, .version, .stats: [.ok, .error]
        case .quit: [.ok]
        case .unknown: [.error]
        case .mg, .ma: [.hit, .miss, .badval, .error]
        case .ms: [.stored, .notStored, .badval, .miss, .error]
        case .md: [.hit, .miss, .badval, .error]
        case .mn, .me: [.ok, .error]
        case .admin: [.ok, .error]
        }
    }
}

/// One worker's counters.
public final class CounterBlock: @unchecked Sendable {
    // @unchecked Sendable: `storage` is only accessed through atomic loads and stores; one
    // thread (the owning worker) writes it, any thread may read. `baseline` is written only
    // by `reset`, under `resetLock`, and read through atomic loads.
    private let storage: UnsafeMutablePointer<UnsafeAtomic<UInt64>.Storage>
    /// Each counter's value at the last `stats reset`.
    private let baseline: UnsafeMutablePointer<UnsafeAtomic<UInt64>.Storage>
    private let resetLock = ManagedAtomic<Bool>(false)
    private static let general = Counter.allCases.count
    private static let statuses = CommandStatus.allCases.count
    private static let commandBase = general
    private static let count = general + CommandFamily.allCases.count * statuses
    /// Latency histograms, one per command group.
    public let latency: [LatencyHistogram]
    /// The same histograms as unmanaged references, for the hot path (no array access, no
    /// reference counting); `latency` keeps them alive.
    private let latencyFast: UnsafeMutablePointer<Unmanaged<LatencyHistogram>>

    public init() {
        storage = .allocate(capacity: CounterBlock.count)
        storage.initialize(repeating: .init(0), count: CounterBlock.count)
        baseline = .allocate(capacity: CounterBlock.count)
        baseline.initialize(repeating: .init(0), count: CounterBlock.count)
        latency = LatencyGroup.allCases.map { _ in LatencyHistogram() }
        latencyFast = .allocate(capacity: latency.count)
        for (i, h) in latency.enumerated() { (latencyFast + i).initialize(to: .passUnretained(h)) }
    }

    /// Records a command's duration in its group's histogram. Owning thread only.
    @inline(__always)
    public func observe(_ g: LatencyGroup, nanoseconds: UInt64) {
        latencyFast[g.rawValue]._withUnsafeGuaranteedRef { $0.observe(nanoseconds: nanoseconds) }
    }

    @inline(__always)
    private static func commandIndex(_ c: CommandFamily, _ s: CommandStatus) -> Int {
        commandBase + c.ordinal * statuses + s.rawValue
    }

    /// Counts one request of command `c` with outcome `s`. Owning thread only.
    @inline(__always)
    public func add(_ c: CommandFamily, _ s: CommandStatus, _ n: UInt64 = 1) {
        let a = UnsafeAtomic<UInt64>(at: storage + CounterBlock.commandIndex(c, s))
        a.store(a.load(ordering: .relaxed) &+ n, ordering: .relaxed)
    }

    /// The count since the process started (for /metrics: monotonic).
    public func get(_ c: CommandFamily, _ s: CommandStatus) -> UInt64 {
        UnsafeAtomic<UInt64>(at: storage + CounterBlock.commandIndex(c, s)).load(ordering: .relaxed)
    }

    /// The count since the last `stats reset` (for `stats`).
    public func sinceReset(_ c: CommandFamily, _ s: CommandStatus) -> UInt64 {
        let i = CounterBlock.commandIndex(c, s)
        return UnsafeAtomic<UInt64>(at: storage + i).load(ordering: .relaxed)
            &- UnsafeAtomic<UInt64>(at: baseline + i).load(ordering: .relaxed)
    }

    deinit {
        storage.deallocate()
        baseline.deallocate()
        latencyFast.deallocate()
    }

    /// Adds `n`. Only the owning thread may call this.
    @inline(__always)
    public func add(_ c: Counter, _ n: UInt64 = 1) {
        let a = UnsafeAtomic<UInt64>(at: storage + c.rawValue)
        a.store(a.load(ordering: .relaxed) &+ n, ordering: .relaxed)
    }

    /// The count since the process started (for /metrics: monotonic).
    @inline(__always)
    public func get(_ c: Counter) -> UInt64 {
        UnsafeAtomic<UInt64>(at: storage + c.rawValue).load(ordering: .relaxed)
    }

    /// The count since the last `stats reset` (for `stats`).
    public func sinceReset(_ c: Counter) -> UInt64 {
        get(c) &- UnsafeAtomic<UInt64>(at: baseline + c.rawValue).load(ordering: .relaxed)
    }

    /// `stats reset`: every counter's current value becomes its baseline. The owner's counts
    /// are never written, so an increment racing the reset is counted either before or after
    /// it, never lost and never undone.
    public func reset() {
        while !resetLock.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged {}
        for i in 0..<CounterBlock.count {
            let v = UnsafeAtomic<UInt64>(at: storage + i).load(ordering: .relaxed)
            UnsafeAtomic<UInt64>(at: baseline + i).store(v, ordering: .relaxed)
        }
        resetLock.store(false, ordering: .releasing)
    }
}

/// Server-wide connection counters. Changed once per connection, not per request, so shared
/// atomics are fine here.
public final class ConnectionCounters: Sendable {
    public let current = ManagedAtomic<Int>(0)
    public let total = ManagedAtomic<UInt64>(0)
    public let rejected = ManagedAtomic<UInt64>(0)
    /// `total` and `rejected` at the last `stats reset` (`stats` subtracts them).
    public let totalBaseline = ManagedAtomic<UInt64>(0)
    public let rejectedBaseline = ManagedAtomic<UInt64>(0)
    /// Times accepting was paused because the process ran out of descriptors (EMFILE/ENFILE),
    /// memcached's `listen_disabled_num`.
    public let listenDisabled = ManagedAtomic<UInt64>(0)
    /// Microseconds the cache port spent paused (memcached's `time_in_listen_disabled_us`).
    public let listenDisabledMicros = ManagedAtomic<UInt64>(0)
    /// Whether the cache port is accepting now (memcached's `accepting_conns`).
    public let accepting = ManagedAtomic<Bool>(true)
    /// Connections to the metrics port refused by its own connection limit.
    public let metricsRejected = ManagedAtomic<UInt64>(0)
    /// Requests to the metrics endpoint answered 401 (missing or wrong credentials).
    public let metricsAuthFailures = ManagedAtomic<UInt64>(0)
    public init() {}

    public func reset() {
        totalBaseline.store(total.load(ordering: .relaxed), ordering: .relaxed)
        rejectedBaseline.store(rejected.load(ordering: .relaxed), ordering: .relaxed)
    }
}
