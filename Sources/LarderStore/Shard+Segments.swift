// Segment life cycle for a shard: handing out room for records, sealing full segments into
// the small or main FIFO, and getting segments back — from the free list, by mapping more of
// the shard's share, by reclaiming a segment whose items have all expired, by compacting a
// segment full of holes, or by evicting one.
//
// Eviction is S3-FIFO applied to segments. New items go to the small FIFO; a read sets a
// record's 2-bit frequency (a relaxed atomic store under the read lock). When a segment
// leaves the small FIFO, its records that were read are copied forward into the main FIFO and
// the rest are dropped and their keys remembered in a ghost filter (a new write of a ghost
// key goes straight to main). When a segment leaves the main FIFO, records read since they
// were last copied are copied forward again with one less frequency, the rest dropped. The
// small FIFO is kept to about a tenth of the segments. Dropping a record touches no index
// entry: the segment's generation is bumped, and its entries become stale.
//
// Every function here runs under the shard's write lock.
#if canImport(Glibc)
import Glibc
#endif

extension Shard {
    // MARK: Room for one record

    /// Reserves `size` bytes in the open segment for `target`, opening a new one if needed
    /// (which may evict). Returns nil when no segment can be had (`-M`, or nothing left to
    /// evict).
    func allocateLocked(size: Int, target: Int, now: Int64) -> (segment: Int32, offset: Int)? {
        precondition(size <= geometry.segmentSize)
        lastWriteTime = now
        while true {
            if let room = roomInOpenSegmentLocked(size: size, target: target) { return room }
            guard let s = acquireSegmentLocked(now: now) else { return nil }
            if active[target] >= 0 {
                // Eviction opened a segment for this target meanwhile: use that one.
                pushFreeLocked(s)
                continue
            }
            openLocked(s, target: target)
        }
    }

    /// Room for a record being copied forward by eviction or compaction: the open segment for
    /// `target`, or the reserve segment when that is full. One pass copies at most one
    /// segment's worth, so the reserve always suffices.
    func copySpaceLocked(size: Int, target: Int) -> (segment: Int32, offset: Int) {
        if let room = roomInOpenSegmentLocked(size: size, target: target) { return room }
        let s = reserve >= 0 ? reserve : popFreeLocked()
        precondition(s >= 0, "no reserve segment for copy-forward")
        if s == reserve { reserve = -1 }
        openLocked(s, target: target)
        info[Int(s)].used = Int32(size)
        segmentBytesUsed += size
        return (s, 0)
    }

    /// Reserves `size` bytes in the open segment for `target` if it has them; otherwise seals
    /// that segment (if any) and returns nil.
    private func roomInOpenSegmentLocked(size: Int, target: Int) -> (segment: Int32, offset: Int)? {
        let a = active[target]
        guard a >= 0 else { return nil }
        let used = Int(info[Int(a)].used)
        if used + size <= geometry.segmentSize {
            info[Int(a)].used = Int32(used + size)
            segmentBytesUsed += size
            return (a, used)
        }
        active[target] = -1
        sealLocked(a, target: target)
        return nil
    }

    private func openLocked(_ s: Int32, target: Int) {
        if let file {
            openSequence &+= 1
            file.open(s, kind: target == WriteTarget.main ? 2 : 1, sequence: openSequence)
        }
        info[Int(s)].openedAt = lastWriteTime
        info[Int(s)].state = .active
        info[Int(s)].used = 0
        info[Int(s)].maxDeadline = 0
        active[target] = s
    }

    /// Moves a full open segment into its FIFO (or frees it if nothing in it is live).
    func sealLocked(_ s: Int32, target: Int) {
        if info[Int(s)].liveItems == 0 {
            emptyLocked(s)
            return
        }
        info[Int(s)].state = target == WriteTarget.main ? .main : .small
        if target == WriteTarget.main { pushTail(&main, s) } else { pushTail(&small, s) }
    }

    // MARK: Getting a segment

