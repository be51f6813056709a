// One shard of the store: an open-addressing hash table (linear probing, backward-shift
// deletion, no tombstones) over items, and the counters that belong to it.
//
// LOCK RULES (the only place they are written down in code; docs/STORE.md explains them):
// - `lock` guards every stored property of the shard: the table arrays, `count`, `capacity`,
//   `itemBytes`, `casCounter` and all counters.
// - Readers (get, gets, stats reads) hold `lock` shared. They read the table and items and may
//   set an item's reference bit in `refs` with an atomic store - the only write a reader makes.
// - Writers (every mutation) hold `lock` exclusively.
// - Methods named `...Locked` assume the caller holds the lock in the right mode (documented on
//   each). No code path holds two shards' locks at once.
// - Items' value bytes are immutable and are read without any lock by the network layer once a
//   reference has been taken.
import Atomics
#if canImport(Glibc)
import Glibc
#endif

final class Shard: @unchecked Sendable {
    // @unchecked Sendable: all mutable state is guarded by `lock` as described above; the
    // raw pointers are owned by this object and freed in deinit.

    let lock = RWLock()

    // Table storage. `slots[i] == nil` marks an empty slot; `hashes[i]` is the low 32 bits of
    // the occupant's key hash (its home slot and a cheap filter before comparing keys);
    // `refs[i]` holds the occupant's CLOCK credit (bits 0-1: 1 on insert, +1 per use up to 3,
    // -1 each time the eviction hand passes; evicted at 0) and its fetched bit (bit 2, set by
    // the first read, never cleared).
    // @exclusivity(unchecked): these pointers are only reassigned under the write lock (resize);
    // dynamic exclusivity checks would add two runtime calls per access on the hot path.
    @exclusivity(unchecked) private(set) var slots: UnsafeMutablePointer<Item?>
    @exclusivity(unchecked) private(set) var hashes: UnsafeMutablePointer<UInt32>
    @exclusivity(unchecked) private(set) var refs: UnsafeMutablePointer<UnsafeAtomic<UInt8>.Storage>
    @exclusivity(unchecked) private(set) var capacity: Int
    @exclusivity(unchecked) private(set) var count = 0

    /// Sum of the charges of the items in the table.
    @exclusivity(unchecked) private(set) var itemBytes = 0
    /// Bytes this shard may use (its share of `-m`), items and index together.
    let limit: Int
    /// Bytes of one table slot: the item pointer, the 32-bit hash and the reference byte.
    static let slotBytes = MemoryLayout<Item?>.stride + 4 + 1

    /// Next cas unique of this shard; uniques are `(counter << shardBits) | shardIndex`, so
    /// they are unique across shards without a shared counter.
    @exclusivity(unchecked) private var casCounter: UInt64 = 0
    private let casShift: UInt64
    private let casTag: UInt64

    /// CLOCK hand for eviction.
    @exclusivity(unchecked) var hand = 0

    // Counters, guarded by the lock like everything else.
    @exclusivity(unchecked) var totalItems: UInt64 = 0
    @exclusivity(unchecked) var evictions: UInt64 = 0
    @exclusivity(unchecked) var evictedUnfetched: UInt64 = 0
    @exclusivity(unchecked) var expiredUnfetched: UInt64 = 0
    @exclusivity(unchecked) var reclaimed: UInt64 = 0

    init(index: Int, shardBits: Int, limit: Int, initialCapacity: Int = 256) {
        self.limit = limit
        casShift = UInt64(shardBits)
        casTag = UInt64(index)
        capacity = initialCapacity
        slots = .allocate(capacity: initialCapacity)
        slots.initialize(repeating: nil, count: initialCapacity)
        hashes = .allocate(capacity: initialCapacity)
        hashes.initialize(repeating: 0, count: initialCapacity)
        refs = .allocate(capacity: initialCapacity)
        refs.initialize(repeating: .init(0), count: initialCapacity)
    }

    deinit {
        slots.deinitialize(count: capacity)
        slots.deallocate()
        hashes.deallocate()
        refs.deallocate()
    }

    /// Bytes of the index itself.
    var indexBytes: Int { capacity * Shard.slotBytes }
    /// Everything this shard uses against its limit: items, the table, and the expiry index.
    var usedBytes: Int { itemBytes + indexBytes + expiry.capacity * MemoryLayout<ExpiryHandle>.stride }

