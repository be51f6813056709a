// The memory file (`-e PATH`): every shard's segments in one file-backed MAP_SHARED mapping, so
// that a new process can take the items over. docs/RESTART.md has the layout and the commit
// protocol; in short:
//
//   [0, 4096)          header: magic, layout version, every setting the layout depends on, the
//                      key-hash seeds, a checksum of all that; then the mutable part (state:
//                      clean or running; a pending delayed flush_all)
//   [4096, data)       per shard: 64 bytes (cas high-water mark, items at a clean stop), then
//                      32 bytes per segment (committed length, FIFO kind, open sequence,
//                      checksum at a clean stop)
//   [data, end)        the shards' segments, shard after shard
//
// A record is readable by a later process only below its segment's committed length, which is
// published (a release store) after the record's bytes are written and reset to 0 (a
// sequentially consistent store) before a segment is reused. Per segment, not per item: no
// byte an item, and one store per write.
import Atomics
#if canImport(Glibc)
import Glibc
#endif

/// Why the last start did or did not take items over from the memory file.
public enum RestoreOutcome: String, Sendable {
    /// Items were taken over from the file.
    case restored
    /// No memory file (`-e` not given): anonymous memory, as always.
    case cleanStart = "clean_start"
    /// `-e` named a file that did not exist or was empty: created.
    case noFile = "no_file"
    /// The file was written by another layout version or with other settings: started empty.
    case incompatibleSettings = "incompatible_settings"
    /// The file's header is damaged or its size is wrong: started empty.
    case corrupt
}

/// What the store found in its memory file at start.
public struct RestoreReport: Sendable {
    public var outcome: RestoreOutcome = .cleanStart
    /// Items served from the file.
    public var restoredItems = 0
    /// Items whose value lived outside the file (above the inline limit): dropped.
    public var droppedLargeItems = 0
    /// Segments dropped whole (checksum mismatch after a clean stop) or cut short (a record
    /// that does not parse).
    public var damagedSegments = 0
    /// The file said the last process stopped cleanly.
    public var graceful = false
    /// Wall time the restore took.
    public var seconds = 0.0
    /// Why the file was not used (incompatible settings, corrupt header); empty otherwise.
    public var reason = ""
    /// Things the operator should know (e.g. the file is not on tmpfs).
    public var notes: [String] = []
}

/// A memory file that cannot be used at all (not even started afresh).
public struct MemoryFileError: Error, CustomStringConvertible {
    public let description: String
}

/// Byte offsets of the file's parts. Shared by the writer and the reader of the file.
enum FileLayout {
    /// "LARDMEM1" little endian.
    static let magic: UInt64 = 0x314D_454D_4452_414C
    /// Bumped whenever the meaning of any byte of the file changes.
    static let version: UInt64 = 1
    static let headerBytes = 4096
    static let shardHeaderBytes = 64
    static let segmentMetaBytes = 32
    /// Header fields (8 bytes each from 0): magic, version, memoryLimit, shardCount,
    /// maxItemSize, segmentSize, maxSegments, seed, secret0, secret1, then the checksum of them.
    static let fixedFields = 10
    static let checksumOffset = fixedFields * 8
    static let stateOffset = 128
    static let pendingFlushOffset = 136
    /// `state` when the last process stopped cleanly (checksums and counts are valid).
    static let clean: UInt64 = 0x434C_4541_4E00_0001
    static let running: UInt64 = 0
}

