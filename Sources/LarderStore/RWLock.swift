// A pthread reader-writer lock that lives at a fixed heap address. pthread_rwlock_t must never
// be moved or copied after initialisation, which a Swift struct holding it by value cannot
// promise; so the lock is allocated once and only its pointer is stored.
#if canImport(Glibc)
import Glibc
#endif

/// Heap-pinned `pthread_rwlock_t` preferring writers, so a stream of `get`s cannot starve a
/// `set` on the same shard (glibc's default prefers readers).
public final class RWLock: @unchecked Sendable {
    // @unchecked Sendable: the only state is the pthread lock, which is built for concurrent use.
    private let lock: UnsafeMutablePointer<pthread_rwlock_t>

    public init() {
        lock = .allocate(capacity: 1)
        lock.initialize(to: pthread_rwlock_t())
        var attr = pthread_rwlockattr_t()
        pthread_rwlockattr_init(&attr)
        pthread_rwlockattr_setkind_np(&attr, Int32(PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP))
        let rc = pthread_rwlock_init(lock, &attr)
        pthread_rwlockattr_destroy(&attr)
        precondition(rc == 0, "pthread_rwlock_init failed: \(rc)")
    }

    deinit {
        pthread_rwlock_destroy(lock)
        lock.deallocate()
    }

    @inline(__always)
    public func withReadLock<T>(_ body: () throws -> T) rethrows -> T {
        pthread_rwlock_rdlock(lock)
        defer { pthread_rwlock_unlock(lock) }
        return try body()
    }

    @inline(__always)
    public func withWriteLock<T>(_ body: () throws -> T) rethrows -> T {
        pthread_rwlock_wrlock(lock)
        defer { pthread_rwlock_unlock(lock) }
        return try body()
    }
}
