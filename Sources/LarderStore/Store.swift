// The sharded store: hashes a key once (seeded per process), picks the shard from the hash's
// top bits and the slot from its low bits, and runs each operation under that one shard's
// lock. It knows nothing of the protocol's bytes: it is handed keys and values as raw bytes
// and answers with outcomes the server maps to replies.
import Atomics
#if canImport(Glibc)
import Glibc
#endif

/// Store configuration.
public struct StoreConfig: Sendable {
    /// Bytes for items and index together (`-m`).
    public var memoryLimit: Int
    /// Number of shards; rounded up to a power of two.
    public var shardCount: Int
    /// `-M`: answer out-of-memory instead of evicting.
    public var evictionDisabled: Bool

    public init(memoryLimit: Int = 64 << 20, shardCount: Int = 16, evictionDisabled: Bool = false) {
        self.memoryLimit = memoryLimit
        self.shardCount = shardCount
        self.evictionDisabled = evictionDisabled
    }
}

/// Result of a read.
public enum Lookup {
    case hit(Item)
    case miss
    /// The key was there but had expired (counted as memcached's get_expired).
    case expired
}

/// Result of a storage command.
public enum StoreOutcome: Sendable, Equatable {
    case stored, notStored, exists, notFound, outOfMemory
}

/// Result of a delete.
public enum DeleteOutcome: Sendable, Equatable {
    case deleted, notFound, expired
}

/// Result of incr/decr.
public enum ArithmeticOutcome: Sendable, Equatable {
    case value(UInt64)
    case notFound
    case nonNumeric
    case outOfMemory
}

/// Storage-level counters summed over shards.
public struct StoreCounters: Sendable, Equatable {
    public var currItems = 0
    public var totalItems: UInt64 = 0
    public var itemBytes = 0
    public var indexBytes = 0
    public var evictions: UInt64 = 0
    public var evictedUnfetched: UInt64 = 0
    public var expiredUnfetched: UInt64 = 0
    /// Expiry-index handles whose item is gone (deleted, replaced, evicted, expired).
    public var staleSlots = 0
    public var expiryIndexEntries = 0
    public var reclaimed: UInt64 = 0
}

public final class Store: Sendable {
    public let config: StoreConfig
    public let clock: any StoreClock
    private let shards: [Shard]
    private let shardBits: Int
    /// Deadline of a delayed `flush_all` (Unix seconds), 0 when none is pending.
    private let pendingFlush = ManagedAtomic<Int64>(0)

    public init(config: StoreConfig = StoreConfig(), clock: any StoreClock = SystemClock()) {
        var n = 1
        while n < max(1, config.shardCount) { n <<= 1 }
        var bits = 0
        while (1 << bits) < n { bits += 1 }
        var cfg = config
        cfg.shardCount = n
        self.config = cfg
        self.clock = clock
        shardBits = bits
        let perShard = config.memoryLimit / n
        shards = (0..<n).map { Shard(index: $0, shardBits: bits, limit: perShard) }
    }

    public var shardCount: Int { shards.count }
    /// The largest single item a shard can hold (its share of `-m`).
    public var shardLimit: Int { config.memoryLimit / shards.count }

    /// The per-process seeded hash of a key (see KeyHash.swift).
    @inline(__always)
    public static func hash(_ key: UnsafeRawBufferPointer) -> UInt64 {
        KeyHash.hash(key)
    }

    @inline(__always)
    private func shard(for hash: UInt64) -> Shard {
        shards[shardBits == 0 ? 0 : Int(hash >> UInt64(64 - shardBits))]
    }

    /// Index of the shard a key lives in (for tests that aim at one shard).
    public func shardIndex(of key: UnsafeRawBufferPointer) -> Int {
        let h = Store.hash(key)
        return shardBits == 0 ? 0 : Int(h >> UInt64(64 - shardBits))
    }

    @inline(__always)
    private func now() -> Int64 {
        let t = clock.now()
        let f = pendingFlush.load(ordering: .relaxed)
        if f != 0 && t >= f {
            if pendingFlush.compareExchange(expected: f, desired: 0, ordering: .relaxed).exchanged {
                flushNow()
            }
        }
        return t
    }