/// A fast 64-bit checksum of a byte range (multiply-xorshift over 8-byte words, four
/// independent lanes so the multiplies overlap): catches a flipped byte in a segment or the
/// header, not an adversary.
func checksum64(_ p: UnsafeRawPointer, _ n: Int, seed: UInt64 = 0x9E37_79B9_7F4A_7C15) -> UInt64 {
    let m: UInt64 = 0xFF51_AFD7_ED55_8CCD
    var a = seed ^ UInt64(n), b = a &+ 1, c = a &+ 2, d = a &+ 3
    var i = 0
    while i + 32 <= n {
        a = (a ^ p.loadUnaligned(fromByteOffset: i, as: UInt64.self)) &* m
        b = (b ^ p.loadUnaligned(fromByteOffset: i + 8, as: UInt64.self)) &* m
        c = (c ^ p.loadUnaligned(fromByteOffset: i + 16, as: UInt64.self)) &* m
        d = (d ^ p.loadUnaligned(fromByteOffset: i + 24, as: UInt64.self)) &* m
        a ^= a >> 32; b ^= b >> 32; c ^= c >> 32; d ^= d >> 32
        i += 32
    }
    var h = a ^ (b &* 0xC4CE_B9FE_1A85_EC53) ^ (c &* m) ^ (d &* 0x9E37_79B9_7F4A_7C15)
    while i < n {
        h = (h ^ UInt64(p.load(fromByteOffset: i, as: UInt8.self))) &* 0xC4CE_B9FE_1A85_EC53
        i += 1
    }
    return h ^ (h >> 29)
}

/// One shard's part of the file's metadata: its header and one 32-byte entry per segment.
/// Pointers into the shared mapping, valid while the `MemoryFile` lives (each shard keeps it).
struct FileSegments {
    let base: UnsafeMutableRawPointer

    // Segment entry fields: committed (UInt32 at 0), kind (UInt32 at 4), sequence (UInt64 at
    // 8), checksum (UInt64 at 16).
    @inline(__always) private func entry(_ s: Int32) -> UnsafeMutableRawPointer {
        base + FileLayout.shardHeaderBytes + Int(s) * FileLayout.segmentMetaBytes
    }
    @inline(__always) private func committedAtomic(_ s: Int32) -> UnsafeAtomic<UInt32> {
        // The field is 4-byte aligned in the page-aligned mapping; swift-atomics addresses
        // memory it did not allocate through its storage type (a UInt32 of the same layout).
        UnsafeAtomic<UInt32>(at: entry(s).assumingMemoryBound(to: UnsafeAtomic<UInt32>.Storage.self))
    }

    /// Bytes of segment `s` holding complete records.
    @inline(__always) func committed(_ s: Int32) -> Int { Int(committedAtomic(s).load(ordering: .acquiring)) }

    /// Publishes that the first `bytes` of segment `s` are complete records: every store to
    /// them came before (release).
    @inline(__always) func commit(_ s: Int32, _ bytes: Int) {
        committedAtomic(s).store(UInt32(truncatingIfNeeded: bytes), ordering: .releasing)
    }

    /// Segment `s` holds nothing any more; sequentially consistent, so it is in the file
    /// before any byte of a record written into the segment afterwards.
    @inline(__always) func release(_ s: Int32) {
        committedAtomic(s).store(0, ordering: .sequentiallyConsistent)
    }

    /// Segment `s` is opened for writing: its FIFO (1 small, 2 main) and its place in order.
    @inline(__always) func open(_ s: Int32, kind: UInt32, sequence: UInt64) {
        entry(s).storeBytes(of: kind, toByteOffset: 4, as: UInt32.self)
        entry(s).storeBytes(of: sequence, toByteOffset: 8, as: UInt64.self)
    }
    func kind(_ s: Int32) -> UInt32 { entry(s).load(fromByteOffset: 4, as: UInt32.self) }
    func sequence(_ s: Int32) -> UInt64 { entry(s).load(fromByteOffset: 8, as: UInt64.self) }
    func storedChecksum(_ s: Int32) -> UInt64 { entry(s).load(fromByteOffset: 16, as: UInt64.self) }
    func setChecksum(_ s: Int32, _ c: UInt64) { entry(s).storeBytes(of: c, toByteOffset: 16, as: UInt64.self) }

    /// The checksum a clean stop records for segment `s` holding `data`: its committed bytes,
    /// length, kind and sequence.
    func computeChecksum(_ s: Int32, data: UnsafeRawPointer) -> UInt64 {
        let n = committed(s)
        return checksum64(data, n, seed: UInt64(n) ^ (UInt64(kind(s)) << 32) ^ sequence(s) &* 0x9E37_79B9_7F4A_7C15)
    }

