// The sharded store: hashes a key once (seeded per process), picks the shard from the hash's
// top bits, and runs each operation under that one shard's lock. It knows nothing of the
// protocol's bytes: it is handed keys and values as raw bytes and answers with outcomes the
// server maps to replies. Items live in segments (Shard.swift); a read hands the caller the
// item under the shard's read lock, and the caller copies what it needs before returning.
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
    /// `-I`: the largest item, counted as memcached counts it (see `itemTotalSize`). Append
    /// and prepend past it are refused.
    public var maxItemSize: Int
    /// The key hash's seed and secrets; nil (the default) uses the process's random ones.
    /// Tests set them so that a run replays exactly.
    public var hashSeeds: (seed: UInt64, secret0: UInt64, secret1: UInt64)?

    public init(memoryLimit: Int = 64 << 20, shardCount: Int = 16, evictionDisabled: Bool = false,
                maxItemSize: Int = 1 << 20, hashSeeds: (seed: UInt64, secret0: UInt64, secret1: UInt64)? = nil) {
        self.memoryLimit = memoryLimit
        self.shardCount = shardCount
        self.evictionDisabled = evictionDisabled
        self.maxItemSize = maxItemSize
        self.hashSeeds = hashSeeds
    }

    /// memcached's size of an item against `-I` (the same sum the parser uses for `set`).
    public static func itemTotalSize(keyCount: Int, flags: UInt32, valueCount: Int) -> Int {
        48 + 8 + keyCount + 1 + (flags == 0 ? 0 : 4) + valueCount + 2
    }
}

/// Where a found item's value bytes are.
public enum ValueBytes {
    /// In a segment: valid only inside the read callback; copy them out.
    case inline(UnsafeRawBufferPointer)
    /// In a heap buffer of its own: keep the reference as long as the first `count` bytes
    /// are needed; they never change.
    case external(LargeValue, count: Int)
}

/// An item found by a read, handed to the read callback while the shard lock is held.
public struct FoundItem {
    public let flags: UInt32
    public let cas: UInt64
    /// Absolute Unix seconds, 0 for never.
    public let exptime: Int64
    public let valueCount: Int
    public let value: ValueBytes

    @inline(__always)
    init(_ r: Record) {
        flags = r.flags
        cas = r.cas
        exptime = r.exptime
        if r.isExternal {
            let v = r.external.takeUnretainedValue()
            valueCount = v.count
            value = .external(v, count: v.count)
        } else {
            let b = r.inlineValue
            valueCount = b.count
            value = .inline(b)
        }
    }

    /// Calls `body` with the value bytes.
    @inline(__always)
    public func withValue<T>(_ body: (UnsafeRawBufferPointer) throws -> T) rethrows -> T {
        switch value {
        case .inline(let b): return try body(b)
        case .external(let v, let n): return try body(v.prefix(n))
        }
    }
}

/// Outcome of a read.
public enum ReadStatus: Sendable, Equatable {
    case hit, miss
    /// The key was there but had expired (memcached's get_expired); removed.
    case expired
}

/// A copy of an item, for tests and tools (the server reads through `read`).
public struct ItemSnapshot: Sendable {
    public let key: [UInt8]
    public let value: [UInt8]
    public let flags: UInt32
    public let cas: UInt64
    public let exptime: Int64
    /// Bytes the item is charged against the limit (its record, and its external value);
    /// 0 in snapshots taken by `get`.
    public var charge = 0

    public func withValue<T>(_ body: (UnsafeRawBufferPointer) throws -> T) rethrows -> T {
        try value.withUnsafeBytes(body)
    }
}

/// Result of `get`.
public enum Lookup {
    case hit(ItemSnapshot)
    case miss
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
    /// Bytes of live items: their records in segments and their external values.
    public var itemBytes = 0
    /// Bytes of the hash index and the ghost filter.
    public var indexBytes = 0
    /// Bytes of segments counted against the limit (in use, free or held in reserve).
    public var segmentBytes = 0
    /// Bytes written into segments in use, live or dead (live / this = the live fraction).
    public var segmentBytesWritten = 0
    /// Bytes of live records in segments.
    public var liveSegmentBytes = 0
    /// Bytes of external (large) values.
    public var externalBytes = 0
    public var evictions: UInt64 = 0
    public var evictedUnfetched: UInt64 = 0
    public var expiredUnfetched: UInt64 = 0
    /// Index entries naming an emptied segment, not yet cleaned.
    public var staleSlots = 0
    public var reclaimed: UInt64 = 0
    /// Items copied forward by eviction or compaction.
    public var copiedForward: UInt64 = 0
    public var segmentsEvicted: UInt64 = 0
    public var segmentsExpired: UInt64 = 0
    /// Everything counted against the limit.
    public var usedBytes = 0
    /// Slots in the hash indexes, used or not.
    public var indexSlots = 0
    /// Segments mapped and empty, ready for new records (memcached's free page pool).
    public var freeSegments = 0
}

