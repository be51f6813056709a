// larder-bench: a load generator for any memcached-text-protocol server. Prints a live line
// each second on a terminal, and a final report (text or JSON). Every reply is checked; wrong
// replies are counted as errors so a broken server cannot look fast.
import ArgumentParser
import Atomics
import BenchSupport
import Histogram
#if canImport(Glibc)
import Glibc
#endif

struct BenchSettings: Sendable {
    var host: String
    var port: Int
    var pipeline: Int
    var rate: Double
    /// Connections over all threads (the open-loop rate is shared by all of them).
    var totalConnections: Int
    /// --tls: connect with TLS (memcached's and Larder's -Z).
    var tls: BenchTLS?
    /// `user:password` to authenticate each connection with first (memcached's -Y), or nil.
    var auth: String? = nil
}

struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "larder-bench",
        abstract: "Load generator for memcached-protocol servers (Larder, memcached, proxies).")

    @Option(help: "Server address (IPv4).") var host = "127.0.0.1"
    @Option(help: "Server port.") var port = 11211
    @Option(help: "Client threads.") var threads = 2
    @Option(help: "Connections in all (spread over threads).") var connections = 50
    @Option(help: "Requests sent together per connection before waiting for their replies.") var pipeline = 1
    @Option(help: "Measured seconds.") var duration = 10.0
    @Option(help: "Seconds of load before measuring.") var warmup = 1.0
    @Option(help: "Number of distinct keys.") var keys = 100_000
    @Option(help: "Key length in bytes (at least 8).") var keySize = 16
    @Option(help: "Value size in bytes, fixed (100) or a range (100-1000).") var valueSize = "100"
    @Option(help: "set:get ratio, e.g. 1:10 (0:1 for gets only).") var ratio = "1:10"
    @Option(help: "Key distribution: uniform or zipf.") var distribution = "uniform"
    @Option(help: "Zipf skew.") var zipfSkew = 0.99
    @Option(help: "Fixed request rate in all (requests/s, open loop, latency from the intended send time); 0 = as fast as possible.") var rate = 0.0
    @Flag(help: "Set every key once before the run.") var preload = false
    @Flag(help: "Print the final report as JSON.") var json = false
    @Option(help: "Label included in the JSON report.") var label = ""
    @Option(help: "Random seed.") var seed: UInt64 = 1
    @Flag(help: "Connect with TLS (a server started with -Z).") var tls = false
    @Option(help: "With --tls: check the server certificate against this CA file (unchecked without).") var tlsCa: String?
    @Option(help: "Authenticate every connection first, as memcached's -Y expects: user:password.") var auth: String?

    func validate() throws {
        guard threads >= 1, connections >= threads else { throw ValidationError("need at least one connection per thread") }
        guard pipeline >= 1 else { throw ValidationError("--pipeline must be at least 1") }
        guard parseRange(valueSize) != nil else { throw ValidationError("--value-size must be N or N-M") }
        guard parseRatio(ratio) != nil else { throw ValidationError("--ratio must be SETS:GETS") }
        guard ["uniform", "zipf"].contains(distribution) else { throw ValidationError("--distribution is uniform or zipf") }
        if let auth { guard auth.contains(":") else { throw ValidationError("--auth must be user:password") } }
    }

    func run() throws {
        let (vmin, vmax) = parseRange(valueSize)!
        let (s, g) = parseRatio(ratio)!
        let workload = Workload(keyCount: keys, keySize: keySize, valueMin: vmin, valueMax: vmax,
                                setFraction: Double(s) / Double(s + g),
                                zipfSkew: distribution == "zipf" ? zipfSkew : nil)
        let settings = BenchSettings(host: host, port: port, pipeline: pipeline, rate: rate, totalConnections: connections,
                                     tls: tls ? try BenchTLS(caFile: tlsCa) : nil, auth: auth)
        let phase = ManagedAtomic<Int>(Phase.warmup.rawValue)
        var loaders: [LoadThread] = []
        for t in 0..<threads {
            let share = connections / threads + (t < connections % threads ? 1 : 0)
            let l = LoadThread(workload: workload, options: settings, connections: share,
                               seed: seed &* 0x9E37_79B9_7F4A_7C15 &+ UInt64(t), phase: phase)
            try l.connectAll()
            loaders.append(l)
        }
        if preload {
            let per = (keys + threads - 1) / threads
            let handles = loaders.enumerated().map { (i, l) in
                spawn { l.preload(slice: (i * per)..<min(keys, (i + 1) * per)) }
            }
            for h in handles { pthread_join(h, nil) }
        }
        let handles = loaders.map { l in spawn { l.run() } }
        let live = isatty(1) == 1 && !json
        sleepSeconds(warmup)
        phase.store(Phase.measure.rawValue, ordering: .relaxed)
        let start = monotonicNanos()
        var lastOps: UInt64 = 0
        var elapsed = 0.0
        while elapsed < duration {
            sleepSeconds(min(1.0, duration - elapsed))
            elapsed = Double(monotonicNanos() - start) / 1e9
            if live {
                let ops = loaders.reduce(0) { $0 + $1.counters.ops.load(ordering: .relaxed) }
                let errs = loaders.reduce(0) { $0 + $1.counters.errors.load(ordering: .relaxed) }
                print(String(format3(elapsed)) + "s  \(ops - lastOps) ops/s  errors \(errs)")
                lastOps = ops
            }
        }
        phase.store(Phase.stop.rawValue, ordering: .relaxed)
        let seconds = Double(monotonicNanos() - start) / 1e9
        for h in handles { pthread_join(h, nil) }

        var hist = Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: .three)
        var gets = 0, sets = 0, hits = 0, misses = 0, errors = 0
        var firstError: String?
        for l in loaders {
            hist.add(l.histogram)
            gets += l.gets; sets += l.sets; hits += l.hits; misses += l.misses; errors += l.errors
            if firstError == nil { firstError = l.firstError }
        }
        let ops = gets + sets
        let us = { (p: Double) -> Double in Double(hist.valueAtPercentile(p)) / 1000 }
        let report: [(String, String)] = [
            ("label", "\"\(label)\""),
            ("ops_per_sec", format3(Double(ops) / seconds)),
            ("seconds", format3(seconds)),
            ("gets", "\(gets)"), ("sets", "\(sets)"), ("hits", "\(hits)"), ("misses", "\(misses)"),
            ("errors", "\(errors)"),
            ("p50_us", format3(us(50))), ("p90_us", format3(us(90))), ("p99_us", format3(us(99))),
            ("p999_us", format3(us(99.9))), ("max_us", format3(Double(hist.max) / 1000)),
            ("connections", "\(connections)"), ("pipeline", "\(pipeline)"), ("threads", "\(threads)"),
        ]
        if json {
            print("{" + report.map { "\"\($0.0)\": \($0.1)" }.joined(separator: ", ") + "}")
        } else {
            print("\(ops) requests in \(format3(seconds)) s: \(format3(Double(ops) / seconds)) ops/s (\(gets) gets, \(hits) hits, \(misses) misses, \(sets) sets)")
            print("latency us: p50 \(format3(us(50)))  p90 \(format3(us(90)))  p99 \(format3(us(99)))  p99.9 \(format3(us(99.9)))  max \(format3(Double(hist.max) / 1000))")
            print("errors: \(errors)" + (firstError.map { " (first: \($0))" } ?? ""))
        }
        if errors > 0 { throw ExitCode(2) }
    }
}

