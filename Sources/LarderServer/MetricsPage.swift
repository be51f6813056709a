// Renders /metrics: MetricTable's rows (shared with `stats`), then the families built from
// the per-command counters and histograms, then the process's own figures, in the Prometheus
// text format. Every known label combination is present from the start, at 0.
import LarderMetrics
import LarderProtocol
import LarderStore
#if canImport(Glibc)
import Glibc
#endif

enum MetricsPage {
    static func render(_ ctx: ServerContext) -> String {
        var p = PrometheusText()
        let blocks = ctx.workerCounters
        func sum(_ f: CommandFamily, _ s: CommandStatus) -> UInt64 { blocks.reduce(0) { $0 &+ $1.get(f, s) } }

        MetricTable.render(ctx, to: &p)

        p.family("larder_commands_total", .counter, "Requests by command and outcome (get keys count one each).")
        for f in CommandFamily.allCases {
            for s in CommandStatus.exported(for: f) {
                p.sample("larder_commands_total", [("command", f.rawValue), ("status", s.label)], sum(f, s))
            }
        }

        p.family("larder_command_duration_seconds", .histogram, "Time from a request being parsed to its reply being queued, by command group.")
        for g in LatencyGroup.allCases {
            var buckets = [UInt64](repeating: 0, count: LatencyHistogram.bounds.count + 1)
            var total = 0.0
            for b in blocks {
                let snap = b.latency[g.rawValue].snapshot()
                for i in buckets.indices { buckets[i] &+= snap.buckets[i] }
                total += snap.sumSeconds
            }
            p.histogram("larder_command_duration_seconds", [("command", g.label)], bounds: LatencyHistogram.bounds,
                        buckets: buckets, sum: total)
        }

        let outcome = ctx.store.restoreReport.outcome.rawValue
        p.family("larder_restore_info", .gauge, "1 for what the last start found in the memory file: restored, clean_start (no -e), no_file (created), incompatible_settings or corrupt (started empty).")
        p.sample("larder_restore_info", [("outcome", outcome)], 1.0)

        processMetrics(&p, ctx)
        return p.text
    }

    static func processMetrics(_ p: inout PrometheusText, _ ctx: ServerContext) {
        var ru = rusage()
        getrusage(Int32(RUSAGE_SELF.rawValue), &ru)
        let cpu = Double(ru.ru_utime.tv_sec) + Double(ru.ru_utime.tv_usec) / 1e6
            + Double(ru.ru_stime.tv_sec) + Double(ru.ru_stime.tv_usec) / 1e6
        p.family("process_cpu_seconds_total", .counter, "Total user and system CPU time spent in seconds.")
        p.sample("process_cpu_seconds_total", [], cpu)
        let page = Double(sysconf(Int32(_SC_PAGESIZE)))
        var vsize = 0.0, rss = 0.0
        if let statm = readTextFile("/proc/self/statm") {
            let f = statm.split(separator: " ")
            if f.count >= 2 { vsize = (Double(f[0]) ?? 0) * page; rss = (Double(f[1]) ?? 0) * page }
        }
        p.family("process_resident_memory_bytes", .gauge, "Resident memory size in bytes.")
        p.sample("process_resident_memory_bytes", [], rss)
        p.family("process_virtual_memory_bytes", .gauge, "Virtual memory size in bytes.")
        p.sample("process_virtual_memory_bytes", [], vsize)
        var fds = 0
        if let d = opendir("/proc/self/fd") {
            while let e = readdir(d) {
                if e.pointee.d_name.0 != 0x2E { fds += 1 }  // skip . and ..
            }
            closedir(d)
            fds -= 1  // the descriptor opendir itself holds
        }
        p.family("process_open_fds", .gauge, "Number of open file descriptors.")
        p.sample("process_open_fds", [], Double(fds))
        var lim = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &lim)
        p.family("process_max_fds", .gauge, "Maximum number of open file descriptors.")
        p.sample("process_max_fds", [], Double(lim.rlim_cur))
        p.family("process_start_time_seconds", .gauge, "Start time of the process since unix epoch in seconds.")
        p.sample("process_start_time_seconds", [], Double(ctx.startTime))
    }
}
