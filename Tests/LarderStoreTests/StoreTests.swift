// Store semantics with an injected clock: exptime rules, cas, incr/decr edges, limits.
import Testing
import BenchSupport
@testable import LarderStore

func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

/// Fixed hash seeds for every test store, so a run replays exactly (the server's are random).
let testSeeds: (seed: UInt64, secret0: UInt64, secret1: UInt64) = {
    var g = SplitMix(seed: 2026)
    return (g.next() | 1, KeyHash.makeSecret(using: &g), KeyHash.makeSecret(using: &g))
}()

extension Store {
    func set(_ k: String, _ v: String, flags: UInt32 = 0, exptime: Int32 = 0, _ op: StoreOperation = .set, cas: UInt64 = 0) -> StoreOutcome {
        bytes(k).withUnsafeBytes { kb in bytes(v).withUnsafeBytes { vb in store(op, key: kb, flags: flags, exptime: exptime, value: vb, casUnique: cas) } }
    }
    func value(_ k: String) -> String? {
        if case .hit(let item) = bytes(k).withUnsafeBytes({ get($0) }) { return item.withValue { String(decoding: $0, as: UTF8.self) } }
        return nil
    }
    func item(_ k: String) -> ItemSnapshot? {
        if case .hit(let item) = bytes(k).withUnsafeBytes({ get($0) }) { return item }
        return nil
    }
    func del(_ k: String) -> Bool { bytes(k).withUnsafeBytes { delete($0) } == .deleted }
    func arith(_ k: String, incr: Bool, _ d: UInt64) -> ArithmeticOutcome { bytes(k).withUnsafeBytes { arithmetic($0, incr: incr, delta: d) } }
    func touchKey(_ k: String, _ e: Int32) -> Bool { bytes(k).withUnsafeBytes { touch($0, exptime: e) } }
}

@Suite("store")
struct StoreTests {
    let clock = ManualClock(1_700_000_000)
    var store: Store { Store(config: StoreConfig(memoryLimit: 8 << 20, shardCount: 4, hashSeeds: testSeeds), clock: clock) }

    @Test("set, get, overwrite, delete")
    func basics() {
        let s = store
        #expect(s.value("a") == nil)
        #expect(s.set("a", "1", flags: 7) == .stored)
        #expect(s.value("a") == "1")
        #expect(s.item("a")?.flags == 7)
        #expect(s.set("a", "22") == .stored)
        #expect(s.value("a") == "22")
        #expect(s.del("a"))
        #expect(!s.del("a"))
        #expect(s.value("a") == nil)
        #expect(s.counters().currItems == 0)
        #expect(s.counters().itemBytes == 0)
    }

    @Test("add, replace, append, prepend")
    func modes() {
        let s = store
        #expect(s.set("k", "x", .replace) == .notStored)
        #expect(s.set("k", "x", .append) == .notStored)
        #expect(s.set("k", "x", .prepend) == .notStored)
        #expect(s.set("k", "b", flags: 3, exptime: 100, .add) == .stored)
        #expect(s.set("k", "x", .add) == .notStored)
        #expect(s.set("k", "c", flags: 9, .append) == .stored)
        #expect(s.set("k", "a", .prepend) == .stored)
        #expect(s.value("k") == "abc")
        #expect(s.item("k")?.flags == 3)  // append/prepend keep the old flags
        clock.advance(by: 101)
        #expect(s.value("k") == nil)      // ... and the old exptime
        #expect(s.set("k", "r", .replace) == .notStored)
    }

