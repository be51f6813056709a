// The memory file (-e): a store over a file mapping, stopped cleanly or "crashed" (dropped
// without the clean-stop record) and opened again from the same file. Every test compares what
// the reopened store serves with what the first one held, item by item (value, flags,
// exptime, cas), so a lost, resurrected, stale or torn item fails it.
import Testing
import BenchSupport
@testable import LarderStore
#if canImport(Glibc)
import Glibc
#endif

/// A memory file path of its own under /dev/shm, removed when the test is done.
final class TempMemoryFile {
    let path: String
    init(_ name: String = #function) {
        let safe = name.filter { $0.isLetter || $0.isNumber }
        path = "/dev/shm/larder-test-\(getpid())-\(safe)-\(UInt32.random(in: 0...UInt32.max))"
    }
    deinit { unlink(path) }
}

/// Every item a store serves, by key (a value a reader could get).
func contents(_ s: Store) -> [String: ItemSnapshot] {
    var all: [String: ItemSnapshot] = [:]
    s.forEachItem { all[String(decoding: $0.key, as: UTF8.self)] = $0 }
    return all
}

/// The differences between two stores' contents (empty when equal).
func differences(_ a: [String: ItemSnapshot], _ b: [String: ItemSnapshot]) -> [String] {
    var out: [String] = []
    for (k, x) in a {
        guard let y = b[k] else { out.append("\(k): lost"); continue }
        if x.value != y.value || x.flags != y.flags || x.exptime != y.exptime || x.cas != y.cas {
            out.append("\(k): \(String(decoding: x.value, as: UTF8.self))/\(x.flags)/\(x.exptime)/\(x.cas) became \(String(decoding: y.value, as: UTF8.self))/\(y.flags)/\(y.exptime)/\(y.cas)")
        }
    }
    for k in b.keys where a[k] == nil { out.append("\(k): resurrected") }
    return out
}

@Suite("restart from the memory file")
struct RestartTests {
    let clock = ManualClock(1_700_000_000)
    func config(_ mb: Int = 8, shards: Int = 4) -> StoreConfig {
        StoreConfig(memoryLimit: mb << 20, shardCount: shards, maxItemSize: 64 << 10, hashSeeds: testSeeds)
    }
    func open(_ f: TempMemoryFile, _ c: StoreConfig? = nil) throws -> Store {
        try Store(config: c ?? config(), clock: clock, memoryFile: f.path)
    }

    /// A mixed history: sets with flags and TTLs, overwrites, deletes, incr, append, touch.
    func churn(_ s: Store, keys: Int, rounds: Int, seed: UInt64) {
        var g = SplitMix(seed: seed)
        for _ in 0..<rounds {
            let k = "k\(g.next() % UInt64(keys))"
            switch g.next() % 10 {
            case 0: _ = s.del(k)
            case 1: _ = s.set(k, "\(g.next() % 1000)"); _ = s.arith(k, incr: true, 7)
            case 2: _ = s.set(k, "-tail", .append)
            case 3: _ = s.touchKey(k, Int32(g.next() % 500 + 1))
            default:
                let v = String(repeating: "v", count: Int(g.next() % 200)) + k
                _ = s.set(k, v, flags: UInt32(g.next() % 3), exptime: Int32(g.next() % 4 == 0 ? g.next() % 900 + 1 : 0))
            }
        }
    }

    @Test("a clean stop and a crash both bring back exactly the items held, and cas keeps growing")
    func roundTrip() throws {
        for graceful in [true, false] {
            let f = TempMemoryFile()
            var before: [String: ItemSnapshot] = [:]
            let small = config(2)
            do {
                let s = try open(f, small)
                #expect(s.restoreReport.outcome == .noFile)
                churn(s, keys: 20_000, rounds: 60_000, seed: 7)
                // Enough churn under 8 MB to evict, copy forward and compact.
                #expect(s.counters().segmentsEvicted > 0)
                before = contents(s)
                #expect(s.audit() == [])
                if graceful { s.closeCleanly() }
            }
            var again: [String: ItemSnapshot] = [:]
            do {
                let s = try open(f, small)
                #expect(s.restoreReport.outcome == .restored)
                #expect(s.restoreReport.graceful == graceful)
                #expect(s.restoreReport.restoredItems == before.count, "\(s.restoreReport) \(s.counters())")
                #expect(before.count > 1000)
                #expect(differences(before, contents(s)) == [])
                #expect(s.audit() == [])
                #expect(s.set("new", "x") == .stored)
                // cas values grow per shard (the low bits name it).
                let cas = s.item("new")!.cas
                #expect(cas > before.values.map(\.cas).filter { $0 & 3 == cas & 3 }.max()!)
                // And the restored store keeps working: more churn, another restart.
                churn(s, keys: 20_000, rounds: 30_000, seed: 8)
                again = contents(s)
                if graceful { s.closeCleanly() }
            }
            let t = try open(f, small)
            #expect(differences(again, contents(t)) == [])
            #expect(t.audit() == [])
        }
    }

