// Active expiry through weak handles, stale-slot accounting, and CLOCK eviction.
import Testing
@testable import LarderStore

@Suite("expiry index and eviction")
struct ExpiryAndEvictionTests {
    @Test("delete, overwrite and touch leave stale handles that the sweeper drops to zero")
    func staleSlots() {
        let clock = ManualClock()
        let s = Store(config: StoreConfig(memoryLimit: 16 << 20, shardCount: 4), clock: clock)
        for i in 0..<100 { _ = s.set("k\(i)", "v", exptime: 1000) }
        #expect(s.counters().staleSlots == 0)
        #expect(s.counters().expiryIndexEntries == 100)
        for i in 0..<30 { _ = s.del("k\(i)") }                       // 30 stale
        for i in 30..<50 { _ = s.set("k\(i)", "w", exptime: 500) }   // 20 stale, 20 new handles
        for i in 50..<60 { _ = s.set("k\(i)", "w") }                 // 10 stale
        for i in 60..<65 { _ = s.touchKey("k\(i)", 0) }              // still indexed until swept
        for i in 0..<5 { _ = s.set("n\(i)", "v") }
        for i in 0..<5 { _ = s.touchKey("n\(i)", 100) }              // 5 new handles
        let c = s.counters()
        #expect(c.staleSlots == 60)
        #expect(c.expiryIndexEntries == 125)
        // Enough passes for the cursor to go round every shard's handles several times (the
        // handles of items touched to 0 are not stale but are dropped when visited).
        for _ in 0..<100 { s.sweep(budgetPerShard: 7) }
        #expect(s.counters().staleSlots == 0)
        // 40 timed originals + 20 re-set + 5 touched remain indexed; the 5 touched to 0 left.
        #expect(s.counters().expiryIndexEntries == 40 - 5 + 20 + 5)
        #expect(s.counters().currItems == 75)
    }

    @Test("the sweeper reclaims expired items nobody reads, in bounded batches")
    func reclaim() {
        let clock = ManualClock()
        let s = Store(config: StoreConfig(memoryLimit: 16 << 20, shardCount: 8), clock: clock)
        for i in 0..<1000 { _ = s.set("e\(i)", "v", exptime: 10) }
        for i in 0..<10 { _ = s.value("e\(i)") }  // fetched ones are not "unfetched"
        for i in 0..<100 { _ = s.set("keep\(i)", "v") }
        #expect(s.sweep(budgetPerShard: 1000).reclaimed == 0)
        clock.advance(by: 10)
        let first = s.sweep(budgetPerShard: 10)
        #expect(first.visited <= 80 && first.reclaimed == first.visited)
        var total = first.reclaimed
        while true {
            let r = s.sweep(budgetPerShard: 10)
            if r.visited == 0 { break }
            total += r.reclaimed
        }
        #expect(total == 1000)
        let c = s.counters()
        #expect(c.currItems == 100)
        #expect(c.reclaimed == 1000)
        #expect(c.expiredUnfetched == 990)
        #expect(c.staleSlots == 0 && c.expiryIndexEntries == 0)
    }

    @Test("recently used items survive eviction; cold ones go, and are counted")
    func clockKeepsHotItems() {
        let clock = ManualClock()
        let s = Store(config: StoreConfig(memoryLimit: 2 << 20, shardCount: 1), clock: clock)
        let value = String(repeating: "x", count: 900)
        for i in 0..<100 { _ = s.set("hot\(i)", value) }
        for round in 0..<40 {
            for i in 0..<100 { #expect(s.value("hot\(i)") == value, "hot\(i) evicted in round \(round)") }
            for j in 0..<200 { _ = s.set("cold\(round)-\(j)", value) }
        }
        let c = s.counters()
        #expect(c.evictions > 5000)
        #expect(c.evictedUnfetched == c.evictions)  // only never-read cold items were evicted
        #expect(c.itemBytes + c.indexBytes <= 2 << 20)
    }

    @Test("an item larger than a shard's share is refused, smaller ones evict to fit")
    func shardShare() {
        let s = Store(config: StoreConfig(memoryLimit: 4 << 20, shardCount: 4), clock: ManualClock())
        #expect(s.shardLimit == 1 << 20)
        #expect(s.set("too-big", String(repeating: "z", count: 1 << 20)) == .outOfMemory)
        for i in 0..<20 { #expect(s.set("big\(i)", String(repeating: "z", count: 300_000)) == .stored) }
    }
}
