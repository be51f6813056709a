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
    // stop flag is atomic; `wake` is a pipe whose ends never change after init (the sweeper
    // polls the read end, stop() writes the write end).
    private let context: ServerContext
    private let stopping = ManagedAtomic<Bool>(false)
    private var thread: pthread_t?
    private var wake: [Int32] = [-1, -1]

    /// Stale index entries cleaned per shard per pass: bounds how long a pass holds a shard's
    /// write lock (a few microseconds: cleaning an entry is a load, a compare and a store).
    static let budgetPerShard = 4096
    /// Pause between passes when there is nothing to reclaim: starts at a quarter second and
    /// doubles with each idle pass up to `maxIdlePauseMillis`; any work brings it back. Each
    /// pass is a read-lock check per shard (measured: ten passes a second cost 24 ms of CPU a
    /// minute with 1M timed items and nothing to do, four a second 15.6 ms; memcached's idle
    /// cost is 0-11 ms a minute). Expired items are never served meanwhile (every read checks
    /// the item's own exptime); only their memory comes back up to a second later.
    static let idlePauseMillis: Int32 = 250
    static let maxIdlePauseMillis: Int32 = 1000
    /// Pause between passes while items are being reclaimed, to catch up quickly but leave the
    /// locks free most of the time.
    static let busyPauseMillis: Int32 = 4

    init(context: ServerContext) {
        self.context = context
        if pipe(&wake) == 0 {
            for fd in wake {
                _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
                _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            }
        } else {
            wake = [-1, -1]  // no pipe: stop() then waits out the current pause (at most 1 s)
        }
    }

    deinit {
        for fd in wake where fd >= 0 { close(fd) }
    }

    func start() {
        thread = startThread(name: "larder-sweeper") { [self] in
            var idlePause = Sweeper.idlePauseMillis
            var sinceRegistry: Int32 = 0
            while !stopping.load(ordering: .relaxed) {
                let r = context.store.sweep(budgetPerShard: Sweeper.budgetPerShard)
                let pause: Int32
                if r.visited > 0 {
                    pause = Sweeper.busyPauseMillis
                    idlePause = Sweeper.idlePauseMillis
                } else {
                    pause = idlePause
                    idlePause = min(idlePause * 2, Sweeper.maxIdlePauseMillis)
                }
                sinceRegistry += pause
                if sinceRegistry >= 1000 {  // about once a second
                    context.sweepRegistry()
                    sinceRegistry = 0
                }
                // Sleeps `pause` ms, or until stop() writes to the pipe.
                var pfd = pollfd(fd: wake[0], events: Int16(POLLIN), revents: 0)
                _ = poll(&pfd, 1, pause)
            }
        }
    }

    func stop() {
        stopping.store(true, ordering: .relaxed)
        if wake[1] >= 0 {
            var byte: UInt8 = 1
            _ = write(wake[1], &byte, 1)
        }
        if let t = thread { pthread_join(t, nil) }
    }
}
