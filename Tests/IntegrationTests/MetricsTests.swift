// The /metrics endpoint: format, exactness under concurrency, agreement with `stats`.
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

@Suite("metrics")
struct MetricsTests {
    @Test("/metrics serves the text format; other paths 404")
    func endpoint() throws {
        let mport = freePort()
        let s = try ServerProcess.larder(["-t", "2"], metricsPort: mport)
        defer { s.stop() }
        let r = try httpGet(port: mport, path: "/metrics")
        #expect(r.status == 200)
        #expect(r.headers.contains("Content-Type: text/plain; version=0.0.4"))
        for family in ["larder_deletes_total", "larder_commands_total", "larder_command_duration_seconds",
                       "larder_items", "larder_item_bytes", "larder_limit_bytes", "larder_evictions_total",
                       "larder_reclaimed_total", "larder_expired_unfetched_total", "larder_stale_slots",
                       "larder_connections", "larder_connections_total", "larder_connections_rejected_total",
                       "larder_read_bytes_total", "larder_written_bytes_total", "process_cpu_seconds_total",
                       "process_resident_memory_bytes", "process_open_fds", "process_start_time_seconds"] {
            #expect(r.body.contains("# TYPE \(family) "), "missing \(family)")
        }
        // Every label combination is there from the start.
        #expect(metric(r.body, #"larder_deletes_total{outcome="bad_request"}"#) == 0)
        #expect(metric(r.body, #"larder_commands_total{command="cas",status="badval"}"#) == 0)
        #expect(metric(r.body, #"larder_command_duration_seconds_count{command="incr_decr"}"#) == 0)
        #expect(try httpGet(port: mport, path: "/").status == 404)
        #expect(try httpGet(port: mport, path: "/metricsx").status == 404)
    }

