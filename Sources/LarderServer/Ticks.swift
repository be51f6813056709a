// A cheap clock for per-command latency: the CPU's timestamp counter, calibrated once against
// CLOCK_MONOTONIC. Where there is no TSC (or it does not tick), it falls back to
// clock_gettime. Accuracy of a few percent is plenty for latency histograms.
import CLibevent
#if canImport(Glibc)
import Glibc
#endif

enum Ticks {
    /// Nanoseconds per tick; 0 means "use the monotonic clock".
    static let nanosPerTick: Double = calibrate()

    private static func calibrate() -> Double {
        let t0 = larder_ticks()
        let n0 = monotonicNanos()
        usleep(20_000)
        let t1 = larder_ticks()
        let n1 = monotonicNanos()
        guard t1 > t0, n1 > n0 else { return 0 }
        return Double(n1 - n0) / Double(t1 - t0)
    }

    /// The current tick count (nanoseconds when there is no TSC). Callers on the hot path
    /// read `nanosPerTick` once and pass it in, so the per-command cost is one `rdtsc`.
    @inline(__always)
    static func now(_ nanosPerTick: Double) -> UInt64 {
        nanosPerTick > 0 ? larder_ticks() : monotonicNanos()
    }

    /// Converts a difference of `now` values to nanoseconds.
    @inline(__always)
    static func nanoseconds(_ ticks: UInt64, _ nanosPerTick: Double) -> UInt64 {
        nanosPerTick > 0 ? UInt64(Double(ticks) * nanosPerTick) : ticks
    }
}
