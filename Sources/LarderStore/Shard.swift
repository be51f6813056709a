// One shard of the store: its items live as records back to back in fixed-size segments
// carved from one anonymous mapping, found through a compact hash index whose entries are
// weak references (segment, offset, segment generation). The shard owns its segments, its
// index, its eviction queues and its counters. Eviction and expiry work on whole segments;
// see Shard+Eviction.swift. The index is in Shard+Index.swift. docs/STORE.md explains it all.
//
// LOCK RULES (written down here once; docs/STORE.md explains them):
// - `lock` guards every stored `var` of the shard, the segment table `info`, the index slots
//   and the bytes of every segment.
// - Readers (get, gets, stats reads) hold `lock` shared. They read the index, the segment
//   table and records, and may update a record's control byte (frequency, fetched) with a
//   relaxed atomic store — the only write a reader makes.
// - Writers (every mutation, eviction, expiry, the sweeper) hold `lock` exclusively.
// - Methods named `...Locked` assume the caller holds the lock in the right mode.
// - No code path holds two shards' locks at once.
// - Bytes leave the lock only as copies (values up to the inline limit are copied into the
//   reply under the read lock) or as a strong reference to an external `LargeValue`; nothing
//   outside the lock ever points into a segment, so a segment can be reused the moment it is
//   evicted.
import Atomics
#if canImport(Glibc)
import Glibc
#endif

/// Sizes shared by every shard of a store.
struct SegmentGeometry {
    /// Bytes of one segment (a power of two between 4 KB and 16 MB).
    let segmentSize: Int
    /// Segments the shard's share of the limit could hold.
    let maxSegments: Int
    /// Values longer than this are kept in a `LargeValue` instead of a segment.
    let inlineLimit: Int

    init(shardLimit: Int) {
        // Aim at 64 segments a shard: eviction works a segment at a time, so a segment should
        // be a small slice of the shard; and not above 1 MB, not below 4 KB.
        var size = 4096
        while size < (1 << 20) && size * 2 * 64 <= shardLimit { size *= 2 }
        // The index names a segment in 16 bits and an offset in 24.
        while shardLimit / size > 65_535 && size < (1 << 24) { size *= 2 }
        segmentSize = size
        maxSegments = max(1, min(65_535, shardLimit / size))
        inlineLimit = min(8192, size / 4)
    }
}

/// Per-segment bookkeeping, kept in an ordinary array beside the mapping (not in it).
struct SegmentInfo {
    /// Bumped every time the segment is emptied; index entries carry the generation they
    /// were made in, so entries into an emptied segment are recognised as stale.
    var generation: UInt8 = 0
    /// Generations since the index was last cleaned of every stale entry (an entry's 8-bit
    /// generation must not wrap round to match again).
    var bumpsSinceClean: UInt8 = 0
    var state: SegmentState = .unmapped
    /// Bytes written so far (the next record goes here).
    var used: Int32 = 0
    var liveItems: Int32 = 0
    var liveBytes: Int32 = 0
    /// Live records whose value is an external `LargeValue`.
    var externals: Int32 = 0
    /// Queue links (segment numbers, -1 for none).
    var prev: Int32 = -1
    var next: Int32 = -1
    /// Latest exptime among the records written here; `Int64.max` if one never expires; 0
    /// while empty. The segment expires whole once this has passed.
    var maxDeadline: Int64 = 0
    /// When the segment was last opened for writing (the write that needed it, or the
    /// eviction pass copying into it). Meta's `l` / `la` approximate an item's last access by
    /// it: Larder keeps no per-item access time (see docs/PROTOCOL.md).
    var openedAt: Int64 = 0
}

enum SegmentState: UInt8 {
    /// Never used, or given back to the kernel: not counted against the limit.
    case unmapped
    /// Empty and counted against the limit, ready to be written.
    case free
    /// Held back so that eviction always has somewhere to copy items forward to.
    case reserve
    /// Being written (one per write target).
    case active
    /// Sealed, in the small (probationary) FIFO.
    case small
    /// Sealed, in the main FIFO.
    case main
}

/// A FIFO of segments linked through `SegmentInfo.prev/next`.
struct SegmentQueue {
    var head: Int32 = -1
    var tail: Int32 = -1
    var count = 0
}

final class Shard: @unchecked Sendable {
    // @unchecked Sendable: all mutable state, the mapping and the raw arrays are guarded by
    // `lock` as the rules at the top of this file say; the pointers are owned by this object
    // and freed in deinit.

    let lock = RWLock()
    let geometry: SegmentGeometry
    /// Bytes this shard may use (its share of `-m`): segments, index, ghost filter and
    /// external values together. Lowered or raised at run time by `cache_memlimit` (under
    /// the write lock, like every other field).
    @exclusivity(unchecked) var limit: Int
    let evictionDisabled: Bool
    /// The store's key-hash seed and secrets (eviction and index rebuilds rehash keys).
    let hashSeeds: (seed: UInt64, secret0: UInt64, secret1: UInt64)

