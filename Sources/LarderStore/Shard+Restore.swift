// Taking a shard's items over from the memory file, and the clean stop that makes the next
// take-over verifiable. docs/RESTART.md explains why what is restored is exactly what had
// completed: a record counts only below its segment's committed length, a delete or overwrite
// has set its dead bit, a reused segment was released (committed 0) before its first new byte,
// and of two live records of one key (an overwrite, touch or copy-forward cut short by a
// crash) the one with the larger cas wins.
#if canImport(Glibc)
import Glibc
#endif

/// What one shard's restore found.
struct ShardRestoreCounts {
    var items = 0
    var droppedLarge = 0
    var damagedSegments = 0
}

extension Shard {
    /// The size of the record at `p` if its header is well formed and it fits in `room` bytes;
    /// nil for anything a writer of this layout could not have produced (so a damaged byte
    /// ends the segment's scan instead of being served).
    static func parsedSize(_ p: UnsafeMutableRawPointer, room: Int, inlineLimit: Int) -> Int? {
        guard room >= 12 else { return nil }
        let control = p.load(as: UInt8.self)
        let format = p.load(fromByteOffset: 1, as: UInt8.self)
        let keyCount = Int(p.load(fromByteOffset: 2, as: UInt8.self))
        guard control & 0x80 == 0, format & 0xE0 == 0, keyCount >= 1, keyCount <= 250 else { return nil }
        let r = Record(p)
        if r.isExternal {
            guard r.lengthBytes == 4 else { return nil }
        } else {
            let v = r.valueCount
            guard v <= inlineLimit, r.lengthBytes == Record.lengthBytes(v) else { return nil }
        }
        // `size` reads only the first 7 bytes (format, key and value lengths): inside `room`.
        let size = r.size
        return size <= room ? size : nil
    }

