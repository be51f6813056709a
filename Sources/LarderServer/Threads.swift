// Starting a named pthread for a closure, without Foundation.
import CLibevent
#if canImport(Glibc)
import Glibc
#endif

private final class ThreadBody {
    let name: String
    let run: () -> Void
    init(_ name: String, _ run: @escaping () -> Void) {
        self.name = name
        self.run = run
    }
}

/// Starts a joinable thread named `name` (15 bytes at most show) running `body`; returns its
/// handle for `pthread_join`.
func startThread(name: String, _ body: @escaping @Sendable () -> Void) -> pthread_t {
    var tid = pthread_t()
    let box = Unmanaged.passRetained(ThreadBody(name, body)).toOpaque()
    let rc = pthread_create(&tid, nil, { arg in
        // Takes back the +1 reference passed to pthread_create: released when this returns.
        let b = Unmanaged<ThreadBody>.fromOpaque(arg!).takeRetainedValue()
        b.name.withCString { larder_name_thread($0) }
        b.run()
        return nil
    }, box)
    precondition(rc == 0, "pthread_create failed: \(rc)")
    return tid
}

/// A mutex for the few paths that need one (the accept hand-off queue, the watch buffers).
final class Mutex: @unchecked Sendable {
    // @unchecked Sendable: pthread_mutex_t is pinned on the heap and is itself thread-safe.
    private let m: UnsafeMutablePointer<pthread_mutex_t>
    init() {
        m = .allocate(capacity: 1)
        m.initialize(to: pthread_mutex_t())
        pthread_mutex_init(m, nil)
    }
    deinit {
        pthread_mutex_destroy(m)
        m.deallocate()
    }
    func withLock<T>(_ body: () throws -> T) rethrows -> T {
        pthread_mutex_lock(m)
        defer { pthread_mutex_unlock(m) }
        return try body()
    }
    func lock() { pthread_mutex_lock(m) }
    func unlock() { pthread_mutex_unlock(m) }
    /// Takes the lock only if it is free (the watch buffers: a worker never waits).
    func tryLock() -> Bool { pthread_mutex_trylock(m) == 0 }
}