public final class Store: Sendable {
    public let config: StoreConfig
    public let clock: any StoreClock
    private let shards: [Shard]
    private let shardBits: Int
    let geometry: SegmentGeometry
    /// Deadline of a delayed `flush_all` (Unix seconds), 0 when none is pending.
    private let pendingFlush = ManagedAtomic<Int64>(0)
    /// Each shard's write count as the sweeper last saw it (the sweeper's own memory).
    private let writesSeen: [ManagedAtomic<UInt64>]
    /// The memory file (`-e`), if any.
    let memoryFileBacking: MemoryFile?
    /// What the store found in its memory file at start (`.cleanStart` without one).
    public let restoreReport: RestoreReport

    /// With anonymous memory (no memory file): cannot fail.
    public convenience init(config: StoreConfig = StoreConfig(), clock: any StoreClock = SystemClock()) {
        // try!: without a memory file nothing in the initializer throws.
        try! self.init(config: config, clock: clock, memoryFile: nil)
    }

    /// A store whose segments live in the memory file at `memoryFile` (`-e`), taking over the
    /// items a previous process left there when the file matches these settings (see
    /// `restoreReport`). Throws only when the file cannot be opened, locked, sized or mapped.
    public init(config: StoreConfig, clock: any StoreClock = SystemClock(), memoryFile: String?) throws(MemoryFileError) {
        var n = 1
        while n < max(1, min(config.shardCount, 1024)) { n <<= 1 }
        var bits = 0
        while (1 << bits) < n { bits += 1 }
        var cfg = config
        cfg.shardCount = n
        self.config = cfg
        self.clock = clock
        shardBits = bits
        let perShard = config.memoryLimit / n
        let g = SegmentGeometry(shardLimit: perShard)
        geometry = g
        var seeds = config.hashSeeds ?? (KeyHash.seed, KeyHash.secret0, KeyHash.secret1)
        var file: MemoryFile? = nil
        if let memoryFile {
            let f = try MemoryFile(path: memoryFile, memoryLimit: config.memoryLimit, shardCount: n,
                                   maxItemSize: config.maxItemSize, geometry: g, seeds: seeds)
            seeds = f.seeds
            file = f
        }
        (seed, secret0, secret1) = seeds
        let shards = (0..<n).map { i in
            Shard(index: i, shardBits: bits, limit: perShard, geometry: g, evictionDisabled: config.evictionDisabled,
                  hashSeeds: seeds, file: file.map { (memory: $0.shardData(i), meta: $0.shardMeta(i), owner: $0) })
        }
        self.shards = shards
        memoryFileBacking = file
        writesSeen = (0..<n).map { _ in ManagedAtomic<UInt64>(UInt64.max) }
        restoreReport = file.map { Store.restore(shards, from: $0, now: clock.now()) } ?? RestoreReport()
        if let f = file, f.pendingFlush != 0 { pendingFlush.store(f.pendingFlush, ordering: .relaxed) }
    }

    public var shardCount: Int { shards.count }
    /// The shards, for the admin operations in Store+Meta.swift.
    var shardsForAdmin: [Shard] { shards }
    /// The share of `-m` each shard holds (a value must fit in it).
    public var shardLimit: Int { config.memoryLimit / shards.count }
    /// Bytes of one segment.
    public var segmentSize: Int { geometry.segmentSize }
    /// Values longer than this live in their own buffer rather than in a segment.
    public var inlineLimit: Int { geometry.inlineLimit }