    @Test("eight connections deleting in parallel are counted exactly, in /metrics and stats")
    func exactDeletes() async throws {
        let mport = freePort()
        let s = try ServerProcess.larder(["-t", "2"], metricsPort: mport)
        defer { s.stop() }
        let port = s.port
        let longKey = String(repeating: "L", count: 251)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for conn in 0..<8 {
                group.addTask {
                    let c = try TestClient(port: port)
                    var sets = ""
                    for i in 0..<500 { sets += "set c\(conn)-k\(i) 0 0 1 noreply\r\nx\r\n" }
                    try c.send(sets)
                    _ = try c.request("version\r\n")
                    // Interleave the three kinds so they race with the other connections.
                    var req = ""
                    var expected = ""
                    for i in 0..<500 {
                        req += "delete c\(conn)-k\(i)\r\n"
                        expected += "DELETED\r\n"
                        if i % 2 == 0 {
                            req += "delete absent-\(conn)-\(i)\r\n"
                            expected += "NOT_FOUND\r\n"
                        }
                        if i % 10 == 0 {
                            req += "delete \(longKey)\r\n"
                            expected += "CLIENT_ERROR bad command line format\r\n"
                        }
                    }
                    try c.send(req)
                    let got = try c.read(until: String(expected.suffix(40)))
                    #expect(got == expected)
                }
            }
            try await group.waitForAll()
        }
        let page = try httpGet(port: mport, path: "/metrics").body
        #expect(metric(page, #"larder_deletes_total{outcome="deleted"}"#) == 4000)
        #expect(metric(page, #"larder_deletes_total{outcome="not_found"}"#) == 2000)
        #expect(metric(page, #"larder_deletes_total{outcome="bad_request"}"#) == 400)
        #expect(metric(page, #"larder_commands_total{command="delete",status="hit"}"#) == 4000)
        #expect(metric(page, #"larder_command_duration_seconds_count{command="delete"}"#) == 6400)
        let st = try stats(port: port)
        #expect(st["delete_hits"] == "4000")
        #expect(st["delete_misses"] == "2000")
        #expect(st["cmd_set"] == "4000")
        // Both views agree on the rest too.
        #expect(metric(page, "larder_items") == Double(st["curr_items"]!))
        #expect(metric(page, #"larder_commands_total{command="set",status="stored"}"#) == Double(st["cmd_set"]!))
    }

    @Test("stats reset under load: /metrics keeps every count, stats counts exactly from the reset")
    func resetUnderLoad() async throws {
        let mport = freePort()
        let s = try ServerProcess.larder(["-t", "2"], metricsPort: mport)
        defer { s.stop() }
        let port = s.port
        let perConn = 3000
        try await withThrowingTaskGroup(of: Void.self) { group in
            for conn in 0..<4 {
                group.addTask {
                    let c = try TestClient(port: port)
                    for round in 0..<6 {
                        var req = ""
                        for i in 0..<(perConn / 6) { req += "set r\(conn)-\(round)-\(i) 0 0 1 noreply\r\nx\r\n" }
                        try c.send(req)
                        _ = try c.request("version\r\n")
                    }
                }
            }
            group.addTask {
                let c = try TestClient(port: port)
                for _ in 0..<200 { #expect(try c.request("stats reset\r\n") == "RESET\r\n") }
            }
            try await group.waitForAll()
        }
        let page = try httpGet(port: mport, path: "/metrics").body
        #expect(metric(page, #"larder_commands_total{command="set",status="stored"}"#) == Double(4 * perConn))
        let c = try TestClient(port: port)
        #expect(try c.request("stats reset\r\n") == "RESET\r\n")
        var req = ""
        for i in 0..<123 { req += "set after\(i) 0 0 1 noreply\r\nx\r\n" }
        try c.send(req)
        _ = try c.request("version\r\n")
        #expect(try stats(port: port)["cmd_set"] == "123")
        let after = try httpGet(port: mport, path: "/metrics").body
        #expect(metric(after, #"larder_commands_total{command="set",status="stored"}"#) == Double(4 * perConn + 123))
    }

    /// The same requests for memcached and Larder: sets, hits, misses, deletes, incr, touch,
    /// a cas, a too-large set, a flush.
    static let mixedWorkload: String = {
        var r = ""
        for i in 0..<40 { r += "set k\(i) \(i) 0 \(String(i).count)\r\n\(i)\r\n" }
        for i in 0..<60 { r += "get k\(i)\r\n" }
        for i in 0..<10 { r += "delete k\(i)\r\ndelete nothing\(i)\r\n" }
        r += "incr k20 5\r\nincr k35 70\r\nincr nothing 1\r\ndecr k21 1\r\ntouch k22 100\r\ntouch nothing 1\r\n"
        r += "gets k23\r\ncas k23 0 0 1 1\r\nx\r\nadd k24 0 0 1\r\nx\r\n"
        r += "set big 0 0 2000000\r\n" + String(repeating: "b", count: 2_000_000) + "\r\n"
        r += "mn\r\nmg k30 v\r\nflush_all 1000\r\n"
        return r
    }()

    @Test("every field memcached 1.6.18's `stats` prints after the same requests is in Larder's")
    func statsFieldsMatchMemcached() throws {
        guard TestEnv.memcachedBinary != nil else { throw TestFailure("memcached is not installed") }
        let m = try ServerProcess.memcached()
        defer { m.stop() }
        let l = try ServerProcess.larder(["-t", "2"])
        defer { l.stop() }
        for port in [m.port, l.port] {
            let c = try TestClient(port: port)
            _ = try c.request(MetricsTests.mixedWorkload + "mn\r\n", until: "OK\r\nMN\r\n")
        }
        let theirs = try stats(port: m.port)
        let ours = try stats(port: l.port)
        #expect(theirs.count > 80)
        let missing = Set(theirs.keys).subtracting(ours.keys).sorted()
        #expect(missing.isEmpty, "missing from Larder's stats: \(missing)")
        // Same requests, same counts, where both count the same thing. Not compared:
        // total_connections (memcached counts its listening sockets too) and cmd_meta
        // (memcached 1.6.18 leaves it at 0 for mg/ms/mn; Larder counts meta requests).
        for field in ["cmd_get", "cmd_set", "cmd_flush", "cmd_touch", "get_hits", "get_misses",
                      "delete_hits", "delete_misses", "incr_hits", "incr_misses", "decr_hits", "decr_misses",
                      "cas_hits", "cas_misses", "cas_badval", "touch_hits", "touch_misses",
                      "curr_items", "total_items", "auth_cmds", "auth_errors", "log_watchers", "evictions"] {
            #expect(ours[field] == theirs[field], "\(field): Larder \(ours[field] ?? "-") memcached \(theirs[field] ?? "-")")
        }
    }

    @Test("stats and /metrics agree on every counter they share after a mixed workload")
    func statsAgreeWithMetrics() throws {
        let mport = freePort()
        let s = try ServerProcess.larder(["-t", "2", "-m", "2"], metricsPort: mport)
        defer { s.stop() }
        let c = try TestClient(port: s.port)
        _ = try c.request(MetricsTests.mixedWorkload + "mn\r\n", until: "OK\r\nMN\r\n")
        // Enough writes to evict, copy forward and empty segments under -m 2.
        var batch = ""
        for i in 0..<30_000 { batch += "set e\(i) 0 0 100 noreply\r\n" + String(repeating: "v", count: 100) + "\r\n" }
        for i in stride(from: 0, to: 30_000, by: 7) { batch += "get e\(i)\r\n" }
        _ = try c.request(batch + "mn\r\n", until: "END\r\nMN\r\n")
        c.close()
        // Both views once the counts are still: no connection but the ones reading them.
        var st: [String: String] = [:]
        var page = ""
        #expect(try eventually {
            st = try stats(port: s.port)
            page = try httpGet(port: mport, path: "/metrics").body
            let again = try stats(port: s.port)
            return again["bytes_written"] != nil && st["evictions"] == again["evictions"] && st["curr_items"] == again["curr_items"]
        })
        let pairs: [(String, String)] = [
            ("delete_hits", #"larder_deletes_total{outcome="deleted"}"#),
            ("store_too_large", #"larder_store_errors_total{reason="too_large"}"#),
            ("store_no_memory", #"larder_store_errors_total{reason="out_of_memory"}"#),
            ("rejected_connections", "larder_connections_rejected_total"),
            ("evicted_clients", "larder_clients_evicted_total"),
            ("output_timeouts", "larder_clients_output_timeout_total"),
            ("limit_maxbytes", "larder_limit_bytes"),
            ("accepting_conns", "larder_accepting"),
            ("listen_disabled_num", "larder_listen_disabled_total"),
            ("threads", "larder_threads"),
            ("bytes", "larder_item_bytes"),
            ("curr_items", "larder_items"),
            ("total_items", "larder_items_total"),
            ("expired_unfetched", "larder_expired_unfetched_total"),
            ("evicted_unfetched", "larder_evicted_unfetched_total"),
            ("evictions", "larder_evictions_total"),
            ("reclaimed", "larder_reclaimed_total"),
            ("index_bytes", "larder_index_bytes"),
            ("memory_used", "larder_memory_used_bytes"),
            ("segment_size", "larder_segment_size_bytes"),
            ("segment_bytes", #"larder_segment_bytes{kind="mapped"}"#),
            ("segment_bytes_written", #"larder_segment_bytes{kind="written"}"#),
            ("segment_bytes_live", #"larder_segment_bytes{kind="live"}"#),
            ("large_value_bytes", "larder_large_value_bytes"),
            ("copied_forward", "larder_copied_forward_total"),
            ("segments_evicted", #"larder_segments_total{cause="evicted"}"#),
            ("segments_expired", #"larder_segments_total{cause="expired"}"#),
            ("auth_errors", #"larder_auth_total{outcome="failed"}"#),
        ]
        #expect((Double(st["evictions"] ?? "0") ?? 0) > 0, "the workload should evict")
        #expect(st["delete_hits"] == "10" && st["store_too_large"] == "1")
        for (stat, sample) in pairs {
            let a = Double(st[stat] ?? "x")
            let b = metric(page, sample)
            #expect(a != nil && a == b, "\(stat) = \(st[stat] ?? "-") but \(sample) = \(b.map { "\($0)" } ?? "-")")
        }
        // Sums: memcached's delete_misses is three of Larder's outcomes; cmd_set is the storage
        // requests.
        let misses = ["not_found", "expired", "cas_mismatch"].compactMap { metric(page, "larder_deletes_total{outcome=\"\($0)\"}") }.reduce(0, +)
        #expect(Double(st["delete_misses"] ?? "x") == misses)
        let stores = ["set", "add", "replace", "append", "prepend", "cas"].flatMap { f in
            ["stored", "not_stored", "badval", "hit", "miss", "error"].compactMap { metric(page, "larder_commands_total{command=\"\(f)\",status=\"\($0)\"}") }
        }.reduce(0, +)
        // memcached (and so Larder) leaves a set refused as too large out of cmd_set.
        #expect(Double(st["cmd_set"] ?? "x").map { $0 + 1 } == stores)
        // Bytes written: the /metrics page's reader is not a cache client, so only the stats
        // requests themselves separate the two; /metrics was read between two stats.
        #expect((Double(st["bytes_written"] ?? "0") ?? 0) <= (metric(page, "larder_written_bytes_total") ?? 0))
    }
}
