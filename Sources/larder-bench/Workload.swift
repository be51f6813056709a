// What larder-bench sends: key naming, value contents (derived from the key so replies can be
// checked), key choice (uniform or Zipf), and the set:get mix.

/// splitmix64: small, fast, deterministic per thread.
struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func unit() -> Double { Double(next() >> 11) / Double(1 << 53) }
}

@_silgen_name("pow") func cPow(_ x: Double, _ y: Double) -> Double

/// The key space and how keys are drawn from it.
final class Workload: Sendable {
    let keyCount: Int
    let keySize: Int
    let valueMin: Int
    let valueMax: Int
    /// Probability that a request is a set.
    let setFraction: Double
    /// Cumulative distribution for Zipf; empty for uniform.
    let cdf: [Double]

    init(keyCount: Int, keySize: Int, valueMin: Int, valueMax: Int, setFraction: Double, zipfSkew: Double?) {
        self.keyCount = keyCount
        self.keySize = max(keySize, 8)
        self.valueMin = valueMin
        self.valueMax = valueMax
        self.setFraction = setFraction
        if let s = zipfSkew {
            var c = [Double](repeating: 0, count: keyCount)
            var sum = 0.0
            for i in 0..<keyCount {
                sum += 1.0 / cPow(Double(i + 1), s)
                c[i] = sum
            }
            for i in 0..<keyCount { c[i] /= sum }
            cdf = c
        } else {
            cdf = []
        }
    }

    @inline(__always)
    func nextKey(_ rng: inout SplitMix) -> Int {
        if cdf.isEmpty { return Int(rng.next() % UInt64(keyCount)) }
        let u = rng.unit()
        var lo = 0, hi = cdf.count - 1
        while lo < hi {
            let mid = (lo + hi) >> 1
            if cdf[mid] < u { lo = mid + 1 } else { hi = mid }
        }
        // Scatter ranks over ids so the hottest keys are not neighbours.
        return Int((UInt64(lo) &* 0x9E37_79B9) % UInt64(keyCount))
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