    /// The key hash (KeyHash.swift) with the seeds copied into the store: reading KeyHash's lazily
    /// initialised globals costs a `swift_once` check each (~50 instructions on Linux), three
    /// per request on the hot path.
    private let seed: UInt64
    private let secret0: UInt64
    private let secret1: UInt64

    @inline(__always)
    func hash(_ key: UnsafeRawBufferPointer) -> UInt64 {
        KeyHash.hash(key, seed: seed, s0: secret0, s1: secret1)
    }

    @inline(__always)
    func shard(for hash: UInt64) -> Shard {
        shards[shardBits == 0 ? 0 : Int(hash >> UInt64(64 - shardBits))]
    }

    @inline(__always)
    func now() -> Int64 {
        let t = clock.now()
        let f = pendingFlush.load(ordering: .relaxed)
        if f != 0 && t >= f {
            if pendingFlush.compareExchange(expected: f, desired: 0, ordering: .relaxed).exchanged {
                flushNow()
                memoryFileBacking?.clearPendingFlush(ifStill: f)
            }
        }
        return t
    }

    @inline(__always)
    static func expired(_ r: Record, now t: Int64) -> Bool {
        let e = r.exptime
        return e != 0 && e <= t
    }

    // MARK: - Reads

    /// `get`/`gets`: takes only the shard's read lock and calls `body` with the item while
    /// holding it (copy what you need; inline bytes are not valid afterwards). An expired item
    /// is reported and removed under the write lock.
    @inline(__always)
    public func read(_ key: UnsafeRawBufferPointer, _ body: (borrowing FoundItem) -> Void) -> ReadStatus {
        let t = now()
        let h = hash(key)
        let s = shard(for: h)
        let status: ReadStatus = s.lock.withReadLock {
            guard let (_, r) = s.findLocked(key, hash: h) else { return .miss }
            if Store.expired(r, now: t) { return .expired }
            r.noteRead()
            body(FoundItem(r))
            return .hit
        }
        if status == .expired { removeIfExpired(key, hash: h, shard: s, now: t) }
        return status
    }

    func removeIfExpired(_ key: UnsafeRawBufferPointer, hash: UInt64, shard s: Shard, now t: Int64) {
        s.lock.withWriteLock {
            if let (slot, r) = s.findLocked(key, hash: hash), Store.expired(r, now: t) {
                s.removeLocked(slot: slot, record: r)
                s.reclaimed &+= 1
            }
        }
    }

    /// `gat`/`gats`: a read that also sets a new exptime (write lock).
    public func readAndTouch(_ key: UnsafeRawBufferPointer, exptime: Int32,
                             _ body: (borrowing FoundItem) -> Void) -> ReadStatus {
        let t = now()
        let h = hash(key)
        let s = shard(for: h)
        return s.lock.withWriteLock {
            let slot: Int, r: Record
            switch s.findLiveLocked(key, hash: h, now: t) {
            case .live(let i, let record): (slot, r) = (i, record)
            case .absent: return .miss
            case .expired: return .expired
            }
            guard let found = s.touchLocked(key, hash: h, slot: slot, record: r,
                                            deadline: absoluteExpiry(exptime, now: t), now: t) else {
                return .miss
            }
            found.noteRead()
            body(FoundItem(found))
            return .hit
        }
    }

    /// A copy of the item under `key` (for tests and tools).
    public func get(_ key: UnsafeRawBufferPointer) -> Lookup {
        var snapshot: ItemSnapshot?
        let status = read(key) { item in
            snapshot = ItemSnapshot(key: Array(key), value: item.withValue { Array($0) }, flags: item.flags,
                                    cas: item.cas, exptime: item.exptime)
        }
        switch status {
        case .hit: return .hit(snapshot!)
        case .miss: return .miss
        case .expired: return .expired
        }
    }

    /// Like `get`, touching as `gat` does.
    public func getAndTouch(_ key: UnsafeRawBufferPointer, exptime: Int32) -> Lookup {
        var snapshot: ItemSnapshot?
        let status = readAndTouch(key, exptime: exptime) { item in
            snapshot = ItemSnapshot(key: Array(key), value: item.withValue { Array($0) }, flags: item.flags,
                                    cas: item.cas, exptime: item.exptime)
        }
        switch status {
        case .hit: return .hit(snapshot!)
        case .miss: return .miss
        case .expired: return .expired
        }
    }

    // MARK: - Writes