    /// A segment to write: from the free list, by compacting holes, by mapping more of the
    /// share, by reclaiming an expired segment, or by evicting. Nil when none can be had.
    func acquireSegmentLocked(now: Int64) -> Int32? {
        if reserve < 0 {
            // The reserve comes first, so eviction can always copy forward.
            if let s = mapSegmentLocked() { reserve = s; info[Int(s)].state = .reserve }
        }
        while true {
            // Holes first: while under 4/5 of the bytes in segments are live, compact the
            // emptiest sealed segment (each pass frees what was dead in it).
            if let victim = compactionCandidateLocked() {
                passLocked(victim, compact: true, now: now)
                continue
            }
            let f = popFreeLocked()
            if f >= 0 { return f }
            if let s = mapSegmentLocked() { return s }
            if reclaimExpiredLocked(now: now, limit: 1) > 0 { continue }
            if evictionDisabled { return nil }
            if !evictOneLocked(now: now) { return nil }
        }
    }

    /// A never-used or given-back segment, if the limit allows one more.
    func mapSegmentLocked() -> Int32? {
        guard usedBytes + geometry.segmentSize <= limit else { return nil }
        let s: Int32
        if let u = unmappedList.popLast() {
            s = u
        } else if Int(neverUsed) < geometry.maxSegments {
            s = neverUsed
            neverUsed += 1
        } else {
            return nil
        }
        mappedSegments += 1
        info[Int(s)].state = .free
        return s
    }

    /// Frees memory until `bytes` more fit under the limit: gives free segments back to the
    /// kernel, and evicts if need be. False if that is not possible.
    func makeRoomLocked(bytes: Int, now: Int64) -> Bool {
        while usedBytes + bytes > limit {
            let f = popFreeLocked()
            if f >= 0 {
                unmapLocked(f)
                continue
            }
            if reclaimExpiredLocked(now: now, limit: 1) > 0 { continue }
            if evictionDisabled || !evictOneLocked(now: now) { return false }
        }
        return true
    }

    private func unmapLocked(_ s: Int32) {
        // A shared file mapping keeps its pages after MADV_DONTNEED; MADV_REMOVE frees them.
        madvise(segmentBase(s), geometry.segmentSize, file == nil ? MADV_DONTNEED : MADV_REMOVE)
        info[Int(s)].state = .unmapped
        mappedSegments -= 1
        unmappedList.append(s)
    }

    func pushFreeLocked(_ s: Int32) {
        info[Int(s)].state = .free
        freeList.append(s)
    }

    private func popFreeLocked() -> Int32 {
        freeList.popLast() ?? -1
    }

    // MARK: Emptying a segment

    /// Bumps a segment's generation: every entry made before now names it stale.
    private func bumpGenerationLocked(_ s: Int32) {
        if info[Int(s)].bumpsSinceClean == 255 { cleanAllStaleLocked() }
        info[Int(s)].generation &+= 1
        info[Int(s)].bumpsSinceClean += 1
    }

    /// Drops every live record of `s` at once (expired segment, or all dead) and puts it on the
    /// free list or in reserve. No index entry is touched: they become stale.
    func emptyLocked(_ s: Int32) {
        let i = Int(s)
        if info[i].externals > 0 {
            forEachLiveRecordLocked(s) { r, _ in
                if r.isExternal { releaseExternalLocked(r) }
            }
        }
        bumpGenerationLocked(s)
        staleEntries += Int(info[i].liveItems)
        count -= Int(info[i].liveItems)
        liveBytes -= Int(info[i].liveBytes)
        recycleLocked(s)
    }

    /// An emptied segment (its records already accounted for) goes back: zeroed, then into
    /// reserve if that is empty, else onto the free list.
    func recycleLocked(_ s: Int32) {
        let i = Int(s)
        file?.release(s)
        segmentBytesUsed -= Int(info[i].used)
        info[i].liveItems = 0
        info[i].liveBytes = 0
        info[i].externals = 0
        info[i].used = 0
        info[i].maxDeadline = 0
        if reserve < 0 {
            reserve = s
            info[i].state = .reserve
        } else {
            pushFreeLocked(s)
        }
    }

    func releaseExternalLocked(_ r: Record) {
        let v = r.external
        externalBytes -= v.takeUnretainedValue().charge
        v.release()
    }

