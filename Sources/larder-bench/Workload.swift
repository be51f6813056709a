// What larder-bench sends: key naming, value contents (derived from the key so replies can be
// checked), key choice (uniform or Zipf), and the set:get mix.
import BenchSupport

/// The key space and how keys are drawn from it.
final class Workload: Sendable {
    let keyCount: Int
    let keySize: Int
    let valueMin: Int
    let valueMax: Int
    /// Probability that a request is a set.
    let setFraction: Double
    /// Zipf over ranks; nil for uniform.
    let zipf: Zipf?

    init(keyCount: Int, keySize: Int, valueMin: Int, valueMax: Int, setFraction: Double, zipfSkew: Double?) {
        self.keyCount = keyCount
        self.keySize = max(keySize, 8)
        self.valueMin = valueMin
        self.valueMax = valueMax
        self.setFraction = setFraction
        zipf = zipfSkew.map { Zipf(n: keyCount, s: $0) }
    }

    @inline(__always)
    func nextKey(_ rng: inout SplitMix) -> Int {
        guard let zipf else { return Int(rng.next() % UInt64(keyCount)) }
        // Scatter ranks over ids so the hottest keys are not neighbours.
        return Int((UInt64(zipf.sample(&rng)) &* 0x9E37_79B9) % UInt64(keyCount))
    }

    @inline(__always)
    func valueLength(_ rng: inout SplitMix) -> Int {
        valueMin == valueMax ? valueMin : valueMin + Int(rng.next() % UInt64(valueMax - valueMin + 1))
    }

    /// Appends the key for `id`: "k" then the id in decimal, zero-padded to `keySize`.
    @inline(__always)
    func appendKey(_ id: Int, to out: inout [UInt8]) {
        out.append(0x6B)
        var digits = 0
        var x = id
        repeat { digits += 1; x /= 10 } while x > 0
        for _ in 0..<max(0, keySize - 1 - digits) { out.append(0x30) }
        let start = out.count
        x = id
        for _ in 0..<digits { out.append(0) }
        var i = out.count - 1
        repeat {
            out[i] = 0x30 &+ UInt8(x % 10)
            x /= 10
            i -= 1
        } while i >= start
    }

    /// Byte `i` of any value stored under key `id` (lets a reader verify what it got).
    @inline(__always)
    static func valueByte(_ id: Int, _ i: Int) -> UInt8 {
        0x30 &+ UInt8(truncatingIfNeeded: (id &* 31 &+ i) & 0x3F)
    }
}
