// Per-worker counters. Each worker thread owns one block and is its only writer, so an
// increment is a relaxed load and store (a plain add, no locked instruction, no shared cache
// line); a scrape or `stats` on another thread sums the blocks with relaxed loads. Counts are
// exact: no increment is lost, because no two threads ever write the same counter.
import Atomics

/// Every counter a worker keeps. `rawValue` indexes the block.
public enum Counter: Int, CaseIterable, Sendable {
    // memcached's general stats
    case cmdGet, cmdSet, cmdFlush, cmdTouch
    case getHits, getMisses, getExpired
    case deleteHits, deleteMisses
    case incrHits, incrMisses, decrHits, decrMisses
    case casHits, casMisses, casBadval
    case touchHits, touchMisses
    case bytesRead, bytesWritten
    case storeTooLarge, storeNoMemory
    /// Delete requests refused for their syntax or key.
    case deleteBadRequest
    // Storage command outcomes beyond memcached's names (for metrics).
    case setStored, setNotStored, addStored, addNotStored, replaceStored, replaceNotStored
    case appendStored, appendNotStored, prependStored, prependNotStored
    /// Requests answered with an error line, by any command.
    case protocolErrors
}

/// One worker's counters.
public final class CounterBlock: @unchecked Sendable {
    // @unchecked Sendable: the storage is only accessed through atomic loads and stores; one
    // thread (the owning worker) writes, any thread may read.
    private let storage: UnsafeMutablePointer<UnsafeAtomic<UInt64>.Storage>
    private static let count = Counter.allCases.count

    public init() {
        storage = .allocate(capacity: CounterBlock.count)
        storage.initialize(repeating: .init(0), count: CounterBlock.count)
    }

    deinit { storage.deallocate() }

    /// Adds `n`. Only the owning thread may call this.
    @inline(__always)
    public func add(_ c: Counter, _ n: UInt64 = 1) {
        let a = UnsafeAtomic<UInt64>(at: storage + c.rawValue)
        a.store(a.load(ordering: .relaxed) &+ n, ordering: .relaxed)
    }

    @inline(__always)
    public func get(_ c: Counter) -> UInt64 {
        UnsafeAtomic<UInt64>(at: storage + c.rawValue).load(ordering: .relaxed)
    }

    /// Zeroes every counter (`stats reset`). Racy by nature against the owner's increments,
    /// as memcached's reset is; a lost increment here is one that happened "before" the reset.
    public func reset() {
        for c in Counter.allCases {
            UnsafeAtomic<UInt64>(at: storage + c.rawValue).store(0, ordering: .relaxed)
        }
    }
}

/// Server-wide connection counters. Changed once per connection, not per request, so shared
/// atomics are fine here.
public final class ConnectionCounters: Sendable {
    public let current = ManagedAtomic<Int>(0)
    public let total = ManagedAtomic<UInt64>(0)
    public let rejected = ManagedAtomic<UInt64>(0)
    public init() {}
}