    /// Accounts for a record just written (or copied) into segment `s`.
    @inline(__always)
    func noteRecordLocked(_ r: Record, size: Int, in s: Int32) {
        let i = Int(s)
        info[i].liveItems += 1
        info[i].liveBytes += Int32(size)
        if r.isExternal { info[i].externals += 1 }
        // The record is complete: a later process may read it (MemoryFile.swift).
        file?.commit(s, Int(info[i].used))
        let e = r.exptime
        let d = e == 0 ? Int64.max : e
        if d > info[i].maxDeadline { info[i].maxDeadline = d }
        // An early guess is harmless (the sweeper rescans and corrects it); a late one would
        // leave an expired segment unreclaimed.
        if e != 0 && e < earliestDeadline { earliestDeadline = e }
    }

    /// A live record stops being live (deleted, replaced, expired, dropped by eviction): marked
    /// dead, its bytes become a hole, its external value is released. A sealed segment left
    /// with nothing live is emptied at once. The caller deals with the index entry.
    func killRecordLocked(_ r: Record, in s: Int32) {
        let size = r.size
        r.markDead()
        if r.isExternal {
            releaseExternalLocked(r)
            info[Int(s)].externals -= 1
        }
        info[Int(s)].liveItems -= 1
        info[Int(s)].liveBytes -= Int32(size)
        liveBytes -= size
        count -= 1
        let state = info[Int(s)].state
        if info[Int(s)].liveItems == 0 && (state == .small || state == .main) {
            unlinkLocked(s, fromSmall: state == .small)
            emptyLocked(s)
        }
    }

    // MARK: Expiry by segment

    /// Empties up to `limit` segments whose every item has expired (their `maxDeadline` has
    /// passed), in one step each. Returns how many.
    func reclaimExpiredLocked(now: Int64, limit: Int) -> Int {
        guard now >= earliestDeadline else { return 0 }
        var done = 0
        var earliest = Int64.max
        for s in 0..<Int32(neverUsed) {
            let i = Int(s)
            let st = info[i].state
            guard st == .small || st == .main || st == .active else { continue }
            let d = info[i].maxDeadline
            if d != 0 && d <= now && done < limit {
                if st == .active {
                    for t in 0..<WriteTarget.count where active[t] == s { active[t] = -1 }
                } else {
                    unlinkLocked(s, fromSmall: st == .small)
                }
                reclaimed &+= UInt64(info[i].liveItems)
                segmentsExpired &+= 1
                emptyLocked(s)
                done += 1
            } else if d != 0 && d < earliest {
                earliest = d
            }
        }
        earliestDeadline = earliest
        return done
    }

    // MARK: Eviction

    /// The number of segments the small FIFO should hold: a tenth, as S3-FIFO sizes it.
    private var smallTarget: Int { max(1, (small.count + main.count) / 10) }

    /// Evicts one segment by the S3-FIFO rules. False when there is nothing to evict.
    func evictOneLocked(now: Int64) -> Bool {
        if small.count + main.count == 0 {
            // Only open segments hold items (e.g. a few large values): seal them so that they
            // can be evicted.
            for t in 0..<WriteTarget.count where active[t] >= 0 {
                let a = active[t]
                active[t] = -1
                sealLocked(a, target: t)
            }
        }
        let fromSmall = small.count > smallTarget || main.count == 0
        var victim = fromSmall ? small.head : main.head
        if victim < 0 { victim = fromSmall ? main.head : small.head }
        guard victim >= 0 else { return false }
        passLocked(victim, compact: false, now: now)
        segmentsEvicted &+= 1
        return true
    }

    /// A segment worth compacting: while less than 4/5 of the bytes written into segments are
    /// live, the sealed segment with the smallest live fraction, if that is under 4/5. (Out
    /// of FIFO order: the holes are wherever overwrites and deletes left them.) Compacting
    /// starts a little above the 3/4 the store promises so that it holds between passes.
    private func compactionCandidateLocked() -> Int32? {
        guard small.count + main.count >= 2, liveBytes * 5 < segmentBytesUsed * 4 else { return nil }
        var best: Int32 = -1
        var bestFraction = 0.8
        for s in 0..<Int(neverUsed) {
            let st = info[s].state
            guard st == .small || st == .main, info[s].used > 0 else { continue }
            let f = Double(info[s].liveBytes) / Double(info[s].used)
            if f < bestFraction { best = Int32(s); bestFraction = f }
        }
        return best >= 0 ? best : nil
    }