    // MARK: Segments
    /// The mapping: `maxSegments` segments, touched (and so resident) only once written. With
    /// a memory file (`-e`), this shard's part of the file's shared mapping.
    let memory: UnsafeMutableRawPointer
    /// With a memory file: this shard's segment metadata in the file (committed lengths, see
    /// MemoryFile.swift), and the file itself, kept alive while the shard points into it.
    let file: FileSegments?
    let fileOwner: AnyObject?
    /// Segments opened so far (their order in the file, to rebuild the FIFOs on restore).
    @exclusivity(unchecked) var openSequence: UInt64 = 0
    /// Open orders above this in a memory file are damage (a run would need 2^62 segment
    /// openings to reach it); restore drops such a segment rather than let the order wrap.
    static let sequenceLimit: UInt64 = 1 << 62
    let info: UnsafeMutablePointer<SegmentInfo>
    @exclusivity(unchecked) var mappedSegments = 0
    @exclusivity(unchecked) var neverUsed: Int32 = 0
    @exclusivity(unchecked) var unmappedList: [Int32] = []
    @exclusivity(unchecked) var freeList: [Int32] = []
    @exclusivity(unchecked) var reserve: Int32 = -1
    /// Segment being written for each target (see `WriteTarget`), -1 for none.
    let active: UnsafeMutablePointer<Int32>
    @exclusivity(unchecked) var small = SegmentQueue()
    @exclusivity(unchecked) var main = SegmentQueue()
    /// Earliest `maxDeadline` of any segment in use (`Int64.max` if none), for the sweeper.
    @exclusivity(unchecked) var earliestDeadline = Int64.max

    // MARK: Accounting
    /// Live items (records with an index entry).
    @exclusivity(unchecked) var count = 0
    /// Bytes of live records in segments.
    @exclusivity(unchecked) var liveBytes = 0
    /// Bytes written into segments in use (live, dead and holes alike).
    @exclusivity(unchecked) var segmentBytesUsed = 0
    /// Charges of live external values.
    @exclusivity(unchecked) var externalBytes = 0

    // MARK: Index (Shard+Index.swift)
    @exclusivity(unchecked) var slots: UnsafeMutablePointer<UInt64>
    @exclusivity(unchecked) var capacity: Int
    @exclusivity(unchecked) var tombstones = 0
    /// Entries naming an emptied segment, not yet cleaned.
    @exclusivity(unchecked) var staleEntries = 0
    @exclusivity(unchecked) var cleanCursor = 0
    /// Writes so far: a shard with none since the sweeper's last pass is idle, and its stale
    /// entries are cleaned whatever their density.
    @exclusivity(unchecked) var writes: UInt64 = 0

    // MARK: Ghost filter (S3-FIFO's ghost queue, as fingerprints)
    let ghost: UnsafeMutablePointer<UInt16>
    let ghostMask: Int

    // MARK: cas
    /// cas uniques are `(counter << shardBits) | shardIndex`: unique across shards without a
    /// shared counter.
    @exclusivity(unchecked) var casCounter: UInt64 = 0
    /// With a memory file, the counter value up to which the file's high-water mark covers
    /// (renewed in steps of `casReserveStep`); without one, never reached.
    @exclusivity(unchecked) var casPersistedUpTo: UInt64 = .max
    static let casReserveStep: UInt64 = 1 << 16
    private let casShift: UInt64
    private let casTag: UInt64

    // MARK: Counters (guarded by the lock like everything else)
    @exclusivity(unchecked) var totalItems: UInt64 = 0
    @exclusivity(unchecked) var evictions: UInt64 = 0
    @exclusivity(unchecked) var evictedUnfetched: UInt64 = 0
    @exclusivity(unchecked) var expiredUnfetched: UInt64 = 0
    @exclusivity(unchecked) var reclaimed: UInt64 = 0
    @exclusivity(unchecked) var copiedForward: UInt64 = 0
    @exclusivity(unchecked) var segmentsEvicted: UInt64 = 0
    @exclusivity(unchecked) var segmentsExpired: UInt64 = 0

    /// Told about every item evicted (not expired) while the write lock is held; set by
    /// `Store.setEvictionObserver` (the server's `watch evictions`).
    @exclusivity(unchecked) var evictionObserver: EvictionObserver?
    /// The clock as the last allocation saw it (stamps segments as they are opened).
    @exclusivity(unchecked) var lastWriteTime: Int64 = 0

    /// Seconds since the segment holding the item in `slot` was opened: an upper bound on the
    /// time since the item was written (or last copied forward, which only a read causes).
    /// Lock held.
    func accessAgeLocked(slot: Int, now: Int64) -> Int64 {
        let opened = info[Int(Shard.segment(of: slots[slot]))].openedAt
        return opened == 0 ? 0 : max(0, now - opened)
    }

    static let initialIndexCapacity = 64