func parseRange(_ s: String) -> (Int, Int)? {
    let parts = s.split(separator: "-")
    if parts.count == 1, let v = Int(parts[0]), v >= 0 { return (v, v) }
    if parts.count == 2, let a = Int(parts[0]), let b = Int(parts[1]), a >= 0, b >= a { return (a, b) }
    return nil
}

func parseRatio(_ s: String) -> (Int, Int)? {
    let parts = s.split(separator: ":")
    guard parts.count == 2, let a = Int(parts[0]), let b = Int(parts[1]), a >= 0, b >= 0, a + b > 0 else { return nil }
    return (a, b)
}

func format3(_ x: Double) -> String {
    let scaled = Int((x * 1000).rounded())
    let whole = scaled / 1000
    let frac = abs(scaled % 1000)
    return "\(whole)." + String(repeating: "0", count: 3 - String(frac).count) + "\(frac)"
}

func sleepSeconds(_ s: Double) {
    if s > 0 { usleep(UInt32(s * 1_000_000)) }
}

private final class Body { let f: () -> Void; init(_ f: @escaping () -> Void) { self.f = f } }

func spawn(_ f: @escaping @Sendable () -> Void) -> pthread_t {
    var t = pthread_t()
    let arg = Unmanaged.passRetained(Body(f)).toOpaque()
    pthread_create(&t, nil, { a in
        Unmanaged<Body>.fromOpaque(a!).takeRetainedValue().f()
        return nil
    }, arg)
    return t
}