    /// Takes segment `v` out of its FIFO and empties it. Evicting (`compact` false): records
    /// read since they were written or last copied are copied forward into main (from main,
    /// with one less frequency), the others dropped (and, from small, remembered as ghosts).
    /// Compacting: every live record is copied forward into the same FIFO, frequency kept.
    /// Expired records are dropped either way. Copying uses the open segment for the target,
    /// then the reserve; `v` itself becomes the reserve if that was used.
    func passLocked(_ v: Int32, compact: Bool, now: Int64) {
        let vi = Int(v)
        let fromSmall = info[vi].state == .small
        unlinkLocked(v, fromSmall: fromSmall)
        let oldGeneration = info[vi].generation
        // Bump now: entries of records not copied forward turn stale; copied ones are
        // repointed below from the old generation's entry.
        bumpGenerationLocked(v)
        let target = compact && fromSmall ? WriteTarget.smallCopy : WriteTarget.main
        let end = Int(info[vi].used)
        var off = 0
        while off < end {
            let r = record(v, off)
            let size = r.size
            defer { off += size }
            if r.isDead { continue }
            let f = r.frequency
            let expired = r.exptime != 0 && r.exptime <= now
            if !expired && (compact || f > 0) {
                let h = keyHash(r.key)
                let tag = Shard.tag(h)
                let old = Shard.entry(tag: tag, generation: oldGeneration, segment: v, offset: off)
                guard let slot = slotOfEntryLocked(old, hash: h) else {
                    preconditionFailure("live record without an index entry")
                }
                let (s2, o2) = copySpaceLocked(size: size, target: target)
                let dst = segmentBase(s2) + o2
                dst.copyMemory(from: r.base, byteCount: size)
                let moved = Record(dst)
                if !compact { moved.setFrequency(fromSmall ? 0 : f - 1) }
                noteRecordLocked(moved, size: size, in: s2)
                slots[slot] = Shard.entry(tag: tag, generation: info[Int(s2)].generation, segment: s2, offset: o2)
                copiedForward &+= 1
                continue
            }
            // Dropped: the entry goes stale with the generation bump.
            if expired {
                reclaimed &+= 1
                if !r.wasFetched { expiredUnfetched &+= 1 }
            } else {
                evictions &+= 1
                if !r.wasFetched { evictedUnfetched &+= 1 }
                evictionObserver?(r.key, r.wasFetched, r.exptime)
                if fromSmall { ghostInsertLocked(keyHash(r.key)) }
            }
            if r.isExternal { releaseExternalLocked(r) }
            liveBytes -= size
            count -= 1
            staleEntries += 1
        }
        recycleLocked(v)
    }

    // MARK: FIFO links

    func pushTail(_ q: inout SegmentQueue, _ s: Int32) {
        info[Int(s)].next = -1
        info[Int(s)].prev = q.tail
        if q.tail >= 0 { info[Int(q.tail)].next = s } else { q.head = s }
        q.tail = s
        q.count += 1
        let d = info[Int(s)].maxDeadline
        if d != 0 && d < earliestDeadline { earliestDeadline = d }
    }

    func unlinkLocked(_ s: Int32, fromSmall: Bool) {
        if fromSmall { unlink(&small, s) } else { unlink(&main, s) }
    }

    private func unlink(_ q: inout SegmentQueue, _ s: Int32) {
        let p = info[Int(s)].prev
        let n = info[Int(s)].next
        if p >= 0 { info[Int(p)].next = n } else { q.head = n }
        if n >= 0 { info[Int(n)].prev = p } else { q.tail = p }
        info[Int(s)].prev = -1
        info[Int(s)].next = -1
        q.count -= 1
    }
}
