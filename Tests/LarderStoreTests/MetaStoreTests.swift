// The store's meta operations without sockets: vivify, invalidation (md I, ms C<old> I),
// recache (R), cas checks, the binary-key bit, and the exactly-once guarantee of the win
// token under real threads racing on one key (every race run many rounds, seeded).
import Atomics
#if canImport(Glibc)
import Glibc
#endif
import Testing
@testable import LarderStore

extension Store {
    /// mg on `k`; returns nil on a miss, else (won, tokenSentBefore, stale, value).
    func mg(_ k: String, _ o: MetaGetOptions = MetaGetOptions()) -> (won: Bool, z: Bool, stale: Bool, value: String)? {
        var r: (Bool, Bool, Bool, String)?
        let status = bytes(k).withUnsafeBytes { kb in
            metaGet(kb, options: o) { item, st in
                r = (st.won, st.tokenSentBefore, st.stale, item.withValue { String(decoding: $0, as: UTF8.self) })
            }
        }
        if status != .hit { return nil }
        return r.map { (won: $0.0, z: $0.1, stale: $0.2, value: $0.3) }
    }
    func ms(_ k: String, _ v: String, _ mode: MetaStoreMode = .set, cas: UInt64 = 0, invalidate: Bool = false,
            binary: Bool = false, exptime: Int32 = 0) -> MetaStoreResult {
        bytes(k).withUnsafeBytes { kb in
            bytes(v).withUnsafeBytes { vb in
                metaStore(mode, key: kb, flags: 0, exptime: exptime, value: vb, cas: cas, invalidate: invalidate, binaryKey: binary)
            }
        }
    }
    func md(_ k: String, cas: UInt64? = nil, invalidate: Bool = false, ttl: Int32? = nil) -> MetaDeleteOutcome {
        bytes(k).withUnsafeBytes { metaDelete($0, cas: cas, invalidate: invalidate, ttl: ttl) }
    }
}

@Suite("store: meta")
struct MetaStoreTests {
    let clock = ManualClock(1_700_000_000)
    func makeStore(_ mb: Int = 8, shards: Int = 4) -> Store {
        Store(config: StoreConfig(memoryLimit: mb << 20, shardCount: shards), clock: clock)
    }

    @Test("vivify: the first miss wins and creates an empty item; later ones see Z until a set")
    func vivify() {
        let s = makeStore()
        let first = s.mg("k", MetaGetOptions(vivifyTTL: 30))
        #expect(first?.won == true && first?.z == false && first?.value == "")
        #expect(s.item("k")?.exptime == clock.now() + 30)
        let second = s.mg("k", MetaGetOptions(vivifyTTL: 30))
        #expect(second?.won == false && second?.z == true)
        #expect(s.mg("k")?.z == true)
        #expect(s.ms("k", "v").outcome == .stored)
        let after = s.mg("k", MetaGetOptions(vivifyTTL: 30))
        #expect(after?.won == false && after?.z == false && after?.value == "v")
    }

    @Test("md I: stale, new cas, one W, then Z; a set clears it")
    func invalidate() throws {
        let s = makeStore()
        _ = s.ms("k", "v")
        let cas = try #require(s.item("k")?.cas)
        #expect(s.md("k", cas: cas + 1, invalidate: true) == .exists)
        #expect(s.md("k", invalidate: true, ttl: 30) == .invalidated)
        #expect(try #require(s.item("k")?.cas) != cas)
        #expect(s.item("k")?.exptime == clock.now() + 30)
        let a = s.mg("k")
        #expect(a?.stale == true && a?.won == true && a?.z == false)
        let b = s.mg("k")
        #expect(b?.stale == true && b?.won == false && b?.z == true)
        // Invalidating again hands out a new token.
        #expect(s.md("k", invalidate: true) == .invalidated)
        #expect(s.mg("k")?.won == true)
        _ = s.ms("k", "fresh")
        let c = s.mg("k")
        #expect(c?.stale == false && c?.won == false && c?.z == false)
        #expect(s.md("k") == .deleted && s.md("k") == .notFound)
    }

    @Test("ms with an older cas and I stores a stale item; a newer or equal cas does not mark it")
    func staleSet() throws {
        let s = makeStore()
        _ = s.ms("k", "one")
        let cas = try #require(s.item("k")?.cas)
        #expect(s.ms("k", "two", .cas, cas: cas + 100, invalidate: true).outcome == .exists)
        let r = s.ms("k", "old", .cas, cas: cas - 1, invalidate: true)
        #expect(r.outcome == .stored && r.cas == s.item("k")?.cas && r.cas != cas)
        let g = s.mg("k")
        #expect(g?.value == "old" && g?.stale == true && g?.won == true)
        #expect(s.ms("k", "x", .cas, cas: cas - 1).outcome == .exists)
        let now = try #require(s.item("k")?.cas)
        #expect(s.ms("k", "new", .cas, cas: now, invalidate: true).outcome == .stored)
        #expect(s.mg("k")?.stale == false)
        #expect(s.ms("absent", "x", .cas, cas: 1).outcome == .notFound)
    }

    @Test("append and prepend check a nonzero cas; modes answer as memcached's")
    func modes() throws {
        let s = makeStore()
        #expect(s.ms("k", "b", .append).outcome == .notStored)
        #expect(s.ms("k", "b", .replace).outcome == .notStored)
        #expect(s.ms("k", "b", .add).outcome == .stored)
        #expect(s.ms("k", "c", .add).outcome == .notStored)
        let cas = try #require(s.item("k")?.cas)
        #expect(s.ms("k", "c", .append, cas: cas + 1).outcome == .exists)
        let r = s.ms("k", "c", .append, cas: cas)
        #expect(r.outcome == .stored && r.cas == s.item("k")?.cas)
        #expect(s.ms("k", "a", .prepend).outcome == .stored)
        #expect(s.value("k") == "abc")
    }

