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
}
