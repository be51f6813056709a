// Segment eviction and expiry: weak index entries going stale and being cleaned, whole-segment
// expiry, S3-FIFO keeping read items, holes reclaimed by compaction.
import Testing
import BenchSupport
@testable import LarderStore

@Suite("segments: expiry, eviction, weak entries")
struct ExpiryAndEvictionTests {
    @Test("evicting a segment touches no index entry: they go stale, and the sweeper cleans them to zero")
    func staleEntries() {
        let clock = ManualClock()
        let s = Store(config: StoreConfig(memoryLimit: 1 << 20, shardCount: 1, hashSeeds: testSeeds), clock: clock)
        let value = String(repeating: "x", count: 200)
        // Entries of evicted items stay in the table, stale, until cleaned; writes that meet
        // one on their probe path clean it too, so look right after evictions begin.
        var maxStale = 0
        for i in 0..<20_000 {
            _ = s.set("k\(i)", value)
            if i % 50 == 0 { maxStale = max(maxStale, s.counters().staleSlots) }
        }
        let c = s.counters()
        #expect(c.evictions > 10_000)
        #expect(c.segmentsEvicted > 0)
        #expect(maxStale > 100)
        #expect(s.value("k0") == nil)
        #expect(s.value("k19999") == value)
        #expect(s.audit() == [])
        // The sweeper cleans what is left, a bounded number per lock hold.
        let stale = s.counters().staleSlots
        _ = s.sweep(budgetPerShard: 0)  // the first pass only notes the shard's write count
        var passes = 0
        while s.sweep(budgetPerShard: 1).visited > 0 { passes += 1 }
        #expect(passes == stale)
        #expect(s.counters().staleSlots == 0)
        #expect(s.value("k19999") == value)
        #expect(s.audit() == [])
    }

    @Test("a segment whose items have all expired is reclaimed whole, in one step")
    func segmentExpiry() {
        let clock = ManualClock()
        let s = Store(config: StoreConfig(memoryLimit: 16 << 20, shardCount: 4, hashSeeds: testSeeds), clock: clock)
        for i in 0..<5000 { _ = s.set("e\(i)", "v", exptime: 10) }
        for i in 0..<100 { _ = s.set("keep\(i)", "v") }
        for i in 0..<100 { _ = s.set("later\(i)", "v", exptime: 1000) }
        #expect(s.sweep().reclaimed == 0)
        clock.advance(by: 10)
        let r = s.sweep()
        #expect(r.reclaimed == 5000)
        let c = s.counters()
        #expect(c.segmentsExpired >= 4 && c.segmentsExpired <= 8)  // whole segments, not items
        #expect(c.currItems == 200)
        #expect(c.reclaimed == 5000)
        while s.sweep().visited > 0 {}
        #expect(s.counters().staleSlots == 0)
        #expect(s.value("keep7") == "v" && s.value("later7") == "v" && s.value("e7") == nil)
        #expect(s.audit() == [])
    }

    @Test("per-item exptime still decides hits to the second inside a segment")
    func lazyPerItem() {
        let clock = ManualClock()
        let s = Store(config: StoreConfig(memoryLimit: 16 << 20, shardCount: 1, hashSeeds: testSeeds), clock: clock)
        _ = s.set("a", "1", exptime: 5)
        _ = s.set("b", "2", exptime: 6)
        clock.advance(by: 5)
        #expect(s.value("a") == nil)
        #expect(s.value("b") == "2")
        #expect(s.counters().currItems == 1)
    }