    /// set/add/replace/append/prepend/cas. `mode` uses the store's own enum so the store does
    /// not depend on the protocol module.
    public func store(_ mode: StoreOperation, key: UnsafeRawBufferPointer, flags: UInt32, exptime: Int32,
                      value: UnsafeRawBufferPointer, casUnique: UInt64 = 0) -> StoreOutcome {
        let t = now()
        let h = hash(key)
        let s = shard(for: h)
        let deadline = absoluteExpiry(exptime, now: t)
        let empty = UnsafeRawBufferPointer(start: nil, count: 0)
        // A large value is copied into its own buffer before the lock is taken.
        var large: LargeValue? = nil
        if mode != .append && mode != .prepend && value.count > geometry.inlineLimit {
            large = LargeValue(capacity: value.count, filling: (value, empty))
        }
        return s.lock.withWriteLock {
            let found = s.findLiveLocked(key, hash: h, now: t).found
            switch mode {
            case .set:
                break
            case .add:
                if let (_, r) = found {
                    r.noteUse()  // memcached bumps the existing item on a failed add
                    return .notStored
                }
            case .replace:
                if found == nil { return .notStored }
            case .cas:
                guard let (_, r) = found else { return .notFound }
                if r.cas != casUnique { return .exists }
            case .append, .prepend:
                guard let (_, old) = found else { return .notStored }
                return s.concatenateLocked(key, hash: h, old: old, with: value, append: mode == .append,
                                           maxItemSize: config.maxItemSize, now: t)
            }
            if s.putLocked(key, hash: h, flags: flags, deadline: deadline, cas: 0, control: 0,
                           valueCount: value.count, parts: (value, empty), large: large, now: t) {
                return .stored
            }
            if mode == .set, let (slot, r) = s.findLocked(key, hash: h) {
                // As memcached: a set that cannot be stored unlinks the old value, so nobody
                // reads a value its writer tried to replace.
                s.removeLocked(slot: slot, record: r)
            }
            return .outOfMemory
        }
    }

    /// `delete`: removes a live item, or reports that the key was absent or already expired
    /// (an expired item is removed as well).
    public func delete(_ key: UnsafeRawBufferPointer) -> DeleteOutcome {
        let t = now()
        let h = hash(key)
        let s = shard(for: h)
        return s.lock.withWriteLock {
            switch s.findLiveLocked(key, hash: h, now: t) {
            case .live(let slot, let r):
                s.removeLocked(slot: slot, record: r)
                return .deleted
            case .absent: return .notFound
            case .expired: return .expired
            }
        }
    }

    /// `touch`. Returns true if the item exists.
    public func touch(_ key: UnsafeRawBufferPointer, exptime: Int32) -> Bool {
        let t = now()
        let h = hash(key)
        let s = shard(for: h)
        return s.lock.withWriteLock {
            guard case .live(let slot, let r) = s.findLiveLocked(key, hash: h, now: t) else { return false }
            return s.touchLocked(key, hash: h, slot: slot, record: r,
                                 deadline: absoluteExpiry(exptime, now: t), now: t) != nil
        }
    }

