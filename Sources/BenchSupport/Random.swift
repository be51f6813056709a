// Deterministic randomness shared by the benchmark tools (larder-bench, larder-lru-quality):
// a small fast generator and a Zipf sampler over ranks.

@_silgen_name("pow") private func cPow(_ x: Double, _ y: Double) -> Double

/// splitmix64: small, fast, deterministic per seed.
public struct SplitMix: RandomNumberGenerator, Sendable {
    public var state: UInt64
    public init(state: UInt64) { self.state = state }

    @inlinable @inline(__always)
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A uniform double in [0, 1).
    @inlinable @inline(__always)
    public mutating func unit() -> Double { Double(next() >> 11) / Double(1 << 53) }
}

/// Zipf(s) over ranks 0..<n (rank 0 the most popular), by inverse CDF with binary search.
public struct Zipf: Sendable {
    public let cdf: [Double]

    public init(n: Int, s: Double) {
        var c = [Double](repeating: 0, count: n)
        var sum = 0.0
        for i in 0..<n {
            sum += 1.0 / cPow(Double(i + 1), s)
            c[i] = sum
        }
        for i in 0..<n { c[i] /= sum }
        cdf = c
    }

    @inlinable @inline(__always)
    public func sample(_ rng: inout SplitMix) -> Int {
        let u = rng.unit()
        var lo = 0, hi = cdf.count - 1
        while lo < hi {
            let mid = (lo + hi) >> 1
            if cdf[mid] < u { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }
}