    /// Rebuilds this shard from its part of the memory file: every committed, live, unexpired
    /// inline record becomes an item again; dead, expired and external-valued records are
    /// marked dead; the FIFOs are rebuilt in the order segments were opened. `verify` (after a
    /// clean stop) checks each segment's checksum and drops a segment that does not match.
    /// Runs before the store serves anything; lock held.
    func restoreLocked(now: Int64, verify: Bool) -> ShardRestoreCounts {
        guard let file else { return ShardRestoreCounts() }
        var counts = ShardRestoreCounts()
        let size = geometry.segmentSize
        var found: [(sequence: UInt64, segment: Int32)] = []
        // The cas high-water mark and the segments' open order come from the file unchecked
        // by any checksum: a value no run could have written (one that would overflow the
        // counter, or push cas values past 64 bits) is damage, and the scan decides instead.
        let counterLimit = (UInt64.max >> casShiftBits) - 4 * Shard.casReserveStep
        var maxCounter = file.casReserved <= counterLimit ? file.casReserved : 0
        for s in 0..<Int32(geometry.maxSegments) {
            let n = file.committed(s)
            if n == 0 { continue }
            if n > size || (file.kind(s) != 1 && file.kind(s) != 2) || file.sequence(s) > Shard.sequenceLimit
                || (verify && file.computeChecksum(s, data: segmentBase(s)) != file.storedChecksum(s)) {
                counts.damagedSegments += 1
                file.release(s)
                continue
            }
            found.append((file.sequence(s), s))
        }
        found.sort { $0.sequence < $1.sequence }
        // The index as large as it was (bounded by what the share could hold: a damaged
        // number must not allocate more).
        let saved = Int(clamping: file.indexCapacity)
        if saved > capacity && saved <= limit / 8 { rebuildIndexLocked(capacity: saved) }
        neverUsed = Int32(geometry.maxSegments)
        var inUse = [Bool](repeating: false, count: geometry.maxSegments)
        for (sequence, s) in found {
            openSequence = max(openSequence, sequence)
            let i = Int(s)
            var end = file.committed(s)
            inUse[i] = true
            mappedSegments += 1
            info[i].state = .active  // not yet in a FIFO; not an open segment either
            info[i].openedAt = now
            info[i].used = Int32(end)
            // Map the segment's pages in one call (MADV_POPULATE_READ, Linux 5.14) rather than
            // one fault at a time; older kernels refuse it and fault as usual.
            _ = madvise(segmentBase(s), (end + 4095) & ~4095, 22)
            var off = 0
            while off < end {
                let p = segmentBase(s) + off
                guard let rsize = Shard.parsedSize(p, room: end - off, inlineLimit: geometry.inlineLimit) else {
                    // Not a record this layout writes: keep what came before, drop the rest.
                    counts.damagedSegments += 1
                    end = off
                    info[i].used = Int32(end)
                    file.commit(s, end)
                    break
                }
                let r = Record(p)
                defer { off += rsize }
                maxCounter = min(max(maxCounter, r.cas >> casShiftBits), counterLimit)
                if r.isDead { continue }
                if r.isExternal || (r.exptime != 0 && r.exptime <= now) {
                    if r.isExternal { counts.droppedLarge += 1 }
                    r.markDead()
                    continue
                }
                restoreRecordLocked(r, size: rsize, segment: s, offset: off)
            }
            segmentBytesUsed += end
            if info[i].liveItems == 0 {
                recycleLocked(s)  // nothing live: free (or the reserve)
                continue
            }
            info[i].state = file.kind(s) == 2 ? .main : .small
            if info[i].state == .main { pushTail(&main, s) } else { pushTail(&small, s) }
        }
        unmappedList = (0..<Int32(geometry.maxSegments)).reversed().filter { !inUse[Int($0)] }
        // Grown by doubling during the scan (no saved size): back to the usual 3/4 load.
        let usual = max(Shard.initialIndexCapacity, count * 4 / 3 + 1)
        if capacity > usual * 3 / 2 { rebuildIndexLocked(capacity: usual) }
        casCounter = maxCounter
        casPersistedUpTo = 0  // the next cas moves the mark on
        // Eviction needs its reserve segment; if the file filled the share, the oldest
        // segment's items make room for it.
        if reserve < 0 {
            if let s = mapSegmentLocked() {
                reserve = s
                info[Int(s)].state = .reserve
            } else if let victim = small.head >= 0 ? small.head : (main.head >= 0 ? main.head : nil) {
                unlinkLocked(victim, fromSmall: info[Int(victim)].state == .small)
                emptyLocked(victim)
            }
        }
        _ = makeRoomLocked(bytes: 0, now: now)
        counts.items = count
        return counts
    }

    /// Links one restored record into the index; of two live records of a key, the larger cas
    /// wins (equal: the later, a copy of the same item). Lock held.
    private func restoreRecordLocked(_ r: Record, size: Int, segment s: Int32, offset: Int) {
        if (count + tombstones + staleEntries + 1) * 8 > capacity * 7 {
            // Grow without the memory check: the limit is enforced once the scan is done.
            rebuildIndexLocked(capacity: max(Shard.initialIndexCapacity, (count + 1) * 2))
        }
        let h = keyHash(r.key)
        let (found, free) = probeForWriteLocked(r.key, hash: h)
        let e = Shard.entry(tag: Shard.tag(h), generation: info[Int(s)].generation, segment: s, offset: offset)
        if found >= 0 {
            let old = record(of: slots[found])
            if old.cas > r.cas {
                r.markDead()
                return
            }
            let oldSegment = Shard.segment(of: slots[found])
            slots[found] = e
            noteRecordLocked(r, size: size, in: s)
            count += 1
            liveBytes += size
            killRecordLocked(old, in: oldSegment)
            return
        }
        noteRecordLocked(r, size: size, in: s)
        count += 1
        liveBytes += size
        occupyLocked(free, with: e)
    }

    /// A clean stop: records each segment's checksum and the shard's counts in the file.
    /// Lock held; nothing writes afterwards.
    func recordCleanStopLocked() {
        guard let file else { return }
        for s in 0..<Int32(geometry.maxSegments) where file.committed(s) > 0 {
            file.setChecksum(s, file.computeChecksum(s, data: segmentBase(s)))
        }
        file.casReserved = casCounter + 1
    }
}