    /// A fresh cas unique. Write lock held.
    @inline(__always)
    func nextCasLocked() -> UInt64 {
        casCounter &+= 1
        return (casCounter << casShift) | casTag
    }

    // MARK: - Lookup

    /// The slot holding `key`, or nil. Lock held (either mode).
    @inline(__always)
    func findLocked(_ key: UnsafeRawBufferPointer, hash: UInt64) -> Int? {
        let h32 = UInt32(truncatingIfNeeded: hash)
        let mask = capacity - 1
        var i = Int(h32) & mask
        while true {
            guard let item = slots[i] else { return nil }
            if hashes[i] == h32 && item.keyEquals(key) { return i }
            i = (i + 1) & mask
        }
    }

    /// The item in slot `i`. Lock held.
    @inline(__always)
    func itemLocked(at i: Int) -> Item { slots[i].unsafelyUnwrapped }

    /// Credit a new item starts with (bits 0-1 of its refs byte).
    static let referenced: UInt8 = 1
    static let creditMask: UInt8 = 3
    static let fetched: UInt8 = 4

    /// Records a read of slot `i`: one more credit (up to 3) and the fetched bit. Lock held in
    /// either mode: this relaxed atomic store is the one write readers make. Two readers racing
    /// may both store the same value and lose one increment, which only makes the
    /// approximation a little coarser. Saturated items are not written at all, so the hottest
    /// keys do not bounce their cache line between cores.
    @inline(__always)
    func touchReferenceLocked(_ i: Int) {
        let a = UnsafeAtomic<UInt8>(at: refs + i)
        let r = a.load(ordering: .relaxed)
        if r != Shard.creditMask | Shard.fetched {
            let credit = min(Shard.creditMask, (r & Shard.creditMask) + 1)
            a.store(credit | Shard.fetched, ordering: .relaxed)
        }
    }

    /// Records a use that is not a fetch (a failed add). Lock held.
    @inline(__always)
    func bumpReferenceLocked(_ i: Int) {
        let a = UnsafeAtomic<UInt8>(at: refs + i)
        let r = a.load(ordering: .relaxed)
        if r & Shard.creditMask < Shard.creditMask { a.store(r + 1, ordering: .relaxed) }
    }

    @inline(__always)
    private func wasFetchedLocked(_ i: Int) -> Bool {
        UnsafeAtomic<UInt8>(at: refs + i).load(ordering: .relaxed) & Shard.fetched != 0
    }

    // MARK: - Mutation (write lock held for all of these)

    /// Puts `item` in slot `i`, which holds an item with the same key. Write lock held.
    func replaceLocked(at i: Int, with item: Item) {
        let old = slots[i].unsafelyUnwrapped
        if old.indexed { indexedItems -= 1 }
        itemBytes += item.charge - old.charge
        slots[i] = item
        UnsafeAtomic<UInt8>(at: refs + i).store(Shard.referenced, ordering: .relaxed)
        totalItems &+= 1
        if item.exptime != 0 { indexLocked(item, hash32: hashes[i]) }
    }

    /// Inserts `item` whose key is not in the table. Write lock held.
    func insertLocked(_ item: Item, hash: UInt64) {
        if (count + 1) * 4 > capacity * 3 { growLocked() }
        let h32 = UInt32(truncatingIfNeeded: hash)
        let mask = capacity - 1
        var i = Int(h32) & mask
        while slots[i] != nil { i = (i + 1) & mask }
        slots[i] = item
        hashes[i] = h32
        UnsafeAtomic<UInt8>(at: refs + i).store(Shard.referenced, ordering: .relaxed)
        count += 1
        itemBytes += item.charge
        totalItems &+= 1
        if item.exptime != 0 { indexLocked(item, hash32: h32) }
    }

