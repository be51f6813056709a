// The client-memory budget: one server-wide limit on what all client connections together
// make Larder hold (input buffers, a partly received value included; queued reply text and
// the values queued replies pin; per-connection state). Each worker keeps the sum for its own
// connections in a padded single-writer slot, changed only when a connection's holding
// changes (a buffer grows or shrinks, replies stay queued), never per request; a check sums
// the few slots. Over the limit, every worker is woken to close its connections holding the
// most, biggest first, until the total is back under the limit (docs/CLIENTS.md).
import Atomics
#if canImport(Glibc)
import Glibc
#endif

final class ClientMemory: @unchecked Sendable {
    // @unchecked Sendable: the slots are only touched through atomic loads and stores (one
    // writer per slot: its worker); `workers` is written once, before any worker thread
    // starts (pthread_create orders that write before every read), and only read afterwards.
    /// The budget in bytes; 0 means no limit (holdings are still counted for the metrics).
    let limit: Int
    /// One slot per worker, each on its own 128-byte line so workers never share a line.
    private let slots: UnsafeMutablePointer<UnsafeAtomic<Int>.Storage>
    private let workerCount: Int
    private static let stride = 16
    /// Connections closed for holding the most when the budget was reached.
    let evicted = ManagedAtomic<UInt64>(0)
    /// Connections closed because their replies sat at the output limit past --output-timeout.
    let outputTimeouts = ManagedAtomic<UInt64>(0)
    nonisolated(unsafe) private var workers: [Worker] = []

    /// A connection holding no more than this is never closed for the budget: an idle or
    /// small-request connection holds its 16 KB input buffer, a 4 KB reply buffer and ~3 KB of
    /// state; 64 KB leaves room for ordinary replies in flight.
    static let protectedBytes = 64 * 1024

    init(limitBytes: Int, workers: Int) {
        limit = limitBytes
        workerCount = workers
        slots = .allocate(capacity: workers * ClientMemory.stride)
        slots.initialize(repeating: .init(0), count: workers * ClientMemory.stride)
    }

    deinit { slots.deallocate() }

    /// Called once by the server, before the worker threads start.
    func attach(_ ws: [Worker]) { workers = ws }

    /// Adds `delta` (may be negative) to worker `w`'s holding. Owning worker thread only.
    @inline(__always)
    func add(worker w: Int, _ delta: Int) {
        let a = UnsafeAtomic<Int>(at: slots + w * ClientMemory.stride)
        a.store(a.load(ordering: .relaxed) &+ delta, ordering: .relaxed)
    }

    /// Bytes held by all connections now (relaxed: a snapshot good to a few reads).
    func total() -> Int {
        var t = 0
        for w in 0..<workerCount {
            t &+= UnsafeAtomic<Int>(at: slots + w * ClientMemory.stride).load(ordering: .relaxed)
        }
        return t
    }

    var isOver: Bool { limit > 0 && total() > limit }

    /// Wakes every worker to close its biggest connections (each at most once until it ran).
    func requestReclaim() {
        for w in workers { w.requestReclaim() }
    }
}