    @Test("append and prepend may grow an item up to -I, not one byte past it")
    func appendLimit() {
        let s = Store(config: StoreConfig(memoryLimit: 8 << 20, shardCount: 1, maxItemSize: 20_000, hashSeeds: testSeeds),
                      clock: clock)
        // memcached's count: 48 + 8 + key + 1 + value + 2 (flags 0).
        let fits = 20_000 - (48 + 8 + 1 + 1 + 2)
        #expect(s.set("a", String(repeating: "x", count: fits - 10)) == .stored)
        #expect(s.set("a", String(repeating: "y", count: 10), .append) == .stored)
        #expect(s.value("a")?.count == fits)
        #expect(s.set("a", "z", .append) == .notStored)
        #expect(s.set("a", "z", .prepend) == .notStored)
        #expect(s.value("a")?.count == fits)
    }

    @Test("cas uniques are unique and checked")
    func cas() {
        let s = store
        #expect(s.set("c", "1", .cas, cas: 1) == .notFound)
        _ = s.set("c", "1")
        let first = s.item("c")!.cas
        _ = s.set("d", "1")
        #expect(s.item("d")!.cas != first)
        #expect(s.set("c", "2", .cas, cas: first &+ 12345) == .exists)
        #expect(s.set("c", "2", .cas, cas: first) == .stored)
        #expect(s.value("c") == "2")
        #expect(s.set("c", "3", .cas, cas: first) == .exists)
        var seen = Set<UInt64>()
        for i in 0..<2000 {
            _ = s.set("u\(i)", "v")
            #expect(seen.insert(s.item("u\(i)")!.cas).inserted)
        }
    }

    @Test("exptime: 0 never, relative up to 30 days, absolute beyond, negative already gone")
    func exptime() {
        let s = store
        let now = Int32(clock.now())
        _ = s.set("never", "v", exptime: 0)
        _ = s.set("rel", "v", exptime: 10)
        _ = s.set("max-rel", "v", exptime: 2_592_000)
        _ = s.set("abs-future", "v", exptime: now + 3600)
        _ = s.set("abs-past", "v", exptime: now - 1)
        _ = s.set("abs-tiny", "v", exptime: 2_592_001)  // absolute, in 1970
        _ = s.set("neg", "v", exptime: -1)
        #expect(s.value("rel") == "v")
        #expect(s.value("abs-past") == nil)
        #expect(s.value("abs-tiny") == nil)
        #expect(s.value("neg") == nil)
        clock.advance(by: 9)
        #expect(s.value("rel") == "v")
        clock.advance(by: 1)
        #expect(s.value("rel") == nil)
        #expect(s.value("abs-future") == "v")
        clock.advance(by: 3590)
        #expect(s.value("abs-future") == nil)
        clock.advance(by: 2_592_000)
        #expect(s.value("max-rel") == nil)
        #expect(s.value("never") == "v")
    }

    @Test("touch and gat change the deadline; expired items cannot be touched")
    func touch() {
        let s = store
        _ = s.set("t", "v", exptime: 5)
        #expect(s.touchKey("t", 100))
        clock.advance(by: 50)
        #expect(s.value("t") == "v")
        #expect(!s.touchKey("missing", 10))
        if case .hit = bytes("t").withUnsafeBytes({ s.getAndTouch($0, exptime: 1) }) {} else { Issue.record("gat missed") }
        clock.advance(by: 1)
        #expect(s.value("t") == nil)
        #expect(!s.touchKey("t", 100))
    }