    /// Removes the item in slot `i`, shifting later members of its probe run back so that no
    /// tombstone is left. Write lock held.
    @discardableResult
    func removeLocked(at i: Int) -> Item {
        // Ownership moves with the pointers: the removed item is taken out of its slot, and
        // each shifted item is moved (not copied) into the hole, so a shift costs no
        // retain/release pair. The hole is uninitialized until the end, and the loop only ever
        // reads slots ahead of it.
        let removed = (slots + i).move().unsafelyUnwrapped
        if removed.indexed { indexedItems -= 1 }
        itemBytes -= removed.charge
        count -= 1
        let mask = capacity - 1
        var hole = i
        var j = i
        while true {
            j = (j + 1) & mask
            if isEmptyLocked(j) { break }
            let home = Int(hashes[j]) & mask
            // Move j into the hole unless its home lies cyclically in (hole, j].
            if ((j - home) & mask) >= ((j - hole) & mask) {
                (slots + hole).moveInitialize(from: slots + j, count: 1)
                hashes[hole] = hashes[j]
                var r = UnsafeAtomic<UInt8>(at: refs + j).load(ordering: .relaxed)
                // A probe run that wraps past the end moves items from the start of the table
                // to its end: from behind the CLOCK hand to ahead of it. The hand already
                // passed (and cleared) them this lap; without a fresh bit they would be
                // judged twice in one lap and could be evicted while hot.
                if j < hole && r & Shard.creditMask == 0 { r |= Shard.referenced }
                UnsafeAtomic<UInt8>(at: refs + hole).store(r, ordering: .relaxed)
                hole = j
            }
        }
        (slots + hole).initialize(to: nil)
        hashes[hole] = 0
        UnsafeAtomic<UInt8>(at: refs + hole).store(0, ordering: .relaxed)
        return removed
    }

    /// True if slot `j` is empty, read without retaining its occupant (an `Optional` class
    /// reference is nil exactly when its bits are zero). Lock held.
    @inline(__always)
    private func isEmptyLocked(_ j: Int) -> Bool {
        UnsafeRawPointer(slots + j).load(as: UInt.self) == 0
    }

    /// Removes every item. Write lock held.
    func removeAllLocked() {
        for i in 0..<capacity where slots[i] != nil {
            slots[i] = nil
            hashes[i] = 0
            UnsafeAtomic<UInt8>(at: refs + i).store(0, ordering: .relaxed)
        }
        count = 0
        itemBytes = 0
        hand = 0
        expiry = []
        indexedItems = 0
        sweepCursor = 0
    }

    private func growLocked() {
        let oldCap = capacity
        let oldSlots = slots
        let oldHashes = hashes
        let oldRefs = refs
        let newCap = oldCap * 2
        slots = .allocate(capacity: newCap)
        slots.initialize(repeating: nil, count: newCap)
        hashes = .allocate(capacity: newCap)
        hashes.initialize(repeating: 0, count: newCap)
        refs = .allocate(capacity: newCap)
        refs.initialize(repeating: .init(0), count: newCap)
        capacity = newCap
        let mask = newCap - 1
        for i in 0..<oldCap {
            guard let item = oldSlots[i] else { continue }
            let h = oldHashes[i]
            var j = Int(h) & mask
            while slots[j] != nil { j = (j + 1) & mask }
            slots[j] = item
            hashes[j] = h
            // Rehashing scatters items ahead of and behind the restarted hand; a fresh
            // reference bit for everyone keeps an item the hand just cleared from being
            // judged again before it could be read.
            var r = UnsafeAtomic<UInt8>(at: oldRefs + i).load(ordering: .relaxed)
            if r & Shard.creditMask == 0 { r |= Shard.referenced }
            UnsafeAtomic<UInt8>(at: refs + j).store(r, ordering: .relaxed)
        }
        oldSlots.deinitialize(count: oldCap)
        oldSlots.deallocate()
        oldHashes.deallocate()
        oldRefs.deallocate()
        hand = 0
    }

    // MARK: - Expiry index (weak handles)
    //
    // Every item with a deadline has one handle here: the low 32 bits of its key hash and its
    // cas unique. A handle does not keep the item alive and is never updated when the item
    // goes: delete, overwrite, eviction and lazy expiry do not search this array. A handle is
    // resolved only when the sweeper reaches it, by probing the table from the hash's home
    // slot for an item with that hash and that cas; one that no longer resolves is stale and
    // is dropped then. `staleSlots` = handles - items that own one.

    struct ExpiryHandle {
        var hash32: UInt32
        var cas: UInt64
    }

    @exclusivity(unchecked) private(set) var expiry: ContiguousArray<ExpiryHandle> = []
    /// Items in the table whose `indexed` flag is set.
    @exclusivity(unchecked) private(set) var indexedItems = 0
    @exclusivity(unchecked) private var sweepCursor = 0

