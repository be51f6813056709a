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
    // `refs[i]` is the occupant's CLOCK reference bit.
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
    /// Everything this shard uses against its limit.
    var usedBytes: Int { itemBytes + indexBytes }

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

    /// Marks slot `i` as recently used. Lock held in either mode: the atomic store is the one
    /// write readers make.
    @inline(__always)
    func touchReferenceLocked(_ i: Int) {
        let a = UnsafeAtomic<UInt8>(at: refs + i)
        if a.load(ordering: .relaxed) == 0 { a.store(1, ordering: .relaxed) }
    }

    // MARK: - Mutation (write lock held for all of these)

    /// Puts `item` in slot `i`, which holds an item with the same key. Write lock held.
    func replaceLocked(at i: Int, with item: Item) {
        let old = slots[i].unsafelyUnwrapped
        itemBytes += item.charge - old.charge
        slots[i] = item
        UnsafeAtomic<UInt8>(at: refs + i).store(1, ordering: .relaxed)
        totalItems &+= 1
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
        UnsafeAtomic<UInt8>(at: refs + i).store(1, ordering: .relaxed)
        count += 1
        itemBytes += item.charge
        totalItems &+= 1
    }

    /// Removes the item in slot `i`, shifting later members of its probe run back so that no
    /// tombstone is left. Write lock held.
    @discardableResult
    func removeLocked(at i: Int) -> Item {
        let removed = slots[i].unsafelyUnwrapped
        itemBytes -= removed.charge
        count -= 1
        let mask = capacity - 1
        var hole = i
        var j = i
        while true {
            j = (j + 1) & mask
            if slots[j] == nil { break }
            let home = Int(hashes[j]) & mask
            // Move j into the hole unless its home lies cyclically in (hole, j].
            if ((j - home) & mask) >= ((j - hole) & mask) {
                slots[hole] = slots[j]
                hashes[hole] = hashes[j]
                let r = UnsafeAtomic<UInt8>(at: refs + j).load(ordering: .relaxed)
                UnsafeAtomic<UInt8>(at: refs + hole).store(r, ordering: .relaxed)
                hole = j
            }
        }
        slots[hole] = nil
        hashes[hole] = 0
        UnsafeAtomic<UInt8>(at: refs + hole).store(0, ordering: .relaxed)
        return removed
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
            let r = UnsafeAtomic<UInt8>(at: oldRefs + i).load(ordering: .relaxed)
            UnsafeAtomic<UInt8>(at: refs + j).store(r, ordering: .relaxed)
        }
        oldSlots.deinitialize(count: oldCap)
        oldSlots.deallocate()
        oldHashes.deallocate()
        oldRefs.deallocate()
        hand = 0
    }

    // MARK: - Eviction

    /// Evicts one item chosen by CLOCK (second chance): the hand passes over slots, clearing
    /// reference bits, and takes the first occupied slot whose bit is already clear. Returns
    /// false when the shard is empty. Write lock held.
    func evictOneLocked(now: Int64) -> Bool {
        guard count > 0 else { return false }
        let mask = capacity - 1
        // Two full turns always find a victim: the first clears every bit it passes.
        var steps = 0
        while steps <= 2 * capacity {
            let i = hand & mask
            hand = (i + 1) & mask
            steps += 1
            guard let item = slots[i] else { continue }
            if item.isExpired(now: now) {
                removeLocked(at: i)
                reclaimed &+= 1
                expiredUnfetched &+= 1
                // Backward shift may have moved an unvisited item into slot i: revisit it.
                hand = i
                return true
            }
            let ref = UnsafeAtomic<UInt8>(at: refs + i)
            if ref.load(ordering: .relaxed) != 0 {
                ref.store(0, ordering: .relaxed)
                continue
            }
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