    /// `incr`/`decr` with memcached's rules: the value must parse as an unsigned 64-bit decimal,
    /// incr wraps at 2^64, decr stops at 0, and a result with fewer digits than the old value
    /// is written in its place padded with spaces (memcached's in-place update).
    public func arithmetic(_ key: UnsafeRawBufferPointer, incr: Bool, delta: UInt64) -> ArithmeticOutcome {
        let t = now()
        let h = hash(key)
        let s = shard(for: h)
        return s.lock.withWriteLock {
            guard case .live(_, let old) = s.findLiveLocked(key, hash: h, now: t) else { return .notFound }
            let oldItem = FoundItem(old)
            guard let current = oldItem.withValue({ parseStoredNumber($0) }) else { return .nonNumeric }
            let result = incr ? current &+ delta : (delta > current ? 0 : current - delta)
            // The new value is built in a buffer of its own: the old record's segment may be
            // reused while room for the new one is found.
            var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)
            let text: [UInt8] = withUnsafeMutableBytes(of: &digits) { sb in
                let n = writeDecimal(result, into: sb)
                var t = [UInt8](repeating: 0x20, count: max(n, oldItem.valueCount))
                for i in 0..<n { t[i] = sb[24 - n + i] }
                return t
            }
            let empty = UnsafeRawBufferPointer(start: nil, count: 0)
            let ok: Bool = text.withUnsafeBytes { tb in
                let large = tb.count > s.geometry.inlineLimit ? LargeValue(capacity: tb.count, filling: (tb, empty)) : nil
                return s.putLocked(key, hash: h, flags: oldItem.flags, deadline: oldItem.exptime, cas: 0, control: 0,
                                   valueCount: tb.count, parts: large == nil ? (tb, empty) : (empty, empty),
                                   large: large, now: t, newItem: tb.count != oldItem.valueCount)
            }
            return ok ? .value(result) : .outOfMemory
        }
    }

    /// `flush_all [delay]`: with no delay (or a non-positive one) everything goes now;
    /// otherwise at the deadline, computed like an exptime.
    public func flushAll(delay: Int32) {
        let t = clock.now()
        if delay <= 0 {
            pendingFlush.store(0, ordering: .relaxed)
            flushNow()
            memoryFileBacking?.pendingFlush = 0
        } else {
            let deadline = absoluteExpiry(delay, now: t)
            // In the file first: a barrier that a restart keeps.
            memoryFileBacking?.pendingFlush = deadline
            pendingFlush.store(deadline, ordering: .relaxed)
        }
    }

    private func flushNow() {
        for s in shards {
            s.lock.withWriteLock { s.removeAllLocked() }
        }
    }

    /// One bounded pass of the background sweeper over every shard: empties segments whose
    /// items have all expired (whole, in one step each) and cleans up to `budgetPerShard`
    /// stale index entries. A shard with nothing to do is not write-locked at all. Returns the
    /// entries cleaned plus segments emptied (`visited`, 0 when there was nothing to do) and
    /// the items reclaimed.
    @discardableResult
    public func sweep(budgetPerShard: Int = 4096) -> (visited: Int, reclaimed: Int) {
        let t = now()
        var visited = 0
        var reclaimed = 0
        for (i, s) in shards.enumerated() {
            // Stale entries are cleaned by the sweeper when they are dense (finding them is then
            // cheap) or when the shard has gone quiet; under a steady stream of writes, inserts
            // reuse them on their probe paths, and scanning the table for them would cost more
            // than the evictions that made them.
            let seen = writesSeen[i]
            let (due, writes): (Bool, UInt64) = s.lock.withReadLock {
                let clean = s.staleEntries > 0
                    && (s.staleEntries * 16 >= s.capacity || s.writes == seen.load(ordering: .relaxed))
                return (t >= s.earliestDeadline || clean, s.writes)
            }
            let quiet = writes == seen.load(ordering: .relaxed)
            seen.store(writes, ordering: .relaxed)
            guard due else { continue }
            let r: (Int, Int) = s.lock.withWriteLock {
                let before = s.reclaimed
                let segments = s.reclaimExpiredLocked(now: t, limit: 16)
                var cleaned = 0
                if quiet || s.staleEntries * 16 >= s.capacity {
                    cleaned = s.cleanStaleLocked(budget: budgetPerShard)
                }
                return (segments + cleaned, Int(s.reclaimed &- before))
            }
            visited += r.0
            reclaimed += r.1
            // Let a waiting worker run: the sweeper works in short bursts, never a time slice.
            if r.0 > 0 { sched_yield() }
        }
        return (visited, reclaimed)
    }

    /// Counters summed over shards, one shard lock at a time.
    public func counters() -> StoreCounters {
        var c = StoreCounters()
        for s in shards {
            s.lock.withReadLock {
                c.currItems += s.count
                c.totalItems &+= s.totalItems
                c.itemBytes += s.liveBytes + s.externalBytes
                c.indexBytes += s.indexBytes
                c.segmentBytes += s.mappedSegments * s.geometry.segmentSize
                c.segmentBytesWritten += s.segmentBytesUsed
                c.liveSegmentBytes += s.liveBytes
                c.externalBytes += s.externalBytes
                c.evictions &+= s.evictions
                c.evictedUnfetched &+= s.evictedUnfetched
                c.staleSlots += s.staleEntries
                c.expiredUnfetched &+= s.expiredUnfetched
                c.reclaimed &+= s.reclaimed
                c.copiedForward &+= s.copiedForward
                c.segmentsEvicted &+= s.segmentsEvicted
                c.segmentsExpired &+= s.segmentsExpired
                c.usedBytes += s.usedBytes
                c.indexSlots += s.capacity
                c.freeSegments += s.freeList.count
            }
        }
        return c
    }

    /// Recounts every shard's index and segments and compares with its running counts; returns
    /// the differences found (empty when consistent). For tests: O(everything).
    public func audit() -> [String] {
        var problems: [String] = []
        for (n, s) in shards.enumerated() {
            s.lock.withReadLock {
                var live = 0, stale = 0, tombs = 0
                for i in 0..<s.capacity {
                    let e = s.slots[i]
                    if e == Shard.tombstone { tombs += 1 } else if e != Shard.empty {
                        if s.isStale(e) { stale += 1 } else { live += 1 }
                    }
                }
                var liveRecords = 0, liveBytes = 0, written = 0
                // The memory file must agree: a segment in use is committed exactly as far as
                // it is written; any other holds nothing a restart could bring back.
                for seg in 0..<Int32(s.geometry.maxSegments) {
                    guard let f = s.file else { break }
                    let st = s.info[Int(seg)].state
                    let want = st == .small || st == .main || st == .active ? Int(s.info[Int(seg)].used) : 0
                    if f.committed(seg) != want {
                        problems.append("shard \(n) segment \(seg) (\(st)): committed \(f.committed(seg)) in the file, \(want) written")
                    }
                }
                for seg in 0..<Int(s.neverUsed) {
                    let st = s.info[seg].state
                    guard st == .small || st == .main || st == .active else { continue }
                    written += Int(s.info[seg].used)
                    var segLive = 0
                    s.forEachLiveRecordLocked(Int32(seg)) { r, _ in segLive += 1; liveBytes += r.size }
                    if segLive != Int(s.info[seg].liveItems) {
                        problems.append("shard \(n) segment \(seg): \(segLive) live records, counted \(s.info[seg].liveItems)")
                    }
                    liveRecords += segLive
                }
                if live != s.count { problems.append("shard \(n): \(live) live entries, count \(s.count)") }
                if liveRecords != s.count { problems.append("shard \(n): \(liveRecords) live records, count \(s.count)") }
                if stale != s.staleEntries { problems.append("shard \(n): \(stale) stale entries, counted \(s.staleEntries)") }
                if tombs != s.tombstones { problems.append("shard \(n): \(tombs) tombstones, counted \(s.tombstones)") }
                if liveBytes != s.liveBytes { problems.append("shard \(n): \(liveBytes) live bytes, counted \(s.liveBytes)") }
                if written != s.segmentBytesUsed { problems.append("shard \(n): \(written) bytes written, counted \(s.segmentBytesUsed)") }
            }
        }
        return problems
    }

    /// Walks every live item of every shard (one shard lock at a time); for invariant checks.
    public func forEachItem(_ body: (ItemSnapshot) -> Void) {
        for s in shards {
            s.lock.withReadLock {
                for i in 0..<s.capacity {
                    let e = s.slots[i]
                    guard e > Shard.tombstone, !s.isStale(e) else { continue }
                    let r = s.record(of: e)
                    let item = FoundItem(r)
                    var snapshot = ItemSnapshot(key: Array(r.key), value: item.withValue { Array($0) },
                                                flags: item.flags, cas: item.cas, exptime: item.exptime)
                    snapshot.charge = r.size + (r.isExternal ? r.external.takeUnretainedValue().charge : 0)
                    body(snapshot)
                }
            }
        }
    }
}