    /// Handles whose item is gone. Lock held.
    var staleSlots: Int { expiry.count - indexedItems }

    /// Gives `item` (in the table, with a deadline) a handle unless it has one. Write lock held.
    func indexLocked(_ item: Item, hash32: UInt32) {
        if item.indexed { return }
        item.indexed = true
        indexedItems += 1
        expiry.append(ExpiryHandle(hash32: hash32, cas: item.cas))
    }

    /// The slot of the item a handle names, or nil if it is gone. Lock held.
    private func resolveLocked(_ h: ExpiryHandle) -> Int? {
        let mask = capacity - 1
        var i = Int(h.hash32) & mask
        while let item = slots[i] {
            if hashes[i] == h.hash32 && item.cas == h.cas { return i }
            i = (i + 1) & mask
        }
        return nil
    }

    /// Visits up to `budget` handles from the cursor: drops stale ones, reclaims expired items,
    /// and forgets items whose deadline was removed by touch. Returns the number of handles
    /// visited (0 when the index is empty). Write lock held; the budget bounds the hold time.
    func sweepLocked(now: Int64, budget: Int, graveyard: inout [Item]) -> (visited: Int, reclaimed: Int) {
        var visited = 0
        var freed = 0
        while visited < budget && !expiry.isEmpty {
            if sweepCursor >= expiry.count { sweepCursor = 0 }
            let h = expiry[sweepCursor]
            visited += 1
            var drop = true
            if let i = resolveLocked(h) {
                let item = slots[i].unsafelyUnwrapped
                if item.isExpired(now: now) {
                    if !wasFetchedLocked(i) { expiredUnfetched &+= 1 }
                    // Keep the item alive until the lock is released: freeing a million items
                    // is the expensive part of a mass expiry and must not happen under it.
                    graveyard.append(item)
                    removeLocked(at: i)  // also drops the item's claim on this handle
                    reclaimed &+= 1
                    freed += 1
                } else if item.exptime == 0 {
                    item.indexed = false
                    indexedItems -= 1
                } else {
                    drop = false
                }
            }
            if drop {
                expiry.swapAt(sweepCursor, expiry.count - 1)
                expiry.removeLast()
                if expiry.count * 4 < expiry.capacity && expiry.capacity > 1024 {
                    expiry.reserveCapacity(expiry.count * 2)  // give memory back after mass expiry
                }
            } else {
                sweepCursor += 1
            }
        }
        return (visited, freed)
    }

    // MARK: - Eviction

    /// Evicts one item chosen by CLOCK with a small use counter (GCLOCK): the hand passes over
    /// slots taking one credit from each, and evicts the first occupied slot with none left.
    /// Items read often carry up to 3 credits, new items 1, so a burst of inserts cannot flush
    /// the hot set. Returns false when the shard is empty. Write lock held.
    func evictOneLocked(now: Int64) -> Bool {
        guard count > 0 else { return false }
        let mask = capacity - 1
        // Four full turns always find a victim: each takes a credit from every item.
        var steps = 0
        while steps <= 4 * capacity {
            let i = hand & mask
            hand = (i + 1) & mask
            steps += 1
            guard let item = slots[i] else { continue }
            if item.isExpired(now: now) {
                if !wasFetchedLocked(i) { expiredUnfetched &+= 1 }
                removeLocked(at: i)
                reclaimed &+= 1
                // Backward shift may have moved an unvisited item into slot i: revisit it.
                hand = i
                return true
            }
            let ref = UnsafeAtomic<UInt8>(at: refs + i)
            let r = ref.load(ordering: .relaxed)
            if r & Shard.creditMask != 0 {
                ref.store(r - 1, ordering: .relaxed)
                continue
            }
            if r & Shard.fetched == 0 { evictedUnfetched &+= 1 }
            removeLocked(at: i)
            evictions &+= 1
            hand = i
            return true
        }
        return false
    }
}

extension Item {
    @inline(__always)
    func keyEquals(_ key: UnsafeRawBufferPointer) -> Bool {
        guard keyCount == key.count else { return false }
        guard let kb = key.baseAddress else { return true }
        return memcmp(bytesStart, kb, key.count) == 0
    }
}
