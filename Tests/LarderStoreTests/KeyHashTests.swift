// The key hash spreads keys evenly over shards and slots and depends on its seed.
import Testing
@testable import LarderStore

@Suite("key hash")
struct KeyHashTests {
    func h(_ s: String, seed: UInt64 = KeyHash.seed) -> UInt64 {
        h(Array(s.utf8), seed: seed)
    }
    func h(_ b: [UInt8], seed: UInt64 = KeyHash.seed) -> UInt64 {
        b.withUnsafeBytes { KeyHash.hash($0, seed: seed, s0: KeyHash.secret0, s1: KeyHash.secret1) }
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

    @Test("similar keys of every length land evenly in 64 shards and 4096 slots")
    func spread() {
        for length in [2, 3, 4, 7, 8, 15, 16, 17, 31, 33, 100, 250] {
            var shards = [Int](repeating: 0, count: 64)
            var slots = [Int](repeating: 0, count: 4096)
            let n = 64_000
            for i in 0..<n {
                let v = h(key(i, length: length))
                shards[Int(v >> 58)] += 1
                slots[Int(UInt32(truncatingIfNeeded: v)) & 4095] += 1
            }
            // Expected 1000 a shard; a fair hash stays within a few standard deviations.
            #expect(shards.min()! > 850 && shards.max()! < 1150, "length \(length): \(shards.min()!)...\(shards.max()!)")
            #expect(slots.max()! < 40, "length \(length): slot max \(slots.max()!)")
        }
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