// MARK: - Shard operations used by the store (write lock held for all)

extension Shard {
    /// Writes a record for `key`, replacing the live one if any: makes index room, charges an
    /// external value, finds room in a segment (which may evict), then links the record. The
    /// value is `parts.0 + parts.1` or `large`; the parts must not point into a segment (room
    /// for the new record may be found by reusing one). `cas` 0 takes a fresh one. False when
    /// memory cannot be had.
    func putLocked(_ key: UnsafeRawBufferPointer, hash: UInt64, flags: UInt32, deadline: Int64, cas: UInt64,
                   control: UInt8, valueCount: Int, parts: (UnsafeRawBufferPointer, UnsafeRawBufferPointer),
                   large: LargeValue?, now: Int64, newItem: Bool = true) -> Bool {
        guard ensureIndexRoomLocked(now: now) else { return false }
        let size = Record.size(keyCount: key.count, valueCount: valueCount, flags: flags, exptime: deadline,
                               external: large != nil)
        if let large {
            guard large.charge + indexBytes <= limit, makeRoomLocked(bytes: large.charge, now: now) else { return false }
            externalBytes += large.charge  // charged before segments are sought, so they leave it room
        }
        let target = ghostTakeLocked(hash) ? WriteTarget.main : WriteTarget.forNew(deadline: deadline, now: now)
        guard let (seg, off) = allocateLocked(size: size, target: target, now: now) else {
            if let large { externalBytes -= large.charge }
            return false
        }
        let (found, free) = probeForWriteLocked(key, hash: hash)
        let r = Record.write(at: segmentBase(seg) + off, control: control, key: key, flags: flags, exptime: deadline,
                             cas: cas == 0 ? nextCasLocked() : cas, valueCount: valueCount, parts: parts, large: large)
        noteRecordLocked(r, size: size, in: seg)
        count += 1
        liveBytes += size
        // memcached's total_items counts items linked: every store, and an incr/decr only
        // when the value's length changes (otherwise it rewrites the value in place).
        if newItem { totalItems &+= 1 }
        writes &+= 1
        let e = Shard.entry(tag: Shard.tag(hash), generation: info[Int(seg)].generation, segment: seg, offset: off)
        if found >= 0 {
            let old = slots[found]
            slots[found] = e
            killRecordLocked(record(of: old), in: Shard.segment(of: old))
        } else {
            occupyLocked(free, with: e)
        }
        return true
    }

