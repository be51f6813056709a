// Stress: many threads doing mixed set/get/delete/incr/append/touch under a small memory limit
// (eviction constantly running) while TTLs expire and the sweeper runs; invariants checked
// throughout and at the end.
import Testing
import BenchSupport
@testable import LarderStore

@Suite("stress")
struct StressTests {
    @Test("invariants hold under eviction, expiry and sweeping (6 real threads, seeded)")
    func mixed() {
        let clock = ManualClock()
        let limit = 1 << 20
        let store = Store(config: StoreConfig(memoryLimit: limit, shardCount: 4, hashSeeds: testSeeds), clock: clock)
        let threads = 6
        let ops = 20_000
        let keys = 800
        let seed = UInt64(0x57E5_5000)
        onThreads(threads) { t in
                    var rng = SplitMix(seed: seed &+ UInt64(t))
                    for i in 0..<ops {
                        let k = "key\(Int.random(in: 0..<keys, using: &rng))"
                        switch Int.random(in: 0..<100, using: &rng) {
                        case 0..<30:
                            // A value always names its key, so a reader can tell whose it is.
                            let pad = String(repeating: "p", count: Int.random(in: 0..<6000, using: &rng))
                            _ = store.set(k, "\(k)|\(t)|\(i)|\(pad)", exptime: Int32.random(in: 0...3, using: &rng))
                        case 30..<70:
                            if let v = store.value(k) {
                                let owner = v.split(separator: "|", maxSplits: 1).first.map(String.init)
                                #expect(owner == k || UInt64(v.trimmingCharacters(in: " ")) != nil, "\(k) held \(v.prefix(40))")
                                for piece in v.split(separator: "+").dropFirst() { #expect(piece == k, "append of \(piece) into \(k)") }
                            }
                        case 70..<78: _ = store.del(k)
                        case 78..<86: _ = store.set(k, "+\(k)", .append)
                        case 86..<92:
                            if case .value = store.arith(k, incr: true, 1) {} // non-numeric is fine
                        case 92..<96: _ = store.touchKey(k, Int32.random(in: 0...3, using: &rng))
                        default:
                            store.sweep(budgetPerShard: 32)
                        }
                        if t == 0 && i % 2000 == 0 { clock.advance(by: 1) }
                        if i % 1000 == 0 {
                            let c = store.counters()
                            #expect(c.usedBytes <= limit)
                        }
                    }
        }
        #expect(store.audit() == [])
        var sum = 0
        var n = 0
        store.forEachItem { sum += $0.charge; n += 1 }
        let c = store.counters()
        #expect(c.itemBytes == sum)
        #expect(c.currItems == n)
        #expect(c.evictions > 0)
        #expect(c.usedBytes <= limit)
        // After everything expires and the sweeper passes, nothing stale or timed is left.
        clock.advance(by: 10)
        while store.sweep(budgetPerShard: 64).visited > 0 {}
        let after = store.counters()
        #expect(store.audit() == [])
        #expect(after.staleSlots == 0)
        // Timed items left in segments shared with untimed ones (touch, copy-forward) wait for
        // eviction, but none can be read.
        var timed: [String] = []
        store.forEachItem { if $0.exptime != 0 { timed.append(String(decoding: $0.key, as: UTF8.self)) } }
        for k in timed { #expect(store.value(k) == nil) }
        #expect(after.currItems > 0)  // the ones stored without a TTL
    }
}

extension String {
    func trimmingCharacters(in set: String) -> String {
        var s = Substring(self)
        while let f = s.first, set.contains(f) { s = s.dropFirst() }
        while let l = s.last, set.contains(l) { s = s.dropLast() }
        return String(s)
    }
}
