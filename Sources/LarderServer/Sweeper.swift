// The background sweeper: empties store segments whose items have all expired (a whole
// segment in one step), cleans stale weak entries from the store's index and dead slots from
// the connection registry. Work is bounded per lock hold (a budget of entries per shard), so a
// mass expiry is spread over many short passes instead of one long stall; a shard with nothing
// to do costs one read-lock check.
import Atomics
import LarderMetrics
import LarderStore
#if canImport(Glibc)
import Glibc
#endif

final class Sweeper: @unchecked Sendable {
    // @unchecked Sendable: `thread` is touched only by start/stop on the owning thread; the
    // stop flag is atomic.
    private let context: ServerContext
    private let stopping = ManagedAtomic<Bool>(false)
    private var thread: pthread_t?

    /// Stale index entries cleaned per shard per pass: bounds how long a pass holds a shard's
    /// write lock (a few microseconds: cleaning an entry is a load, a compare and a store).
    static let budgetPerShard = 4096
    /// Pause between passes when there is nothing to reclaim: four passes a second, each a
    /// read-lock check per shard when idle (measured: ten a second cost 24 ms of CPU a minute
    /// with 1M timed items and nothing to do; memcached's idle cost is ~11 ms a minute).
    static let idlePauseMicros: UInt32 = 250_000
    /// Pause between passes while items are being reclaimed, to catch up quickly but leave the
    /// locks free most of the time.
    static let busyPauseMicros: UInt32 = 4_000

    init(context: ServerContext) { self.context = context }

    func start() {
        thread = startThread(name: "larder-sweeper") { [self] in
            var passes = 0
            while !stopping.load(ordering: .relaxed) {
                let r = context.store.sweep(budgetPerShard: Sweeper.budgetPerShard)
                passes += 1
                if passes % 4 == 0 { context.sweepRegistry() }  // about once a second when idle
                usleep(r.visited > 0 ? Sweeper.busyPauseMicros : Sweeper.idlePauseMicros)
            }
        }
    }

    func stop() {
        stopping.store(true, ordering: .relaxed)
        if let t = thread { pthread_join(t, nil) }
    }
}
