// Counters exact across `stats reset` under load, the Prometheus text writer (escaping,
// cumulative histogram buckets) and the latency histogram's bucket edges.
import Atomics
import Testing
@testable import LarderMetrics
#if canImport(Glibc)
import Glibc
#endif

/// Runs `body(i)` on `n` real threads and waits for all of them.
private func onThreads(_ n: Int, _ body: @escaping @Sendable (Int) -> Void) {
    final class Box { let run: () -> Void; init(_ r: @escaping () -> Void) { run = r } }
    var tids: [pthread_t] = []
    for i in 0..<n {
        var tid = pthread_t()
        let box = Unmanaged.passRetained(Box { body(i) }).toOpaque()
        precondition(pthread_create(&tid, nil, { arg in
            Unmanaged<Box>.fromOpaque(arg!).takeRetainedValue().run()
            return nil
        }, box) == 0)
        tids.append(tid)
    }
    for t in tids { pthread_join(t, nil) }
}

@Suite("counters")
struct CounterTests {
    @Test("resets racing the owner's increments lose and undo nothing")
    func resetUnderLoad() {
        let block = CounterBlock()
        let adds = 3_000_000
        let done = ManagedAtomic<Bool>(false)
        let resets = ManagedAtomic<Int>(0)
        let sawBackwards = ManagedAtomic<Int>(0)
        onThreads(2) { t in
            if t == 0 {
                for _ in 0..<adds {
                    block.add(.cmdGet)
                    block.add(.get, .hit)
                }
                done.store(true, ordering: .releasing)
            } else {
                var last: UInt64 = 0
                while !done.load(ordering: .acquiring) {
                    block.reset()
                    resets.wrappingIncrement(ordering: .relaxed)
                    // The monotonic count never goes back, whatever the resets do.
                    let now = block.get(.cmdGet)
                    if now < last { sawBackwards.wrappingIncrement(ordering: .relaxed) }
                    last = now
                }
            }
        }
        #expect(resets.load(ordering: .relaxed) > 100)
        #expect(sawBackwards.load(ordering: .relaxed) == 0)
        // Every increment is there: none was overwritten by a reset.
        #expect(block.get(.cmdGet) == UInt64(adds))
        #expect(block.get(.get, .hit) == UInt64(adds))
        // Since the last reset: no more than the total, and exact once things are quiet.
        #expect(block.sinceReset(.cmdGet) <= UInt64(adds))
        block.reset()
        #expect(block.sinceReset(.cmdGet) == 0)
        for _ in 0..<7 { block.add(.cmdGet) }
        #expect(block.sinceReset(.cmdGet) == 7)
        #expect(block.get(.cmdGet) == UInt64(adds) + 7)
    }
}

@Suite("Prometheus text")
struct PrometheusTextTests {
    @Test("label values escape backslash, quote and newline; help escapes backslash and newline")
    func escaping() {
        var p = PrometheusText()
        p.family("x_total", .counter, "a \\ b\nc")
        p.sample("x_total", [("k", "a\\b\"c\nd")], UInt64(3))
        #expect(p.text == "# HELP x_total a \\\\ b\\nc\n# TYPE x_total counter\nx_total{k=\"a\\\\b\\\"c\\nd\"} 3\n")
    }

    @Test("histogram buckets are cumulative, with +Inf, sum and count")
    func histogram() {
        var p = PrometheusText()
        p.histogram("h", [("c", "get")], bounds: [0.001, 0.01], buckets: [2, 3, 4], sum: 0.5)
        #expect(p.text == """
            h_bucket{c="get",le="0.001"} 2
            h_bucket{c="get",le="0.01"} 5
            h_bucket{c="get",le="+Inf"} 9
            h_sum{c="get"} 0.5
            h_count{c="get"} 9

            """)
    }

    @Test("latency observations land in the bucket whose bound is the first at or above them")
    func latencyBuckets() {
        let h = LatencyHistogram()
        h.observe(nanoseconds: 1_000)        // exactly 1 us: the first bucket
        h.observe(nanoseconds: 1_001)        // just above: the second
        h.observe(nanoseconds: 2_000_000_000) // 2 s: +Inf
        let (buckets, sum) = h.snapshot()
        #expect(buckets.count == LatencyHistogram.bounds.count + 1)
        #expect(buckets[0] == 1 && buckets[1] == 1 && buckets.last == 1)
        #expect(buckets.reduce(0, +) == 3)
        #expect(abs(sum - 2.000002001) < 1e-9)
    }
}