    @Test("deleted, overwritten and flushed items never come back")
    func noResurrection() throws {
        let f = TempMemoryFile()
        do {
            let s = try open(f)
            for i in 0..<500 { _ = s.set("k\(i)", "old\(i)") }
            for i in 0..<500 where i % 3 == 0 { _ = s.del("k\(i)") }
            for i in 0..<500 where i % 3 == 1 { _ = s.set("k\(i)", "new\(i)") }
        }
        do {
            let s = try open(f)
            for i in 0..<500 {
                #expect(s.value("k\(i)") == [nil, "new\(i)", "old\(i)"][i % 3])
            }
            s.flushAll(delay: 0)
            _ = s.set("after", "1")
        }
        let s = try open(f)
        #expect(contents(s).keys.sorted() == ["after"])
    }

    @Test("evicted and expired items do not come back from reused or free segments")
    func noResurrectionAfterEviction() throws {
        let f = TempMemoryFile()
        var before: [String: ItemSnapshot] = [:]
        do {
            let s = try open(f, config(2))
            var i = 0
            // Keys are never written twice: any evicted key that came back would show.
            while s.counters().segmentsEvicted < 40 {
                _ = s.set("u\(i)", String(repeating: "x", count: 100), exptime: i % 5 == 0 ? 30 : 0)
                i += 1
            }
            clock.advance(by: 31)
            #expect(s.sweep().reclaimed > 0)
            for j in 0..<200 { _ = s.set("late\(j)", "y") }
            before = contents(s)
            #expect(s.audit() == [])
        }
        let s = try open(f, config(2))
        #expect(differences(before, contents(s)) == [])
    }

    @Test("a delayed flush_all is a barrier that survives the restart")
    func delayedFlush() throws {
        let f = TempMemoryFile()
        do {
            let s = try open(f)
            for i in 0..<100 { _ = s.set("k\(i)", "v") }
            s.flushAll(delay: 60)
        }
        do {
            let s = try open(f)  // before the deadline: still there
            #expect(s.restoreReport.restoredItems == 100)
            #expect(s.value("k1") == "v")
        }
        clock.advance(by: 61)
        do {
            let s = try open(f)  // the deadline passed while stopped
            #expect(s.restoreReport.restoredItems == 0)
            #expect(s.value("k1") == nil)
            _ = s.set("k2", "new")
            s.closeCleanly()
        }
        let t = try open(f)  // the barrier is spent: later items stay
        #expect(t.value("k2") == "new")
    }

    @Test("items expire by their absolute exptime across a restart")
    func expiryAcrossRestart() throws {
        let f = TempMemoryFile()
        do {
            let s = try open(f)
            _ = s.set("short", "1", exptime: 10)
            _ = s.set("long", "2", exptime: 1000)
            _ = s.set("abs", "3", exptime: Int32(clock.now() + 500))
        }
        clock.advance(by: 20)
        let s = try open(f)
        #expect(s.value("short") == nil)
        #expect(s.value("long") == "2")
        #expect(s.item("long")!.exptime == clock.now() - 20 + 1000)
        #expect(s.value("abs") == "3")
    }

    @Test("settings that change the layout start empty with the reason; the same ones restore")
    func incompatible() throws {
        let f = TempMemoryFile()
        do { let s = try open(f); _ = s.set("a", "1") }
        let other = try open(f, config(16))
        #expect(other.restoreReport.outcome == .incompatibleSettings)
        #expect(other.restoreReport.reason.contains("-m"))
        #expect(other.value("a") == nil)
        _ = other.set("b", "2")
        _ = consume other
        var c = config(16)
        c.maxItemSize = 32 << 10
        let third = try open(f, c)
        #expect(third.restoreReport.outcome == .incompatibleSettings)
        #expect(third.restoreReport.reason.contains("-I"))
    }