extension Store {
    /// Restores every shard from `file`, several shards at a time (one thread per core, at
    /// most 8), and says what was found.
    static func restore(_ shards: [Shard], from file: MemoryFile, now: Int64) -> RestoreReport {
        var report = RestoreReport()
        report.outcome = file.outcome
        report.reason = file.reason
        report.notes = file.notes
        report.graceful = file.wasClean
        guard file.outcome == .restored else { return report }
        let start = monotonicSeconds()
        let verify = file.wasClean
        let flushDue = file.pendingFlush != 0 && now >= file.pendingFlush
        let results = UnsafeMutableBufferPointer<ShardRestoreCounts>.allocate(capacity: shards.count)
        results.initialize(repeating: ShardRestoreCounts())
        defer { results.deallocate() }
        let threads = max(1, min(8, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))), shards.count))
        // Each thread takes every `threads`-th shard: shards share nothing, and each result
        // slot is written by exactly one thread and read after all are joined.
        let slots = SendableBuffer(results)
        runInParallel(threads) { t in
            var i = t
            while i < shards.count {
                let s = shards[i]
                slots.buffer[i] = s.lock.withWriteLock {
                    var c = s.restoreLocked(now: now, verify: verify)
                    if flushDue { s.removeAllLocked(); c.items = 0 }
                    return c
                }
                i += threads
            }
        }
        if flushDue { file.pendingFlush = 0 }
        for c in results {
            report.restoredItems += c.items
            report.droppedLargeItems += c.droppedLarge
            report.damagedSegments += c.damagedSegments
        }
        if flushDue { report.notes.append("a delayed flush_all fell due while Larder was stopped: the items were flushed") }
        report.seconds = monotonicSeconds() - start
        return report
    }

    /// A clean stop (SIGUSR1, SIGTERM, `shutdown`): records checksums and counts, then marks the
    /// file clean, so the next start can verify every segment. Call once nothing writes to the
    /// store any more (a later write would make the file's checksums wrong: its segments would
    /// then be dropped at the next start, never served wrong).
    public func closeCleanly() {
        guard let file = memoryFileBacking else { return }
        for s in shardsForAdmin { s.lock.withWriteLock { s.recordCleanStopLocked() } }
        file.markClean()
    }
}

/// A buffer handed to worker threads that each write their own elements only.
struct SendableBuffer<T>: @unchecked Sendable {
    // @unchecked Sendable: every user writes disjoint elements and the owner reads them only
    // after joining the threads (pthread_join orders the writes before the reads).
    let buffer: UnsafeMutableBufferPointer<T>
    init(_ b: UnsafeMutableBufferPointer<T>) { buffer = b }
}

private final class ParallelBody {
    let body: @Sendable (Int) -> Void
    let index: Int
    init(_ body: @escaping @Sendable (Int) -> Void, _ index: Int) {
        self.body = body
        self.index = index
    }
}

/// Runs `body(0..<n)` on `n` threads (the first on the caller's) and waits for all.
func runInParallel(_ n: Int, _ body: @escaping @Sendable (Int) -> Void) {
    var tids: [pthread_t] = []
    for i in 1..<max(1, n) {
        var tid = pthread_t()
        let box = Unmanaged.passRetained(ParallelBody(body, i)).toOpaque()
        let rc = pthread_create(&tid, nil, { arg in
            // Takes back the +1 reference passed to pthread_create.
            let b = Unmanaged<ParallelBody>.fromOpaque(arg!).takeRetainedValue()
            b.body(b.index)
            return nil
        }, box)
        if rc == 0 {
            tids.append(tid)
        } else {
            Unmanaged<ParallelBody>.fromOpaque(box).release()
            body(i)  // no thread: do its share here
        }
    }
    body(0)
    for t in tids { pthread_join(t, nil) }
}

func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}
