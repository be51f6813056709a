// Many threads hammer overlapping keys in one shard; final values and counts must be exact.
// Real threads (`onThreads`), not the cooperative pool, which has only as many threads as
// cores: the contention the tests name really happens.
import Atomics
import Testing
@testable import LarderStore
#if canImport(Glibc)
import Glibc
#endif

@Suite("store under concurrency")
struct ConcurrencyTests {
    @Test("8 threads mixing set/get/delete/incr on one shard end with exact values")
    func hammerOneShard() {
        let store = Store(config: StoreConfig(memoryLimit: 64 << 20, shardCount: 1, hashSeeds: testSeeds))
        let threads = 8
        let rounds = 5000
        _ = store.set("counter", "0")
        let totalIncrs = ManagedAtomic<Int>(0)
        onThreads(threads) { t in
                    var incrs = 0
                    var checks = 0
                    for r in 0..<rounds {
                        // Shared counter: every incr must count.
                        if case .value = store.arith("counter", incr: true, 1) { incrs += 1 }
                        // Private key: what I set is what I read, until I delete it.
                        let mine = "t\(t)-k\(r % 50)"
                        let v = "\(t):\(r)"
                        #expect(store.set(mine, v) == .stored)
                        #expect(store.value(mine) == v)
                        if r % 3 == 0 { #expect(store.del(mine)) }
                        // Shared keys: any reader sees a complete value some writer wrote.
                        let shared = "shared\(r % 7)"
                        _ = store.set(shared, String(repeating: Character(UnicodeScalar(UInt8(97 + t))), count: 64))
                        if let got = store.value(shared) {
                            #expect(got.count == 64 && Set(got).count == 1)
                            checks += 1
                        }
                    }
                    totalIncrs.wrappingIncrement(by: incrs, ordering: .relaxed)
                    #expect(checks > 0)
        }
        #expect(totalIncrs.load(ordering: .relaxed) == threads * rounds)
        #expect(store.value("counter") == "\(threads * rounds)")
        // Each thread's private keys: those with last round r where r % 3 != 0 survive.
        for t in 0..<threads {
            for k in 0..<50 {
                let lastRound = (rounds - 1) - ((rounds - 1 - k) % 50)
                let expected: String? = lastRound % 3 == 0 ? nil : "\(t):\(lastRound)"
                #expect(store.value("t\(t)-k\(k)") == expected)
            }
        }
        var sum = 0
        var n = 0
        store.forEachItem { sum += $0.charge; n += 1 }
        #expect(store.counters().itemBytes == sum)
        #expect(store.counters().currItems == n)
    }

    @Test("concurrent appends are never lost")
    func appends() {
        let store = Store(config: StoreConfig(memoryLimit: 64 << 20, shardCount: 2, hashSeeds: testSeeds))
        _ = store.set("log", "")
        onThreads(6) { _ in
            for _ in 0..<1000 { #expect(store.set("log", "x", .append) == .stored) }
        }
        #expect(store.value("log")?.count == 6000)
    }
}