    /// The next cas counter value never handed out (a high-water mark kept ahead of the
    /// counter, so a crash cannot make cas values go back).
    var casReserved: UInt64 {
        get { base.load(as: UInt64.self) }
        nonmutating set { base.storeBytes(of: newValue, as: UInt64.self) }
    }
    /// The index's size (slots) as last rebuilt: a restore rebuilds it at the same size, so
    /// the items fit in the memory they fitted in before.
    var indexCapacity: UInt64 {
        get { base.load(fromByteOffset: 8, as: UInt64.self) }
        nonmutating set { base.storeBytes(of: newValue, toByteOffset: 8, as: UInt64.self) }
    }
}

/// The open, mapped memory file. Owned by the store and kept alive by every shard that points
/// into it.
final class MemoryFile: @unchecked Sendable {
    // @unchecked Sendable: the mapping's bytes are shared as the shards' lock rules say (each
    // shard touches only its own part, under its lock); the header's mutable words are atomics
    // or written only at start and at a clean stop, when no request runs.
    let path: String
    let fd: Int32
    let base: UnsafeMutableRawPointer
    let length: Int
    let shardMetaStride: Int
    let dataOffset: Int
    let shardDataStride: Int
    /// Seeds of the key hash (from the file when it was restored: keys must hash to the same
    /// shards).
    let seeds: (seed: UInt64, secret0: UInt64, secret1: UInt64)
    /// What `open` found, before the restore scan. `var` only so init can set them branch by
    /// branch: nothing assigns them after init returns (the store reads them once, at start).
    private(set) var outcome: RestoreOutcome
    private(set) var reason = ""
    private(set) var wasClean = false
    private(set) var notes: [String] = []

    /// The layout-defining settings, in header order.
    static func settings(memoryLimit: Int, shardCount: Int, maxItemSize: Int, geometry g: SegmentGeometry) -> [UInt64] {
        [UInt64(memoryLimit), UInt64(shardCount), UInt64(maxItemSize), UInt64(g.segmentSize), UInt64(g.maxSegments)]
    }