    // MARK: - Reads

    /// `get`: takes only the shard's read lock. An expired item is reported and then removed
    /// under the write lock if it is still the same item.
    public func get(_ key: UnsafeRawBufferPointer) -> Lookup {
        let t = now()
        let h = Store.hash(key)
        let s = shard(for: h)
        var stale: Item?
        let r: Lookup = s.lock.withReadLock {
            guard let i = s.findLocked(key, hash: h) else { return .miss }
            let item = s.itemLocked(at: i)
            if item.isExpired(now: t) {
                stale = item
                return .expired
            }
            s.touchReferenceLocked(i)
            return .hit(item)
        }
        if let stale { removeIfSame(stale, key: key, hash: h, shard: s) }
        return r
    }

    private func removeIfSame(_ item: Item, key: UnsafeRawBufferPointer, hash: UInt64, shard s: Shard) {
        s.lock.withWriteLock {
            if let i = s.findLocked(key, hash: hash), s.itemLocked(at: i) === item {
                s.removeLocked(at: i)
                s.reclaimed &+= 1
            }
        }
    }

    /// `gat`/`gats`: a get that also sets a new exptime (write lock).
    public func getAndTouch(_ key: UnsafeRawBufferPointer, exptime: Int32) -> Lookup {
        let t = now()
        let h = Store.hash(key)
        let s = shard(for: h)
        return s.lock.withWriteLock {
            guard let i = s.findLocked(key, hash: h) else { return .miss }
            let item = s.itemLocked(at: i)
            if item.isExpired(now: t) {
                s.removeLocked(at: i)
                s.reclaimed &+= 1
                return .expired
            }
            item.exptime = absoluteExpiry(exptime, now: t)
            if item.exptime != 0 { s.indexLocked(item, hash32: UInt32(truncatingIfNeeded: h)) }
            s.touchReferenceLocked(i)
            return .hit(item)
        }
    }

    // MARK: - Writes

    /// set/add/replace/append/prepend/cas. `mode` uses the store's own enum so the store does
    /// not depend on the protocol module.
    public func store(_ mode: StoreOperation, key: UnsafeRawBufferPointer, flags: UInt32, exptime: Int32,
                      value: UnsafeRawBufferPointer, casUnique: UInt64 = 0) -> StoreOutcome {
        let t = now()
        let h = Store.hash(key)
        let s = shard(for: h)
        let deadline = absoluteExpiry(exptime, now: t)
        // Build the new item outside the lock for the plain cases; append/prepend need the old
        // value and build theirs under the lock.
        var fresh: Item? = nil
        if mode != .append && mode != .prepend {
            fresh = Item.make(key: key, flags: flags, exptime: deadline, cas: 0, value: value)
        }
        return s.lock.withWriteLock {
            var slot = s.findLocked(key, hash: h)
            if let i = slot, s.itemLocked(at: i).isExpired(now: t) {
                s.removeLocked(at: i)
                s.reclaimed &+= 1
                slot = nil
            }
            var item: Item
            switch mode {
            case .set:
                item = fresh.unsafelyUnwrapped
            case .add:
                if slot != nil {
                    // memcached bumps the existing item's recency on a failed add.
                    s.bumpReferenceLocked(slot!)
                    return .notStored
                }
                item = fresh.unsafelyUnwrapped
            case .replace:
                guard slot != nil else { return .notStored }
                item = fresh.unsafelyUnwrapped
            case .cas:
                guard let i = slot else { return .notFound }
                if s.itemLocked(at: i).cas != casUnique { return .exists }
                item = fresh.unsafelyUnwrapped
            case .append, .prepend:
                guard let i = slot else { return .notStored }
                let old = s.itemLocked(at: i)
                // The combined item keeps the old flags and exptime, as memcached does.
                item = old.withValue { ov in
                    mode == .append
                        ? Item.make(key: key, flags: old.flags, exptime: old.exptime, cas: 0, value: ov, value)
                        : Item.make(key: key, flags: old.flags, exptime: old.exptime, cas: 0, value: value, ov)
                }
            }
            return placeLocked(item, slot: slot, hash: h, shard: s, now: t)
        }
    }