    /// What a writer finds under a key: a live record, nothing, or a record that had expired
    /// (removed here and counted in `reclaimed`, so callers never handle expired items).
    enum LiveLookup {
        case live(slot: Int, record: Record)
        case absent, expired

        /// The live record, if there is one.
        var found: (slot: Int, record: Record)? {
            if case .live(let slot, let record) = self { return (slot, record) }
            return nil
        }
    }

    /// The live record of `key`; an expired one is removed on the way. Write lock held.
    func findLiveLocked(_ key: UnsafeRawBufferPointer, hash: UInt64, now t: Int64) -> LiveLookup {
        guard let (slot, r) = findLocked(key, hash: hash) else { return .absent }
        let e = r.exptime
        if e != 0 && e <= t {
            removeLocked(slot: slot, record: r)
            reclaimed &+= 1
            return .expired
        }
        return .live(slot: slot, record: r)
    }

    /// Removes the live record in `slot`.
    func removeLocked(slot: Int, record r: Record) {
        writes &+= 1
        let seg = Shard.segment(of: slots[slot])
        vacateLocked(slot)
        killRecordLocked(r, in: seg)
    }

    /// Sets a new deadline on a live record: in place when the record has an exptime field,
    /// else by rewriting it (same cas) with one. Returns the record as it now is.
    func touchLocked(_ key: UnsafeRawBufferPointer, hash: UInt64, slot: Int, record r: Record,
                     deadline: Int64, now: Int64) -> Record? {
        if r.hasExptime || deadline == 0 {
            if r.hasExptime {
                r.setExptime(deadline)
                let seg = Int(Shard.segment(of: slots[slot]))
                let d = deadline == 0 ? Int64.max : deadline
                if d > info[seg].maxDeadline { info[seg].maxDeadline = d }
                if deadline != 0 && deadline < earliestDeadline { earliestDeadline = deadline }
            }
            return r
        }
        // Copy the value out first: finding room may reuse the record's segment.
        let item = FoundItem(r)
        let control = r.control.load(ordering: .relaxed) & ~RecordControl.dead
        let empty = UnsafeRawBufferPointer(start: nil, count: 0)
        let ok: Bool
        switch item.value {
        case .external(let v, _):
            // The new record takes its own reference and charge; the old record's are dropped
            // when it is replaced.
            ok = putLocked(key, hash: hash, flags: item.flags, deadline: deadline, cas: item.cas, control: control,
                           valueCount: item.valueCount, parts: (empty, empty), large: v, now: now, newItem: false)
        case .inline(let b):
            let copy = [UInt8](b)
            ok = copy.withUnsafeBytes { cb in
                putLocked(key, hash: hash, flags: item.flags, deadline: deadline, cas: item.cas, control: control,
                          valueCount: cb.count, parts: (cb, empty), large: nil, now: now, newItem: false)
            }
        }
        guard ok else { return nil }
        return findLocked(key, hash: hash)?.record
    }