    @Test("read items survive eviction (copied forward into main); never-read ones go, and are counted")
    func readItemsSurvive() {
        let clock = ManualClock()
        let s = Store(config: StoreConfig(memoryLimit: 2 << 20, shardCount: 1, hashSeeds: testSeeds), clock: clock)
        let value = String(repeating: "x", count: 900)
        for i in 0..<100 { _ = s.set("hot\(i)", value) }
        for round in 0..<40 {
            for i in 0..<100 { #expect(s.value("hot\(i)") == value, "hot\(i) evicted in round \(round)") }
            for j in 0..<200 { _ = s.set("cold\(round)-\(j)", value) }
        }
        let c = s.counters()
        #expect(c.evictions > 5000)
        #expect(c.evictedUnfetched == c.evictions)  // only never-read cold items were evicted
        #expect(c.copiedForward > 0)
        #expect(c.usedBytes <= 2 << 20)
        #expect(s.audit() == [])
    }

    @Test("a key evicted unread from the small FIFO and written again goes straight to main (ghost)")
    func ghost() {
        let clock = ManualClock()
        let s = Store(config: StoreConfig(memoryLimit: 1 << 20, shardCount: 1, hashSeeds: testSeeds), clock: clock)
        let value = String(repeating: "g", count: 500)
        for i in 0..<4000 { _ = s.set("g\(i)", value) }  // g0... are evicted unread
        #expect(s.value("g0") == nil)
        _ = s.set("g0", value)
        // A burst of new one-hit keys now flushes the small FIFO several times over; g0,
        // admitted to main as a ghost, outlives them without ever being read.
        for i in 0..<1500 { _ = s.set("scan\(i)", value) }
        #expect(s.value("g0") == value)
    }

    @Test("an item larger than a shard's share is refused, smaller ones evict to fit")
    func shardShare() {
        let s = Store(config: StoreConfig(memoryLimit: 4 << 20, shardCount: 4, hashSeeds: testSeeds), clock: ManualClock())
        #expect(s.shardLimit == 1 << 20)
        #expect(s.set("too-big", String(repeating: "z", count: 1 << 20)) == .outOfMemory)
        for i in 0..<20 { #expect(s.set("big\(i)", String(repeating: "z", count: 300_000)) == .stored) }
        #expect(s.counters().usedBytes <= 4 << 20)
    }

    @Test("holes left by overwrites are reclaimed: the live fraction stays at or above 3/4")
    func holesReclaimed() {
        let s = Store(config: StoreConfig(memoryLimit: 16 << 20, shardCount: 2, hashSeeds: testSeeds), clock: ManualClock())
        let keys = 40_000
        var rng = SplitMix(seed: 7)
        for round in 0..<12 {
            for _ in 0..<keys {
                let k = Int(rng.next() % UInt64(keys))
                _ = s.set("o\(k)", "\(k)-\(round)-" + String(repeating: "v", count: 80))
            }
            let c = s.counters()
            if round > 2 {
                #expect(Double(c.liveSegmentBytes) >= 0.75 * Double(c.segmentBytesWritten), "round \(round)")
            }
        }
        let c = s.counters()
        #expect(c.evictions == 0)  // everything fits: holes were compacted, nothing live evicted
        #expect(Double(c.liveSegmentBytes) >= 0.75 * Double(c.segmentBytesWritten))
        #expect(c.usedBytes < 16 << 20)
        #expect(s.audit() == [])
    }
}

extension SplitMix {
    /// The tests' seeded generator (BenchSupport's splitmix64), so a failing run can be replayed.
    init(seed: UInt64) { self.init(state: seed) }
}

@Suite("segments: mass expiry with readers")
struct MassExpiryTests {
    @Test("keys expiring together while others read them: counts stay exact, stale entries drain to 0")
    func massExpiryWithReads() {
        let clock = ManualClock()
        let s = Store(config: StoreConfig(memoryLimit: 8 << 20, shardCount: 4, hashSeeds: testSeeds), clock: clock)
        let deadline = Int32(clock.now() + 5)
        for i in 0..<30_000 { _ = s.set("exp:\(i)", "0123456789", exptime: deadline) }
        for i in 0..<2000 { _ = s.set("keep:\(i)", "v") }
        clock.advance(by: 5)
        // Reads meet expired items (lazy removal) while the sweeper empties segments.
        for i in stride(from: 0, to: 30_000, by: 3) {
            #expect(s.value("exp:\(i)") == nil)
            if i % 300 == 0 { s.sweep(budgetPerShard: 64) }
            #expect(s.value("keep:\(i % 2000)") == "v")
        }
        #expect(s.audit() == [])
        while s.sweep(budgetPerShard: 64).visited > 0 {}
        let c = s.counters()
        #expect(c.staleSlots == 0)
        #expect(c.currItems == 2000)
        #expect(s.audit() == [])
    }
}