    /// Writes `bytes` at `offset` of the file (the process's view of the mapping is the file's).
    func poke(_ path: String, _ offset: Int, _ bytes: [UInt8]) {
        let fd = Glibc.open(path, O_RDWR)
        _ = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(offset)) }
        close(fd)
    }

    @Test("another layout version, a bad magic and a truncated file start empty, never crash")
    func damagedHeader() throws {
        for (name, damage, outcome) in [
            ("version", { (p: String) in self.poke(p, 8, [99]) }, RestoreOutcome.incompatibleSettings),
            ("magic", { (p: String) in self.poke(p, 0, [0]) }, .corrupt),
            ("setting", { (p: String) in self.poke(p, 16, [1]) }, .corrupt),  // checksum catches it
            ("truncated", { (p: String) in _ = truncate(p, 100_000) }, .corrupt),
            ("tiny", { (p: String) in _ = truncate(p, 10) }, .corrupt),
        ] {
            let f = TempMemoryFile(name)
            do { let s = try open(f); _ = s.set("a", "1") }
            damage(f.path)
            let s = try open(f)
            #expect(s.restoreReport.outcome == outcome, "\(name)")
            #expect(s.value("a") == nil, "\(name)")
            #expect(s.set("b", "2") == .stored)
            #expect(s.value("b") == "2")
        }
    }

    @Test("a damaged cas high-water mark or open order is ignored: no trap, cas values keep growing")
    func damagedCounters() throws {
        let f = TempMemoryFile()
        var before: UInt64 = 0
        do {
            let s = try open(f, config(shards: 1))
            for i in 0..<100 { _ = s.set("k\(i)", "v\(i)") }
            before = contents(s)["k99"]?.cas ?? 0
        }
        // The shard's header starts right after the file header: its first word is the cas
        // high-water mark. All ones would overflow the counter when it is next reserved.
        poke(f.path, 4096, [UInt8](repeating: 0xFF, count: 8))
        let s = try open(f, config(shards: 1))
        #expect(s.restoreReport.outcome == .restored)
        #expect(s.value("k5") == "v5")
        #expect(s.set("new", "1") == .stored)
        let after = contents(s)["new"]?.cas ?? 0
        #expect(after > before, "cas went from \(before) to \(after)")
    }

    @Test("-e pointed at a file that is not Larder's refuses to start and leaves it untouched")
    func foreignFile() throws {
        let f = TempMemoryFile()
        let original = [UInt8](repeating: 0x78, count: 5000)
        let fd = Glibc.open(f.path, O_RDWR | O_CREAT, 0o600)
        _ = original.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
        #expect(throws: MemoryFileError.self) { _ = try open(f) }
        var st = stat()
        #expect(stat(f.path, &st) == 0 && st.st_size == 5000)
        let check = Glibc.open(f.path, O_RDONLY)
        var back = [UInt8](repeating: 0, count: 5000)
        _ = back.withUnsafeMutableBytes { read(check, $0.baseAddress, 5000) }
        close(check)
        #expect(back == original)
    }

    @Test("a record being written at the crash (past the committed length) is not restored")
    func tornRecord() throws {
        let f = TempMemoryFile()
        var before: [String: ItemSnapshot] = [:]
        do {
            let s = try open(f)
            for i in 0..<200 { _ = s.set("k\(i)", "value\(i)") }
            before = contents(s)
            // A writer stopped half way through a record: its first half is in the segment,
            // past the committed length (the in-memory `used` had moved on).
            let shard = s.shardsForAdmin[0]
            shard.lock.withWriteLock {
                let seg = shard.active[0]
                let used = Int(shard.info[Int(seg)].used)
                let donor = shard.record(seg, 0)
                (shard.segmentBase(seg) + used).copyMemory(from: donor.base, byteCount: donor.size / 2)
                shard.segmentBase(seg).storeBytes(of: 0x7F, toByteOffset: used + 2, as: UInt8.self)
            }
        }
        let s = try open(f)
        #expect(differences(before, contents(s)) == [])
        #expect(s.restoreReport.damagedSegments == 0)
    }

    @Test("an overwrite cut short (new record committed, old not yet dead): the newer cas wins")
    func overwriteCutShort() throws {
        let f = TempMemoryFile()
        do {
            let s = try open(f)
            _ = s.set("k", "old")
            let first = s.shardsForAdmin.first { $0.count == 1 }!
            var oldRecord: Record? = nil
            first.lock.withReadLock { first.forEachLiveRecordLocked(first.active[0]) { r, _ in oldRecord = r } }
            _ = s.set("k", "new")
            // Undo the dead mark, as if the process died between the two steps.
            oldRecord!.updateControlLocked(set: 0, clear: RecordControl.dead)
        }
        let s = try open(f)
        #expect(s.value("k") == "new")
        #expect(s.audit() == [])
    }

    @Test("after a clean stop a flipped byte drops its segment instead of serving it")
    func flippedByte() throws {
        let f = TempMemoryFile()
        var before: [String: ItemSnapshot] = [:]
        var offset = 0
        do {
            let s = try open(f)
            for i in 0..<300 { _ = s.set("key\(i)", "value-\(i)-" + String(repeating: "x", count: 50)) }
            before = contents(s)
            // A byte inside the first record of shard 0's first segment holding any.
            let shard = s.shardsForAdmin[0]
            let seg = (0..<Int32(shard.geometry.maxSegments)).first { shard.file!.committed($0) > 0 }!
            offset = s.memoryFileBacking!.dataOffset + Int(seg) * shard.geometry.segmentSize + 20
            s.closeCleanly()
        }
        poke(f.path, offset, [0xFF])
        let s = try open(f)
        #expect(s.restoreReport.damagedSegments == 1)
        let after = contents(s)
        #expect(after.count < before.count)
        for (k, v) in after { #expect(before[k]?.value == v.value) }
    }

    @Test("values kept outside the file are dropped on restore and counted")
    func largeValuesDropped() throws {
        let f = TempMemoryFile()
        do {
            let s = try open(f)
            _ = s.set("big", String(repeating: "b", count: 20_000))
            _ = s.set("small", "s")
        }
        let s = try open(f)
        #expect(s.restoreReport.droppedLargeItems == 1)
        #expect(s.value("big") == nil)
        #expect(s.value("small") == "s")
        #expect(s.audit() == [])
    }

    @Test("a second store cannot open a file in use")
    func exclusive() throws {
        let f = TempMemoryFile()
        let s = try open(f)
        #expect(throws: MemoryFileError.self) { try open(f) }
        _ = s.set("a", "1")
    }
}