    init(index: Int, shardBits: Int, limit: Int, geometry: SegmentGeometry, evictionDisabled: Bool,
         hashSeeds: (seed: UInt64, secret0: UInt64, secret1: UInt64),
         file: (memory: UnsafeMutableRawPointer, meta: FileSegments, owner: AnyObject)? = nil) {
        self.limit = limit
        self.hashSeeds = hashSeeds
        self.geometry = geometry
        self.evictionDisabled = evictionDisabled
        casShift = UInt64(shardBits)
        casTag = UInt64(index)
        let bytes = geometry.maxSegments * geometry.segmentSize
        if let file {
            memory = file.memory
            self.file = file.meta
            fileOwner = file.owner
            casPersistedUpTo = 0
        } else {
            // MAP_NORESERVE: address space only; a page becomes resident when first written.
            let p = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
            precondition(p != MAP_FAILED && p != nil, "mmap of \(bytes) bytes for segments failed: errno \(errno)")
            memory = p!
            self.file = nil
            fileOwner = nil
        }
        info = .allocate(capacity: geometry.maxSegments)
        info.initialize(repeating: SegmentInfo(), count: geometry.maxSegments)
        active = .allocate(capacity: WriteTarget.count)
        active.initialize(repeating: -1, count: WriteTarget.count)
        capacity = Shard.initialIndexCapacity
        slots = .allocate(capacity: capacity)
        slots.initialize(repeating: 0, count: capacity)
        // One 2-byte fingerprint per 128 bytes of the share: about as many as the items a full
        // shard holds, as S3-FIFO sizes its ghost queue. Mapped, not allocated, so that its
        // pages become resident only once evictions write to them.
        var g = 256
        while g < limit / 128 { g *= 2 }
        ghostMask = g - 1
        let gp = mmap(nil, g * 2, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
        precondition(gp != MAP_FAILED && gp != nil, "mmap of the ghost filter failed: errno \(errno)")
        ghost = gp!.bindMemory(to: UInt16.self, capacity: g)
    }

    deinit {
        // Release every external value still referenced by a live record.
        for s in 0..<geometry.maxSegments where info[s].externals > 0 {
            forEachLiveRecordLocked(Int32(s)) { r, _ in if r.isExternal { r.external.release() } }
        }
        if file == nil { munmap(memory, geometry.maxSegments * geometry.segmentSize) }
        info.deallocate()
        active.deallocate()
        slots.deallocate()
        munmap(ghost, (ghostMask + 1) * 2)
    }

    /// Everything this shard uses against its limit.
    var usedBytes: Int {
        mappedSegments * geometry.segmentSize + indexBytes + externalBytes
    }
    /// Bytes of the index and the ghost filter.
    var indexBytes: Int { capacity * 8 + (ghostMask + 1) * 2 }

    /// A fresh cas unique. Write lock held.
    @inline(__always)
    func nextCasLocked() -> UInt64 {
        casCounter &+= 1
        if casCounter >= casPersistedUpTo { persistCasLocked() }
        return (casCounter << casShift) | casTag
    }

    /// Moves the memory file's cas high-water mark a step ahead of the counter, before any
    /// value past the old mark is handed out. Write lock held.
    @inline(never)
    func persistCasLocked() {
        casPersistedUpTo = casCounter + Shard.casReserveStep
        file?.casReserved = casPersistedUpTo
    }

    /// The shard's cas tag bits (the low bits of every cas it hands out).
    var casShiftBits: UInt64 { casShift }

    /// The key hash, as the store computes it.
    @inline(__always)
    func keyHash(_ key: UnsafeRawBufferPointer) -> UInt64 {
        KeyHash.hash(key, seed: hashSeeds.seed, s0: hashSeeds.secret0, s1: hashSeeds.secret1)
    }

    @inline(__always)
    func segmentBase(_ s: Int32) -> UnsafeMutableRawPointer {
        memory + Int(s) * geometry.segmentSize
    }

    @inline(__always)
    func record(_ s: Int32, _ offset: Int) -> Record {
        Record(segmentBase(s) + offset)
    }

    /// Calls `body` for each live record of segment `s` with its offset. Lock held.
    func forEachLiveRecordLocked(_ s: Int32, _ body: (Record, Int) -> Void) {
        let end = Int(info[Int(s)].used)
        var off = 0
        while off < end {
            let r = record(s, off)
            let size = r.size
            if !r.isDead { body(r, off) }
            off += size
        }
    }
}

/// Where a record is written.
enum WriteTarget {
    /// New items go to the small FIFO, one open segment per TTL class (0: no TTL, 1-5:
    /// remaining TTL under 1 minute, 10 minutes, 1 hour, 1 day, longer), so a segment holds
    /// items that expire at about the same time.
    static let ttlClasses = 5
    /// Items copied forward by eviction, and new items whose key is in the ghost filter.
    static let main = 6
    /// Items kept in the small FIFO when a segment is compacted.
    static let smallCopy = 7
    static let count = 8

    @inline(__always)
    static func forNew(deadline: Int64, now: Int64) -> Int {
        if deadline == 0 { return 0 }
        let left = deadline - now
        return left < 60 ? 1 : left < 600 ? 2 : left < 3600 ? 3 : left < 86_400 ? 4 : 5
    }
}