    /// Installs `item` (replacing slot `slot` if given) after making room. Write lock held.
    private func placeLocked(_ item: Item, slot: Int?, hash: UInt64, shard s: Shard, now t: Int64) -> StoreOutcome {
        let oldCharge = slot.map { s.itemLocked(at: $0).charge } ?? 0
        let growth = item.charge - oldCharge
        // Room for a new slot if the table is about to grow.
        let indexGrowth = (slot == nil && (s.count + 1) * 4 > s.capacity * 3) ? s.indexBytes : 0
        if item.charge + s.indexBytes + indexGrowth > s.limit {
            // Larger than this shard could ever hold.
            return .outOfMemory
        }
        var slot = slot
        while s.usedBytes + growth + indexGrowth > s.limit {
            if config.evictionDisabled { return .outOfMemory }
            // Never evict the item being replaced: take it out of the table first.
            if let i = slot {
                s.removeLocked(at: i)
                slot = nil
                continue
            }
            if !s.evictOneLocked(now: t) { return .outOfMemory }
        }
        item.cas = s.nextCasLocked()
        if let i = slot {
            s.replaceLocked(at: i, with: item)
        } else {
            s.insertLocked(item, hash: hash)
        }
        return .stored
    }

    /// `delete`: removes a live item, or reports that the key was absent or already expired
    /// (an expired item is removed as well).
    public func delete(_ key: UnsafeRawBufferPointer) -> DeleteOutcome {
        let t = now()
        let h = Store.hash(key)
        let s = shard(for: h)
        return s.lock.withWriteLock {
            guard let i = s.findLocked(key, hash: h) else { return .notFound }
            let expired = s.itemLocked(at: i).isExpired(now: t)
            s.removeLocked(at: i)
            if expired { s.reclaimed &+= 1 }
            return expired ? .expired : .deleted
        }
    }

    /// `touch`. Returns true if the item exists.
    public func touch(_ key: UnsafeRawBufferPointer, exptime: Int32) -> Bool {
        if case .hit = getAndTouch(key, exptime: exptime) { return true }
        return false
    }

