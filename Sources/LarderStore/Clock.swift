// Time for the store, injected so tests control it and never sleep. Seconds since the Unix
// epoch, the granularity memcached's exptime has.
#if canImport(Glibc)
import Glibc
#endif
import Atomics

/// A source of the current Unix time in whole seconds.
public protocol StoreClock: Sendable {
    func now() -> Int64
}

/// The real clock.
public struct SystemClock: StoreClock {
    public init() {}
    @inline(__always)
    public func now() -> Int64 { Int64(time(nil)) }
}

/// A clock tests move by hand.
public final class ManualClock: StoreClock {
    private let current: ManagedAtomic<Int64>
    public init(_ start: Int64 = 1_700_000_000) { current = ManagedAtomic(start) }
    public func now() -> Int64 { current.load(ordering: .relaxed) }
    public func advance(by seconds: Int64) { current.wrappingIncrement(by: seconds, ordering: .relaxed) }
}

/// memcached's exptime rules, turned into an absolute deadline: 0 never expires (returns 0),
/// up to 30 days is relative to `now`, larger is an absolute Unix time, negative has already
/// expired. An absolute time at or before `now` has expired too.
public func absoluteExpiry(_ exptime: Int32, now: Int64) -> Int64 {
    if exptime == 0 { return 0 }
    if exptime < 0 { return 1 }  // any past instant
    let maxDelta: Int32 = 60 * 60 * 24 * 30
    if exptime <= maxDelta { return now + Int64(exptime) }
    return Int64(exptime) <= now ? 1 : Int64(exptime)
}