    @Test("incr/decr: wrap at 2^64, floor at 0, space padding, non-numeric")
    func arithmetic() {
        let s = store
        #expect(s.arith("n", incr: true, 1) == .notFound)
        _ = s.set("n", "18446744073709551615")
        #expect(s.arith("n", incr: true, 2) == .value(1))
        #expect(s.value("n") == "1" + String(repeating: " ", count: 19))
        _ = s.set("n", "10")
        #expect(s.arith("n", incr: false, 1) == .value(9))
        #expect(s.value("n") == "9 ")
        #expect(s.arith("n", incr: true, 991) == .value(1000))
        #expect(s.value("n") == "1000")
        #expect(s.arith("n", incr: false, 5000) == .value(0))
        #expect(s.value("n") == "0   ")
        _ = s.set("x", "12abc")
        #expect(s.arith("x", incr: true, 1) == .nonNumeric)
        _ = s.set("x", "")
        #expect(s.arith("x", incr: true, 1) == .nonNumeric)
        _ = s.set("x", "-5")
        #expect(s.arith("x", incr: true, 1) == .nonNumeric)
        _ = s.set("x", " 7 ")
        #expect(s.arith("x", incr: true, 1) == .value(8))
        _ = s.set("x", "1", flags: 5, exptime: 10)
        let before = s.item("x")!.cas
        #expect(s.arith("x", incr: true, 1) == .value(2))
        #expect(s.item("x")!.flags == 5)
        #expect(s.item("x")!.cas != before)
        clock.advance(by: 10)
        #expect(s.arith("x", incr: true, 1) == .notFound)
    }

    @Test("flush_all now and with a delay")
    func flush() {
        let s = store
        _ = s.set("a", "1")
        _ = s.set("b", "2")
        s.flushAll(delay: 0)
        #expect(s.value("a") == nil && s.value("b") == nil)
        #expect(s.counters().currItems == 0)
        _ = s.set("a", "1")
        s.flushAll(delay: 10)
        clock.advance(by: 9)
        #expect(s.value("a") == "1")
        clock.advance(by: 1)
        #expect(s.value("a") == nil)
        _ = s.set("a", "again")
        #expect(s.value("a") == "again")
    }

    @Test("byte accounting equals the sum of live items' charges")
    func accounting() {
        let s = store
        for i in 0..<5000 { _ = s.set("key\(i)", String(repeating: "v", count: i % 300)) }
        for i in stride(from: 0, to: 5000, by: 3) { _ = s.del("key\(i)") }
        for i in stride(from: 1, to: 5000, by: 7) { _ = s.set("key\(i)", "short", .append) }
        var sum = 0
        var n = 0
        s.forEachItem { sum += $0.charge; n += 1 }
        let c = s.counters()
        #expect(c.itemBytes == sum)
        #expect(c.currItems == n)
    }

    @Test("with eviction disabled a full store answers out of memory; with it, it evicts")
    func fullStore() {
        let noEvict = Store(config: StoreConfig(memoryLimit: 1 << 20, shardCount: 1, evictionDisabled: true, hashSeeds: testSeeds), clock: clock)
        let value = String(repeating: "x", count: 1000)
        var stored = 0
        var oom = 0
        for i in 0..<2000 {
            switch noEvict.set("k\(i)", value) {
            case .stored: stored += 1
            case .outOfMemory: oom += 1
            default: Issue.record("unexpected")
            }
        }
        #expect(stored > 500 && oom > 0)
        let c = noEvict.counters()
        #expect(c.usedBytes <= 1 << 20)
        // A set refused for memory unlinks the old value (memcached's rule): nobody reads a
        // value its writer tried to replace. Other modes leave it.
        #expect(noEvict.value("k0") == value)
        #expect(noEvict.set("k0", String(repeating: "n", count: 9000)) == .outOfMemory)
        #expect(noEvict.value("k0") == nil)
        #expect(noEvict.value("k1") == value)
        #expect(noEvict.set("k1", String(repeating: "n", count: 9000), .replace) == .outOfMemory)
        #expect(noEvict.value("k1") == value)

        let evicting = Store(config: StoreConfig(memoryLimit: 1 << 20, shardCount: 1, hashSeeds: testSeeds), clock: clock)
        for i in 0..<5000 { #expect(evicting.set("k\(i)", value) == .stored) }
        let e = evicting.counters()
        #expect(e.evictions > 0)
        #expect(e.usedBytes <= 1 << 20)
        #expect(evicting.value("k4999") == value)
        // An item larger than the whole shard is refused.
        #expect(evicting.set("huge", String(repeating: "y", count: 2 << 20)) == .outOfMemory)
    }
}