    /// `incr`/`decr` with memcached's rules: the value must parse as an unsigned 64-bit decimal,
    /// incr wraps at 2^64, decr stops at 0, and a result with fewer digits than the old value
    /// is written in its place padded with spaces (memcached's in-place update).
    public func arithmetic(_ key: UnsafeRawBufferPointer, incr: Bool, delta: UInt64) -> ArithmeticOutcome {
        let t = now()
        let h = Store.hash(key)
        let s = shard(for: h)
        return s.lock.withWriteLock {
            guard let i = s.findLocked(key, hash: h) else { return .notFound }
            let old = s.itemLocked(at: i)
            if old.isExpired(now: t) {
                s.removeLocked(at: i)
                s.reclaimed &+= 1
                return .notFound
            }
            guard let current = old.withValue({ parseStoredNumber($0) }) else { return .nonNumeric }
            let result = incr ? current &+ delta : (delta > current ? 0 : current - delta)
            var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)
            return withUnsafeMutableBytes(of: &digits) { scratch in
                let n = writeDecimal(result, into: scratch)
                let text = UnsafeRawBufferPointer(rebasing: scratch[(24 - n)...])
                let length = n <= old.valueCount ? old.valueCount : n
                let item = Item.make(key: key, flags: old.flags, exptime: old.exptime, cas: 0,
                                     valueCount: length) { dst in
                    UnsafeMutableRawBufferPointer(rebasing: dst[0..<n]).copyMemory(from: text)
                    if length > n {
                        UnsafeMutableRawBufferPointer(rebasing: dst[n...]).initializeMemory(as: UInt8.self, repeating: 0x20)
                    }
                }
                switch placeLocked(item, slot: i, hash: h, shard: s, now: t) {
                case .stored: return .value(result)
                default: return .outOfMemory
                }
            }
        }
    }

    /// `flush_all [delay]`: with no delay (or a non-positive one) everything goes now;
    /// otherwise at the deadline, computed like an exptime.
    public func flushAll(delay: Int32) {
        let t = clock.now()
        if delay <= 0 {
            pendingFlush.store(0, ordering: .relaxed)
            flushNow()
        } else {
            pendingFlush.store(absoluteExpiry(delay, now: t), ordering: .relaxed)
        }
    }

    /// One bounded pass of the background sweeper: each shard's write lock is taken once and
    /// at most `budgetPerShard` expiry handles are visited under it. Returns handles visited.
    @discardableResult
    public func sweep(budgetPerShard: Int = 256) -> (visited: Int, reclaimed: Int) {
        let t = now()
        var visited = 0
        var reclaimed = 0
        var graveyard: [Item] = []
        graveyard.reserveCapacity(budgetPerShard)
        for s in shards {
            let r = s.lock.withWriteLock { s.sweepLocked(now: t, budget: budgetPerShard, graveyard: &graveyard) }
            visited += r.visited
            reclaimed += r.reclaimed
            // Free the reclaimed items outside the lock, then let a waiting worker run: the
            // sweeper works in bursts of a few microseconds, never a whole time slice.
            graveyard.removeAll(keepingCapacity: true)
            if r.visited > 0 { sched_yield() }
        }
        return (visited, reclaimed)
    }

    private func flushNow() {
        for s in shards {
            s.lock.withWriteLock { s.removeAllLocked() }
        }
    }

    /// Counters summed over shards, one shard lock at a time.
    public func counters() -> StoreCounters {
        var c = StoreCounters()
        for s in shards {
            s.lock.withReadLock {
                c.currItems += s.count
                c.totalItems &+= s.totalItems
                c.itemBytes += s.itemBytes
                c.indexBytes += s.indexBytes
                c.evictions &+= s.evictions
                c.evictedUnfetched &+= s.evictedUnfetched
                c.staleSlots += s.staleSlots
                c.expiryIndexEntries += s.expiry.count
                c.expiredUnfetched &+= s.expiredUnfetched
                c.reclaimed &+= s.reclaimed
            }
        }
        return c
    }

    /// Walks every live item of every shard (one shard lock at a time); for invariant checks.
    public func forEachItem(_ body: (Item) -> Void) {
        for s in shards {
            s.lock.withReadLock {
                for i in 0..<s.capacity {
                    if let item = s.slots[i] { body(item) }
                }
            }
        }
    }
}

/// Storage operations (mirrors the protocol's store commands without depending on it).
public enum StoreOperation: UInt8, Sendable {
    case set, add, replace, append, prepend, cas
}

/// memcached reads an incr/decr target with strtoull: leading whitespace, digits, and then
/// whitespace or the end (the stored value is always followed by "\r\n").
func parseStoredNumber(_ v: UnsafeRawBufferPointer) -> UInt64? {
    var i = 0
    let n = v.count
    while i < n, v[i] == 0x20 || (v[i] >= 0x09 && v[i] <= 0x0D) { i += 1 }
    var negative = false
    if i < n && (v[i] == UInt8(ascii: "+") || v[i] == UInt8(ascii: "-")) {
        negative = v[i] == UInt8(ascii: "-")
        i += 1
    }
    let start = i
    var x: UInt64 = 0
    while i < n {
        let d = v[i] &- 0x30
        if d > 9 { break }
        let (m, o1) = x.multipliedReportingOverflow(by: 10)
        let (a, o2) = m.addingReportingOverflow(UInt64(d))
        if o1 || o2 { return nil }
        x = a
        i += 1
    }
    if i == start { return nil }
    if i < n && !(v[i] == 0x20 || (v[i] >= 0x09 && v[i] <= 0x0D)) { return nil }
    let value = negative ? 0 &- x : x
    if negative && Int64(bitPattern: value) < 0 { return nil }
    return value
}

/// Writes the decimal digits of `v` right-aligned at the end of a 24-byte scratch buffer and
/// returns how many there are.
@inline(__always)
func writeDecimal(_ v: UInt64, into scratch: UnsafeMutableRawBufferPointer) -> Int {
    var x = v
    var n = 0
    repeat {
        scratch[23 - n] = 0x30 &+ UInt8(x % 10)
        x /= 10
        n += 1
    } while x > 0
    return n
}