    @Test("recache: the first client under the TTL threshold wins; none above it")
    func recache() {
        let s = makeStore()
        _ = s.ms("k", "v", exptime: 100)
        #expect(s.mg("k", MetaGetOptions(recacheTTL: 30))?.won == false)
        clock.advance(by: 80)  // 20 s left
        #expect(s.mg("k", MetaGetOptions(recacheTTL: 30))?.won == true)
        let again = s.mg("k", MetaGetOptions(recacheTTL: 30))
        #expect(again?.won == false && again?.z == true)
        _ = s.ms("n", "v")  // no TTL: never wins
        #expect(s.mg("n", MetaGetOptions(recacheTTL: 30))?.won == false)
    }

    @Test("meta bits survive touch rewrites and copy-forward; the binary-key bit is kept per item")
    func bitsSurvive() {
        let s = makeStore(1, shards: 1)
        _ = s.ms("k", "v", binary: true)
        #expect(s.md("k", invalidate: true, ttl: 500) == .invalidated)  // rewrites the record (adds an exptime)
        let info = bytes("k").withUnsafeBytes { s.metaDebug($0) }
        #expect(info?.binaryKey == true)
        // An item in the no-TTL class is sealed and evicted with its segment: read, it is
        // copied forward with its meta bits.
        _ = s.ms("c", "v", binary: true)
        #expect(s.md("c", invalidate: true) == .invalidated)
        #expect(s.mg("c")?.won == true)
        let filler = [UInt8](repeating: 0x78, count: 100)
        for i in 0..<12_000 {
            _ = bytes("filler\(i)").withUnsafeBytes { k in filler.withUnsafeBytes { s.store(.set, key: k, flags: 0, exptime: 0, value: $0) } }
            if i % 500 == 0 { _ = s.mg("c") }  // keep it hot
        }
        let g = s.mg("c")
        #expect(g?.stale == true && g?.z == true && g?.won == false)
        #expect(bytes("c").withUnsafeBytes { s.metaDebug($0) }?.binaryKey == true)
        #expect(s.counters().copiedForward > 0)
    }

    @Test("l approximates the time since the item was written by its segment's age")
    func accessAge() {
        let s = makeStore(shards: 1)
        _ = s.ms("k", "v")
        clock.advance(by: 50)
        var age: Int64 = -1
        _ = bytes("k").withUnsafeBytes { s.metaGet($0, options: MetaGetOptions()) { _, st in age = st.lastAccessAge } }
        #expect(age == 50)
        #expect(bytes("k").withUnsafeBytes { s.metaDebug($0) }?.lastAccessAge == 50)
        var dumped: [Int64] = []
        s.dumpItems { dumped.append($0.accessAge); return true }
        #expect(dumped == [50])
        // A touch that must add an exptime rewrites the record into a fresh segment: it reads
        // as just accessed, as memcached's bump after mg ... T makes it.
        _ = bytes("k").withUnsafeBytes { s.metaGet($0, options: MetaGetOptions(touchTTL: 100)) { _, st in age = st.lastAccessAge } }
        #expect(age == 50)
        #expect(bytes("k").withUnsafeBytes { s.metaDebug($0) }?.lastAccessAge == 0)
    }

    @Test("a record for a 16-byte key and 100-byte value is still 128 bytes")
    func recordSize() {
        #expect(Record.size(keyCount: 16, valueCount: 100, flags: 0, exptime: 0, external: false) == 128)
    }

    // MARK: - Exactly once, on real threads

    /// Runs `rounds` rounds of `threads` threads calling `body` on one key at once (a spin
    /// barrier lines them up) and returns, per round, how many calls reported a win.
    func race(threads: Int, rounds: Int, setup: @escaping @Sendable (Int) -> Void,
              body: @escaping @Sendable (Int) -> Bool) -> [Int] {
        var wins: [Int] = []
        for round in 0..<rounds {
            setup(round)
            let ready = ManagedAtomic<Int>(0)
            let won = ManagedAtomic<Int>(0)
            onThreads(threads) { _ in
                ready.wrappingIncrement(ordering: .acquiringAndReleasing)
                while ready.load(ordering: .acquiring) < threads { sched_yield() }
                if body(round) { won.wrappingIncrement(ordering: .relaxed) }
            }
            wins.append(won.load(ordering: .relaxed))
        }
        return wins
    }

    @Test("racing misses with N: exactly one W per key")
    func raceVivify() {
        let s = makeStore(shards: 1)
        let wins = race(threads: 6, rounds: 150, setup: { _ in }) { round in
            s.mg("v\(round)", MetaGetOptions(vivifyTTL: 30))?.won == true
        }
        #expect(wins == Array(repeating: 1, count: 150))
    }

    @Test("racing readers of an invalidated item: exactly one W per invalidation")
    func raceInvalidate() {
        let s = makeStore(shards: 1)
        _ = s.ms("k", "v")
        // Plain mg (no N/R/T) takes the shared lock first: the win must still be one.
        let wins = race(threads: 6, rounds: 200, setup: { _ in _ = s.md("k", invalidate: true) }) { _ in
            s.mg("k")?.won == true
        }
        #expect(wins == Array(repeating: 1, count: 200))
    }

    @Test("racing recache checks: exactly one W per window")
    func raceRecache() {
        let s = makeStore(shards: 1)
        let wins = race(threads: 6, rounds: 150, setup: { round in _ = s.ms("r\(round)", "v", exptime: 10) }) { round in
            s.mg("r\(round)", MetaGetOptions(recacheTTL: 30))?.won == true
        }
        #expect(wins == Array(repeating: 1, count: 150))
    }
}
