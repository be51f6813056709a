// The shard's compact hash index: one 8-byte entry per item, linear probing over a table whose
// size is any number (not only powers of two: the home slot is a multiply-shift of the hash),
// kept between 3/4 and 7/8 full so it costs 9-11 bytes an item.
//
// An entry is a weak reference into a segment:
//
//   bits 63-48  tag: 16 bits of the key's hash (never 0), a filter before reading the key
//   bits 47-40  generation of the segment when the entry was made
//   bits 39-24  segment number
//   bits 23-0   offset of the record in the segment
//
// 0 is an empty slot and 1 a tombstone. An entry whose generation differs from its segment's
// is stale: the segment was emptied (evicted, expired, flushed) since. Emptying a segment
// therefore touches no entry; stale entries are skipped by readers, turned into tombstones by
// writers that meet them and by the sweeper, and dropped when the table is rebuilt.
// Everything here runs under the shard's lock (shared for `findLocked`, exclusive otherwise).

extension Shard {
    static let empty: UInt64 = 0
    static let tombstone: UInt64 = 1

    @inline(__always)
    static func tag(_ hash: UInt64) -> UInt64 {
        let t = (hash >> 32) & 0xFFFF
        return t == 0 ? 1 : t
    }

    @inline(__always)
    static func entry(tag: UInt64, generation: UInt8, segment: Int32, offset: Int) -> UInt64 {
        (tag << 48) | (UInt64(generation) << 40) | (UInt64(UInt16(truncatingIfNeeded: segment)) << 24) | UInt64(offset)
    }

    @inline(__always) static func segment(of e: UInt64) -> Int32 { Int32((e >> 24) & 0xFFFF) }
    @inline(__always) static func offset(of e: UInt64) -> Int { Int(e & 0xFF_FFFF) }
    @inline(__always) static func generation(of e: UInt64) -> UInt8 { UInt8(truncatingIfNeeded: e >> 40) }

    @inline(__always)
    func home(_ hash: UInt64, capacity cap: Int) -> Int {
        Int((UInt64(UInt32(truncatingIfNeeded: hash)) &* UInt64(cap)) >> 32)
    }

    /// True if `e` (an occupied entry) names a segment emptied since it was made. Lock held.
    @inline(__always)
    func isStale(_ e: UInt64) -> Bool {
        info[Int(Shard.segment(of: e))].generation != Shard.generation(of: e)
    }

    @inline(__always)
    func record(of e: UInt64) -> Record {
        record(Shard.segment(of: e), Shard.offset(of: e))
    }

    /// The slot and record of `key`, or nil. Lock held in either mode.
    @inline(__always)
    func findLocked(_ key: UnsafeRawBufferPointer, hash: UInt64) -> (slot: Int, record: Record)? {
        let tag = Shard.tag(hash)
        let cap = capacity
        var i = home(hash, capacity: cap)
        while true {
            let e = slots[i]
            if e == Shard.empty { return nil }
            if e >> 48 == tag && !isStale(e) {
                let r = record(of: e)
                if r.keyEquals(key) { return (i, r) }
            }
            i += 1
            if i == cap { i = 0 }
        }
    }

    /// For a write: the slot holding `key` (or -1) and the slot a new entry should take (the
    /// first tombstone or stale entry on the way, else the empty slot that ended the search).
    /// Stale entries met are turned into tombstones. Write lock held.
    func probeForWriteLocked(_ key: UnsafeRawBufferPointer, hash: UInt64) -> (found: Int, free: Int) {
        let tag = Shard.tag(hash)
        let cap = capacity
        var i = home(hash, capacity: cap)
        var free = -1
        while true {
            let e = slots[i]
            if e == Shard.empty { return (-1, free >= 0 ? free : i) }
            if e == Shard.tombstone {
                if free < 0 { free = i }
            } else if isStale(e) {
                slots[i] = Shard.tombstone
                staleEntries -= 1
                tombstones += 1
                if free < 0 { free = i }
            } else if e >> 48 == tag && record(of: e).keyEquals(key) {
                return (i, free)
            }
            i += 1
            if i == cap { i = 0 }
        }
    }

    /// The slot holding exactly entry `e` (found from the key's hash). Write lock held.
    func slotOfEntryLocked(_ e: UInt64, hash: UInt64) -> Int? {
        let cap = capacity
        var i = home(hash, capacity: cap)
        while true {
            let x = slots[i]
            if x == Shard.empty { return nil }
            if x == e { return i }
            i += 1
            if i == cap { i = 0 }
        }
    }

