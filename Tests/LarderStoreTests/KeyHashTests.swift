// The key hash spreads keys evenly over shards and slots and depends on its seed. The spread
// is checked under fixed seeds (the process's own seed is random, and a bound that holds for
// most seeds would fail now and then), so a failure always replays.
import Testing
import BenchSupport
@testable import LarderStore

@Suite("key hash")
struct KeyHashTests {
    func h(_ s: String, seed: UInt64 = KeyHash.seed) -> UInt64 {
        h(Array(s.utf8), seed: seed)
    }
    func h(_ b: [UInt8], seed: UInt64 = KeyHash.seed, s0: UInt64 = KeyHash.secret0, s1: UInt64 = KeyHash.secret1) -> UInt64 {
        b.withUnsafeBytes { KeyHash.hash($0, seed: seed, s0: s0, s1: s1) }
    }

    /// Fixed seeds (seed, secret0, secret1) the distribution tests run under: secrets made the
    /// way the process makes its own, from seeded generators.
    static let seeds: [(UInt64, UInt64, UInt64)] = (0..<6).map { i in
        var g = SplitMix(seed: UInt64(1000 + i))
        return (g.next() | 1, KeyHash.makeSecret(using: &g), KeyHash.makeSecret(using: &g))
    }

    @Test("secrets are odd with four bits set in every byte")
    func secretShape() {
        var g = SplitMix(seed: 99)
        for s in (0..<1000).map({ _ in KeyHash.makeSecret(using: &g) }) + [KeyHash.secret0, KeyHash.secret1] {
            #expect(s & 1 == 1)
            for i in 0..<8 { #expect(UInt8(truncatingIfNeeded: s >> (8 * i)).nonzeroBitCount == 4, "\(s)") }
        }
    }

    @Test("a low-entropy secret spreads badly (why secrets are shaped)")
    func badSecret() {
        var slots = [Int](repeating: 0, count: 4096)
        for i in 0..<64_000 {
            slots[Int(UInt32(truncatingIfNeeded: h(key(i, length: 16), seed: 0xDEAD_BEEF, s0: 0x5555_5555_5555_5555,
                                                   s1: 0x3333_3333_3333_3333))) & 4095] += 1
        }
        #expect(chiSquare(slots, expected: 64_000 / 4096) > 4095 + 6 * (2 * 4095.0).squareRoot())
    }

    /// Key `i` of a given length: printable filler, then `i` in base 256 at the end.
    func key(_ i: Int, length: Int) -> [UInt8] {
        var k = [UInt8](repeating: 0x6B, count: length)
        var x = i
        var j = length - 1
        while x > 0 && j >= 0 { k[j] = UInt8(x & 0xFF); x >>= 8; j -= 1 }
        return k
    }

    @Test("every one-byte key hashes differently")
    func oneByte() {
        #expect(Set((0..<256).map { h([UInt8($0)]) }).count == 256)
    }

    @Test("similar keys of every length land evenly in 64 shards and 4096 slots", arguments: 0..<6)
    func spread(seedIndex: Int) {
        let (seed, s0, s1) = KeyHashTests.seeds[seedIndex]
        for length in [2, 3, 4, 7, 8, 15, 16, 17, 31, 33, 100, 250] {
            var shards = [Int](repeating: 0, count: 64)
            var slots = [Int](repeating: 0, count: 4096)
            let n = 64_000
            for i in 0..<n {
                let v = h(key(i, length: length), seed: seed, s0: s0, s1: s1)
                shards[Int(v >> 58)] += 1
                slots[Int(UInt32(truncatingIfNeeded: v)) & 4095] += 1
            }
            // Chi-square of the counts against uniform: mean = degrees of freedom, standard
            // deviation sqrt(2 df); a fair hash stays within 6 of them. (The largest slot is a
            // poor statistic: its tail makes any fixed bound fail for some seeds.)
            let shardChi = chiSquare(shards, expected: Double(n) / 64)
            let slotChi = chiSquare(slots, expected: Double(n) / 4096)
            #expect(shardChi < 63 + 6 * (2 * 63.0).squareRoot(), "seed \(seedIndex) length \(length): shard chi2 \(shardChi)")
            #expect(slotChi < 4095 + 6 * (2 * 4095.0).squareRoot(), "seed \(seedIndex) length \(length): slot chi2 \(slotChi)")
        }
    }

    func chiSquare(_ counts: [Int], expected: Double) -> Double {
        counts.reduce(0) { $0 + (Double($1) - expected) * (Double($1) - expected) / expected }
    }

    @Test("the seed changes every hash")
    func seeded() {
        var same = 0
        for i in 0..<1000 where h("key\(i)", seed: 1) == h("key\(i)", seed: 2) { same += 1 }
        #expect(same == 0)
        #expect(h("abc") == h("abc"))
        #expect(h("") != h("a"))
    }
}