    /// Opens (creating if need be) and maps `path` for a store of these settings. A file that
    /// does not match is started afresh and `outcome` says why; only a file that cannot be
    /// opened, locked, sized or mapped throws.
    init(path: String, memoryLimit: Int, shardCount: Int, maxItemSize: Int, geometry g: SegmentGeometry,
         seeds fresh: (seed: UInt64, secret0: UInt64, secret1: UInt64)) throws(MemoryFileError) {
        self.path = path
        func fail(_ what: String, _ e: Int32) -> MemoryFileError {
            MemoryFileError(description: "memory file \(path): \(what): \(String(cString: strerror(e)))")
        }
        /// Neither Larder's mark nor a Larder file's size for these settings: most likely a
        /// wrong path (a typo in -e). Never wipe someone else's file.
        func foreign(_ size: Int) -> MemoryFileError {
            MemoryFileError(description: "memory file \(path): \(size) bytes that are not a Larder memory file; refusing to overwrite it (check -e, or remove the file)")
        }
        // O_NOFOLLOW: a symlink planted at the path must not make Larder size (and wipe)
        // whatever it points to.
        let fd = Glibc.open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { throw fail("cannot open", errno) }
        // One process at a time: a new server started before the old one has exited must not
        // write into the same items.
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            let e = errno
            Glibc.close(fd)
            throw fail("in use by another process (flock)", e)
        }
        self.fd = fd
        shardMetaStride = FileLayout.shardHeaderBytes + g.maxSegments * FileLayout.segmentMetaBytes
        let page = 4096
        dataOffset = (FileLayout.headerBytes + shardCount * shardMetaStride + page - 1) / page * page
        shardDataStride = g.maxSegments * g.segmentSize
        length = dataOffset + shardCount * shardDataStride
        let expected = MemoryFile.settings(memoryLimit: memoryLimit, shardCount: shardCount, maxItemSize: maxItemSize,
                                           geometry: g)
        var st = stat()
        guard fstat(fd, &st) == 0 else { Glibc.close(fd); throw fail("fstat", errno) }
        guard st.st_mode & S_IFMT == S_IFREG else {
            Glibc.close(fd)
            throw MemoryFileError(description: "memory file \(path): not a regular file")
        }
        // The items (and the key-hash secrets) are the clients' data: readable by the owner
        // only. A file made by hand with a wider mode is narrowed, and the change noted.
        if st.st_mode & 0o077 != 0 {
            if fchmod(fd, 0o600) != 0 { let e = errno; Glibc.close(fd); throw fail("cannot chmod 600", e) }
            notes.append("memory file \(path) was readable by others (mode \(String(st.st_mode & 0o777, radix: 8))): changed to 600")
        }
        let size = Int(st.st_size)
        var found: (seed: UInt64, secret0: UInt64, secret1: UInt64)? = nil
        outcome = .noFile
        if size > 0 {
            var header = [UInt64](repeating: 0, count: FileLayout.fixedFields + 1)
            let n = header.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
            let names = ["-m (bytes)", "shard count", "-I", "segment size", "segments per shard"]
            if n != header.count * 8 && n >= 8 && header[0] != FileLayout.magic {
                Glibc.close(fd)
                throw foreign(size)
            } else if n != header.count * 8 {
                (outcome, reason) = (.corrupt, "the file is \(size) bytes, shorter than its header")
            } else if header[0] != FileLayout.magic && size != length {
                Glibc.close(fd)
                throw foreign(size)
            } else if header[0] != FileLayout.magic {
                (outcome, reason) = (.corrupt, "not a Larder memory file (bad magic)")
            } else if header[1] != FileLayout.version {
                (outcome, reason) = (.incompatibleSettings,
                                     "written by memory-file layout version \(header[1]); this build uses \(FileLayout.version)")
            } else if header.withUnsafeBytes({ checksum64($0.baseAddress!, FileLayout.checksumOffset) }) != header[10] {
                (outcome, reason) = (.corrupt, "header checksum mismatch")
            } else if let i = (0..<5).first(where: { header[2 + $0] != expected[$0] }) {
                (outcome, reason) = (.incompatibleSettings,
                                     "written with \(names[i]) \(header[2 + i]), this start has \(expected[i])")
            } else if size != length {
                (outcome, reason) = (.corrupt, "the file is \(size) bytes, its settings need \(length) (truncated?)")
            } else {
                outcome = .restored
                found = (header[7], header[8], header[9])
            }
        }
        if found == nil {
            // Start afresh: drop every old byte (a shorter file first, so the new one is zeros).
            guard ftruncate(fd, 0) == 0, ftruncate(fd, off_t(length)) == 0 else {
                let e = errno
                Glibc.close(fd)
                throw fail("cannot size to \(length) bytes", e)
            }
        }
        seeds = found ?? fresh
        // Room on the file system: a tmpfs that runs out while items are written would kill
        // the process with SIGBUS, so refuse to start when it cannot hold the file. (A check,
        // not a reservation: docs/RESTART.md says what happens if the room is taken later.)
        var vfs = statvfs()
        if fstat(fd, &st) == 0 && fstatvfs(fd, &vfs) == 0 {
            let free = Int(vfs.f_bavail) * Int(vfs.f_frsize)
            let need = length - min(length, Int(st.st_blocks) * 512)
            if free < need {
                Glibc.close(fd)
                throw MemoryFileError(description: "memory file \(path): needs \(need >> 20) MB more but its file system has \(free >> 20) MB free; make room (e.g. a larger /dev/shm) or lower -m")
            }
        }
        if let type = MemoryFile.fileSystemType(path), !["tmpfs", "ramfs", "hugetlbfs"].contains(type) {
            notes.append("memory file \(path) is on \(type), not tmpfs: it works, but the kernel keeps writing item memory back to the disk (slower writes, disk wear); /dev/shm is the intended place")
        }
        let p = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
        guard let p, p != MAP_FAILED else { Glibc.close(fd); throw fail("mmap of \(length) bytes", errno) }
        base = p
        wasClean = found != nil && base.load(fromByteOffset: FileLayout.stateOffset, as: UInt64.self) == FileLayout.clean
        if found == nil {
            let fields = [FileLayout.magic, FileLayout.version] + expected + [seeds.seed, seeds.secret0, seeds.secret1]
            for (i, v) in fields.enumerated() { base.storeBytes(of: v, toByteOffset: i * 8, as: UInt64.self) }
            base.storeBytes(of: checksum64(base, FileLayout.checksumOffset), toByteOffset: FileLayout.checksumOffset,
                            as: UInt64.self)
        }
        markRunning()
    }

    /// The type of the file system holding `path` (the longest mount point above it).
    static func fileSystemType(_ path: String) -> String? {
        guard let real = realpath(path, nil) else { return nil }
        let full = String(cString: real)
        free(real)
        guard let f = fopen("/proc/self/mounts", "r") else { return nil }
        defer { fclose(f) }
        var best: (dir: String, type: String)? = nil
        var line: UnsafeMutablePointer<CChar>? = nil
        var cap = 0
        defer { free(line) }
        // "device mount-point type options ..." (spaces in names are octal-escaped: fine here).
        while getline(&line, &cap, f) > 0, let l = line {
            let fields = String(cString: l).split(separator: " ")
            guard fields.count >= 3 else { continue }
            let dir = String(fields[1])
            let under = dir == "/" || full == dir || full.hasPrefix(dir + "/")
            if under && dir.count >= (best?.dir.count ?? -1) { best = (dir, String(fields[2])) }
        }
        return best?.type
    }

    deinit {
        munmap(base, length)
        Glibc.close(fd)
    }

    func shardMeta(_ i: Int) -> FileSegments {
        FileSegments(base: base + FileLayout.headerBytes + i * shardMetaStride)
    }
    func shardData(_ i: Int) -> UnsafeMutableRawPointer { base + dataOffset + i * shardDataStride }

    private var state: UnsafeAtomic<UInt64> {
        // 8-byte aligned in the page-aligned mapping (see FileSegments for the binding).
        UnsafeAtomic<UInt64>(at: (base + FileLayout.stateOffset).assumingMemoryBound(to: UnsafeAtomic<UInt64>.Storage.self))
    }
    private var pendingFlushWord: UnsafeAtomic<Int64> {
        UnsafeAtomic<Int64>(at: (base + FileLayout.pendingFlushOffset).assumingMemoryBound(to: UnsafeAtomic<Int64>.Storage.self))
    }

    /// From now on the segments change: their checksums and counts are not to be trusted.
    func markRunning() { state.store(FileLayout.running, ordering: .sequentiallyConsistent) }
    /// Everything is written and checksummed: the next start may verify and trust it.
    func markClean() {
        state.store(FileLayout.clean, ordering: .sequentiallyConsistent)
        // On tmpfs this costs nothing; on a disk-backed file it makes the stop durable.
        msync(base, length, MS_SYNC)
    }
    /// The deadline of a delayed flush_all (0 none): a barrier that outlives the process.
    var pendingFlush: Int64 {
        get { pendingFlushWord.load(ordering: .relaxed) }
        set { pendingFlushWord.store(newValue, ordering: .sequentiallyConsistent) }
    }
    /// Clears the barrier once the flush at `deadline` has run, unless a newer `flush_all N`
    /// has already replaced it (a blind store would erase that one).
    func clearPendingFlush(ifStill deadline: Int64) {
        _ = pendingFlushWord.compareExchange(expected: deadline, desired: 0, ordering: .sequentiallyConsistent)
    }
}