    /// append/prepend: the combined value keeps the old flags and exptime, as memcached's
    /// does, and is refused (NOT_STORED) past `-I`. Appending to a large value with spare room
    /// writes in place (a byte at a time costs a byte, not a copy of the value); otherwise the
    /// value is rebuilt, with spare room when appending.
    func concatenateLocked(_ key: UnsafeRawBufferPointer, hash: UInt64, old: Record, with data: UnsafeRawBufferPointer,
                           append: Bool, maxItemSize: Int, now: Int64) -> StoreOutcome {
        let item = FoundItem(old)
        let (total, overflow) = item.valueCount.addingReportingOverflow(data.count)
        if overflow || StoreConfig.itemTotalSize(keyCount: key.count, flags: item.flags, valueCount: total) > maxItemSize {
            return .notStored
        }
        if append, case .external(let v, _) = item.value, v.appendInPlace(data) {
            old.setExternalLength(v.count)
            old.setCas(nextCasLocked())
            old.updateControlLocked(set: 0, clear: RecordControl.stale | RecordControl.tokenSent)
            totalItems &+= 1
            return .stored
        }
        let empty = UnsafeRawBufferPointer(start: nil, count: 0)
        // memcached's append makes a new item: it is neither stale nor has a token out.
        let control = old.control.load(ordering: .relaxed)
            & ~(RecordControl.dead | RecordControl.stale | RecordControl.tokenSent)
        let ok: Bool
        if total > geometry.inlineLimit {
            let capacity = append ? min(max(total, total * 2), max(total, maxItemSize)) : total
            let combined: LargeValue = item.withValue { ov in
                append ? LargeValue(capacity: capacity, filling: (ov, data))
                       : LargeValue(capacity: capacity, filling: (data, ov))
            }
            ok = putLocked(key, hash: hash, flags: item.flags, deadline: item.exptime, cas: 0, control: control,
                           valueCount: total, parts: (empty, empty), large: combined, now: now)
        } else {
            var buf = [UInt8](repeating: 0, count: total)
            buf.withUnsafeMutableBytes { b in
                item.withValue { ov in
                    let first = append ? ov : data
                    let second = append ? data : ov
                    if first.count > 0 { b.baseAddress!.copyMemory(from: first.baseAddress!, byteCount: first.count) }
                    if second.count > 0 {
                        (b.baseAddress! + first.count).copyMemory(from: second.baseAddress!, byteCount: second.count)
                    }
                }
            }
            ok = buf.withUnsafeBytes { bb in
                putLocked(key, hash: hash, flags: item.flags, deadline: item.exptime, cas: 0, control: control,
                          valueCount: total, parts: (bb, empty), large: nil, now: now)
            }
        }
        return ok ? .stored : .outOfMemory
    }

    /// Empties the shard (flush_all): every segment back to the free list, the index cleared.
    func removeAllLocked() {
        for t in 0..<WriteTarget.count { active[t] = -1 }
        small = SegmentQueue()
        main = SegmentQueue()
        freeList.removeAll(keepingCapacity: true)
        for s in 0..<Int32(neverUsed) {
            let i = Int(s)
            guard info[i].state != .unmapped else { continue }
            if info[i].externals > 0 {
                forEachLiveRecordLocked(s) { r, _ in if r.isExternal { releaseExternalLocked(r) } }
            }
            file?.release(s)
            info[i].generation &+= 1
            info[i].bumpsSinceClean = 0
            info[i].liveItems = 0
            info[i].liveBytes = 0
            info[i].externals = 0
            info[i].used = 0
            info[i].maxDeadline = 0
            info[i].prev = -1
            info[i].next = -1
            if s == reserve { continue }
            pushFreeLocked(s)
        }
        slots.update(repeating: 0, count: capacity)
        count = 0
        liveBytes = 0
        segmentBytesUsed = 0
        tombstones = 0
        staleEntries = 0
        earliestDeadline = Int64.max
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
