// Per-worker latency histograms with fixed Prometheus buckets. Like the counters, each has
// one writer (its worker thread): an observation is a few relaxed loads and stores, and a
// scrape sums the workers' buckets.
import Atomics

/// Command groups that get their own latency histogram.
public enum LatencyGroup: Int, CaseIterable, Sendable {
    case get, set, delete, incrDecr, other

    public var label: String {
        switch self {
        case .get: "get"
        case .set: "set"
        case .delete: "delete"
        case .incrDecr: "incr_decr"
        case .other: "other"
        }
    }
}

public final class LatencyHistogram: @unchecked Sendable {
    // @unchecked Sendable: storage is only touched through atomic loads/stores; one writer.
    /// Upper bounds in seconds (the `le` labels), from 1 us to 1 s.
    public static let bounds: [Double] = [
        0.000001, 0.0000025, 0.000005, 0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005,
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
    ]
    /// The same bounds in nanoseconds, for the hot path: a plain pointer owned by each
    /// histogram, so an observation touches no array (no retain/release, no bounds checks).
    private let boundsNanos: UnsafeMutablePointer<UInt64>
    private static let boundCount = bounds.count
    // Layout: one count per bucket (not cumulative), then +Inf, then the sum in ns.
    private let storage: UnsafeMutablePointer<UnsafeAtomic<UInt64>.Storage>
    private static let slots = bounds.count + 2

    public init() {
        storage = .allocate(capacity: LatencyHistogram.slots)
        storage.initialize(repeating: .init(0), count: LatencyHistogram.slots)
        boundsNanos = .allocate(capacity: LatencyHistogram.bounds.count)
        for (i, b) in LatencyHistogram.bounds.enumerated() { boundsNanos[i] = UInt64((b * 1e9).rounded()) }
    }
    deinit {
        storage.deallocate()
        boundsNanos.deallocate()
    }

    /// Records one duration. Owning thread only.
    @inline(__always)
    public func observe(nanoseconds ns: UInt64) {
        var i = 0
        let n = LatencyHistogram.boundCount
        while i < n && ns > boundsNanos[i] { i += 1 }
        bump(i, 1)
        bump(LatencyHistogram.slots - 1, ns)
    }

    @inline(__always)
    private func bump(_ i: Int, _ n: UInt64) {
        let a = UnsafeAtomic<UInt64>(at: storage + i)
        a.store(a.load(ordering: .relaxed) &+ n, ordering: .relaxed)
    }

    /// Non-cumulative bucket counts (last one is +Inf) and the sum in seconds.
    public func snapshot() -> (buckets: [UInt64], sumSeconds: Double) {
        var buckets: [UInt64] = []
        for i in 0..<(LatencyHistogram.slots - 1) {
            buckets.append(UnsafeAtomic<UInt64>(at: storage + i).load(ordering: .relaxed))
        }
        let sum = UnsafeAtomic<UInt64>(at: storage + LatencyHistogram.slots - 1).load(ordering: .relaxed)
        return (buckets, Double(sum) / 1e9)
    }
}