    /// Puts entry `e` in slot `i` (from `probeForWriteLocked`'s free slot). Write lock held.
    @inline(__always)
    func occupyLocked(_ i: Int, with e: UInt64) {
        if slots[i] == Shard.tombstone { tombstones -= 1 }
        slots[i] = e
    }

    /// Empties slot `i`: a tombstone, or simply empty when the next slot is empty (no probe
    /// can need to pass it then). Write lock held.
    @inline(__always)
    func vacateLocked(_ i: Int) {
        let next = i + 1 == capacity ? 0 : i + 1
        if slots[next] == Shard.empty {
            slots[i] = Shard.empty
        } else {
            slots[i] = Shard.tombstone
            tombstones += 1
        }
    }

    /// Makes sure one more entry fits below 7/8 load, rebuilding the table (dropping stale
    /// entries and tombstones) at a size that puts it at 3/4. Returns false if the table is
    /// full and there is no memory to grow it. Write lock held.
    func ensureIndexRoomLocked(now: Int64) -> Bool {
        let occupied = count + tombstones + staleEntries
        if (occupied + 1) * 8 <= capacity * 7 { return true }
        let target = max(Shard.initialIndexCapacity, (count + 1) * 4 / 3 + 1)
        if target > capacity {
            if !makeRoomLocked(bytes: (target - capacity) * 8, now: now) {
                return occupied + 1 < capacity
            }
        }
        rebuildIndexLocked(capacity: target)
        return true
    }

    /// Rehashes every live entry into a table of `newCapacity` slots. Stale entries and
    /// tombstones are dropped; a live entry's key is read from its record to find its new home
    /// slot. Write lock held.
    func rebuildIndexLocked(capacity newCapacity: Int) {
        let old = slots
        let oldCap = capacity
        let fresh = UnsafeMutablePointer<UInt64>.allocate(capacity: newCapacity)
        fresh.initialize(repeating: 0, count: newCapacity)
        for i in 0..<oldCap {
            let e = old[i]
            if e <= Shard.tombstone || isStale(e) { continue }
            let h = keyHash(record(of: e).key)
            var j = home(h, capacity: newCapacity)
            while fresh[j] != Shard.empty {
                j += 1
                if j == newCapacity { j = 0 }
            }
            fresh[j] = e
        }
        old.deallocate()
        slots = fresh
        capacity = newCapacity
        file?.indexCapacity = UInt64(newCapacity)
        tombstones = 0
        staleEntries = 0
        cleanCursor = 0
        for s in 0..<geometry.maxSegments { info[s].bumpsSinceClean = 0 }
    }

    /// Turns up to `budget` stale entries' slots (scanning from a cursor) into tombstones.
    /// Returns the number cleaned. Write lock held.
    func cleanStaleLocked(budget: Int) -> Int {
        guard staleEntries > 0 else { return 0 }
        var cleaned = 0
        var scanned = 0
        let cap = capacity
        var i = cleanCursor < cap ? cleanCursor : 0
        while scanned < cap && cleaned < budget && staleEntries > 0 {
            let e = slots[i]
            if e > Shard.tombstone && isStale(e) {
                slots[i] = Shard.tombstone
                tombstones += 1
                staleEntries -= 1
                cleaned += 1
            }
            scanned += 1
            i += 1
            if i == cap { i = 0 }
        }
        cleanCursor = i
        if cleaned > 0 && staleEntries == 0 {
            for s in 0..<geometry.maxSegments { info[s].bumpsSinceClean = 0 }
        }
        return cleaned
    }

    /// Cleans every stale entry (before a segment's 8-bit generation could wrap round to one an
    /// old entry still carries). Write lock held.
    func cleanAllStaleLocked() {
        for i in 0..<capacity {
            let e = slots[i]
            if e > Shard.tombstone && isStale(e) {
                slots[i] = Shard.tombstone
                tombstones += 1
            }
        }
        staleEntries = 0
        for s in 0..<geometry.maxSegments { info[s].bumpsSinceClean = 0 }
    }

    // MARK: Ghost filter

    /// Remembers a key evicted from the small FIFO without being read.
    @inline(__always)
    func ghostInsertLocked(_ hash: UInt64) {
        ghost[Int(truncatingIfNeeded: hash) & ghostMask] = UInt16(Shard.tag(hash))
    }

    /// True (and forgets it) if the key was recently evicted from the small FIFO unread.
    @inline(__always)
    func ghostTakeLocked(_ hash: UInt64) -> Bool {
        let i = Int(truncatingIfNeeded: hash) & ghostMask
        if ghost[i] == UInt16(Shard.tag(hash)) {
            ghost[i] = 0
            return true
        }
        return false
    }
}
