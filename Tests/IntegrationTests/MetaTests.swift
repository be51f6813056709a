// Meta commands and admin commands against the real binary over sockets: stampede
// protection raced by many connections (exactly one W per miss / invalidation / recache
// window), meta requests counted in `stats` and /metrics the way memcached counts them, and
// the admin commands whose output the differential test cannot compare (dumps list
// memcached's own items; cache_memlimit really evicts; shutdown needs -A).
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

@Suite("meta and admin over sockets", .serialized)
struct MetaTests {
    /// `n` connections each send `request` at (nearly) the same moment and read one reply
    /// line ending in `\r\n` (plus a value line when `value`); returns the reply lines.
    func raceReplies(port: Int, connections n: Int, request: String, valueLines: Int) throws -> [String] {
        let clients = try (0..<n).map { _ in try TestClient(port: port) }
        defer { for c in clients { c.close() } }
        for c in clients { try c.send(request) }
        return try clients.map { c in
            // A read may return several lines at once: read until all of them are in.
            var s = try c.read(until: "\r\n")
            while s.components(separatedBy: "\r\n").count - 1 < 1 + valueLines { s += try c.read(until: "\r\n") }
            return s
        }
    }

    @Test("16 connections missing with N: one W, the rest Z, every round")
    func stampedeVivify() throws {
        let s = try ServerProcess.larder(["-t", "4"])
        defer { s.stop() }
        for round in 0..<25 {
            let replies = try raceReplies(port: s.port, connections: 16, request: "mg key\(round) N30 v\r\n", valueLines: 1)
            let w = replies.filter { $0.hasPrefix("VA 0 W\r\n") }.count
            let z = replies.filter { $0.hasPrefix("VA 0 Z\r\n") }.count
            #expect(w == 1 && z == 15, "round \(round): \(replies)")
        }
    }

    @Test("16 connections reading an invalidated item: one W per md I")
    func stampedeInvalidate() throws {
        let s = try ServerProcess.larder(["-t", "4"])
        defer { s.stop() }
        let c = try TestClient(port: s.port)
        #expect(try c.request("ms k 1\r\nv\r\n") == "HD\r\n")
        for round in 0..<25 {
            #expect(try c.request("md k I\r\n") == "HD\r\n")
            let replies = try raceReplies(port: s.port, connections: 16, request: "mg k v\r\n", valueLines: 1)
            let w = replies.filter { $0.hasPrefix("VA 1 X W\r\n") }.count
            let z = replies.filter { $0.hasPrefix("VA 1 Z X\r\n") }.count
            #expect(w == 1 && z == 15, "round \(round): \(replies)")
        }
    }

    @Test("16 connections with R under the remaining TTL: one W per window")
    func stampedeRecache() throws {
        let s = try ServerProcess.larder(["-t", "4"])
        defer { s.stop() }
        let c = try TestClient(port: s.port)
        for round in 0..<25 {
            #expect(try c.request("ms r\(round) 1 T10\r\nv\r\n") == "HD\r\n")
            let replies = try raceReplies(port: s.port, connections: 16, request: "mg r\(round) R30 v\r\n", valueLines: 1)
            let w = replies.filter { $0.hasPrefix("VA 1 W\r\n") }.count
            let z = replies.filter { $0.hasPrefix("VA 1 Z\r\n") }.count
            #expect(w == 1 && z == 15, "round \(round): \(replies)")
        }
    }

    @Test("meta requests count in stats and /metrics as memcached counts them")
    func counted() throws {
        let mport = freePort()
        let s = try ServerProcess.larder(["-t", "2"], metricsPort: mport)
        defer { s.stop() }
        let c = try TestClient(port: s.port)
        try c.send("ms a 1\r\nx\r\nmg a v\r\nmg b v\r\nmg a T10\r\nmg zz T10\r\nmd a\r\nmd a\r\nms b 1\r\nx\r\nmd b C1\r\nmd b I\r\nma n\r\nma n N0 J1\r\nma n\r\nma n MD\r\nmn\r\n")
        _ = try c.read(until: "MN\r\n")
        let stats = try c.request("stats\r\n", until: "END\r\n")
        func stat(_ n: String) -> String? {
            stats.split(separator: "\r\n").first { $0.hasPrefix("STAT \(n) ") }.map { String($0.split(separator: " ")[2]) }
        }
        #expect(stat("cmd_get") == "2" && stat("get_hits") == "1" && stat("get_misses") == "1")
        #expect(stat("cmd_touch") == "2" && stat("touch_hits") == "1" && stat("touch_misses") == "1")
        #expect(stat("cmd_set") == "2")
        #expect(stat("delete_hits") == "1" && stat("delete_misses") == "2")
        #expect(stat("incr_misses") == "1" && stat("incr_hits") == "1" && stat("decr_hits") == "1")
        let page = try httpGet(port: mport, path: "/metrics").body
        #expect(metric(page, #"larder_deletes_total{outcome="deleted"}"#) == 1)
        #expect(metric(page, #"larder_deletes_total{outcome="not_found"}"#) == 1)
        #expect(metric(page, #"larder_deletes_total{outcome="cas_mismatch"}"#) == 1)
        #expect(metric(page, #"larder_deletes_total{outcome="invalidated"}"#) == 1)
        #expect(metric(page, #"larder_commands_total{command="mg",status="hit"}"#) == 2)
        #expect(metric(page, #"larder_commands_total{command="mg",status="miss"}"#) == 2)
        #expect(metric(page, #"larder_commands_total{command="mn",status="ok"}"#) == 1)
    }

    @Test("cache_memlimit shrinks the store (evicting) and is reported; it cannot grow past -m")
    func memlimit() throws {
        let s = try ServerProcess.larder(["-t", "2", "-m", "64"])
        defer { s.stop() }
        let c = try TestClient(port: s.port)
        let value = String(repeating: "v", count: 1000)
        var batch = ""
        for i in 0..<40_000 { batch += "ms k\(i) 1000 q\r\n\(value)\r\n" }
        try c.send(batch + "mn\r\n")
        _ = try c.read(until: "MN\r\n", timeout: 60)
        func stat(_ n: String) throws -> Int {
            let st = try c.request("stats\r\n", until: "END\r\n")
            return Int(st.split(separator: "\r\n").first { $0.hasPrefix("STAT \(n) ") }!.split(separator: " ")[2])!
        }
        #expect(try stat("memory_used") > 32 << 20)
        #expect(try c.request("cache_memlimit 16\r\n") == "OK\r\n")
        #expect(try stat("limit_maxbytes") == 16 << 20)
        #expect(try stat("memory_used") <= 17 << 20)
        #expect(try stat("evictions") > 0)
        #expect(try c.request("cache_memlimit 128\r\n") == "MEMLIMIT_ADJUST_FAILED out of bounds or unable to adjust\r\n")
        #expect(try c.request("cache_memlimit 64\r\n") == "OK\r\n")
        #expect(try stat("limit_maxbytes") == 64 << 20)
    }

    @Test("stats cachedump and lru_crawler metadump list Larder's items in memcached's format")
    func dumps() throws {
        let s = try ServerProcess.larder(["-t", "2"])
        defer { s.stop() }
        let c = try TestClient(port: s.port)
        #expect(try c.request("set a 0 0 1\r\nx\r\n") == "STORED\r\n")
        #expect(try c.request("set b%c 5 2000000000 2\r\nxy\r\n") == "STORED\r\n")
        _ = try c.request("get a\r\n", until: "END\r\n")
        let dump = try c.request("stats cachedump 1 0\r\n", until: "END\r\n")
        #expect(Set(dump.split(separator: "\r\n")) == ["ITEM a [1 b; 0 s]", "ITEM b%c [2 b; 2000000000 s]", "END"])
        #expect(try c.request("stats cachedump 1 1\r\n", until: "END\r\n").split(separator: "\r\n").count == 2)
        #expect(try c.request("stats cachedump 2 0\r\n", until: "END\r\n") == "END\r\n")
        let meta = try c.request("lru_crawler metadump all\r\n", until: "END\r\n")
        let lines = meta.split(separator: "\n").map { $0.replacingOccurrences(of: #"la=\d+"#, with: "la=T", options: .regularExpression) }
        #expect(Set(lines) == ["key=a exp=-1 la=T cas=\(casOf(c, "a")) fetch=yes cls=1 size=61",
                               "key=b%25c exp=2000000000 la=T cas=\(casOf(c, "b%c")) fetch=no cls=1 size=68", "END\r\n"])
    }

    func casOf(_ c: TestClient, _ key: String) -> String {
        let r = (try? c.request("me \(key)\r\n")) ?? ""
        return r.split(separator: " ").first { $0.hasPrefix("cas=") }.map { String($0.dropFirst(4)) } ?? "?"
    }

    @Test("shutdown: refused without -A; with -A it stops the server")
    func shutdown() throws {
        let off = try ServerProcess.larder(["-t", "1"])
        defer { off.stop() }
        #expect(try TestClient(port: off.port).request("shutdown\r\n") == "ERROR: shutdown not enabled\r\n")
        let on = try ServerProcess.larder(["-t", "1", "-A"])
        let c = try TestClient(port: on.port)
        #expect(try c.request("shutdown now\r\n") == "CLIENT_ERROR invalid shutdown mode\r\n")
        try c.send("shutdown\r\n")
        #expect(try c.readToEOF().isEmpty)
        #expect(eventually { !on.process.isRunning })
        #expect(on.process.terminationStatus == 0)
    }

    @Test("watch streams fetchers, mutations and deletions in memcached's line format")
    func watchLines() throws {
        let s = try ServerProcess.larder(["-t", "2"])
        defer { s.stop() }
        let w = try TestClient(port: s.port)
        #expect(try w.request("watch fetchers mutations deletions\r\n") == "OK\r\n")
        let c = try TestClient(port: s.port)
        _ = try c.request("set wa 0 0 1\r\nx\r\nget wa wb\r\ndelete wa\r\ndelete wa\r\nms wc 1 T30\r\ny\r\nmd wc C1\r\nmd wc I\r\nmn\r\n", until: "MN\r\n")
        var text = ""
        while !text.contains("status=invalidated") { text += try w.read(until: "\n", timeout: 10) }
        let lines = text.split(separator: "\n").map {
            $0.replacingOccurrences(of: #"^ts=\d+\.\d{6} gid=\d+ "#, with: "", options: .regularExpression)
              .replacingOccurrences(of: #"cfd=\d+"#, with: "cfd=N", options: .regularExpression)
        }
        #expect(lines == [
            "type=item_store key=wa status=stored cmd=set ttl=0 clsid=1 cfd=N size=1",
            "type=item_get key=wa status=found clsid=1 cfd=N size=1",
            "type=item_get key=wb status=not_found clsid=0 cfd=N size=0",
            "type=item_delete key=wa status=deleted cmd=delete cfd=N",
            "type=item_delete key=wa status=not_found cmd=delete cfd=N",
            "type=item_store key=wc status=stored cmd=set ttl=30 clsid=1 cfd=N size=1",
            "type=item_delete key=wc status=cas_mismatch cmd=md cfd=N",
            "type=item_delete key=wc status=invalidated cmd=md cfd=N",
        ])
        // A watcher refuses to be pipelined behind other replies, as memcached's does.
        let p = try TestClient(port: s.port)
        try p.send("mn\r\nwatch\r\n")
        #expect(try p.read(until: "watch\r\n") == "MN\r\nERROR cannot pipeline other commands before watch\r\n")
    }

    @Test("a watcher that does not read loses lines, is told how many, and never slows the workers")
    func watchSkips() throws {
        let s = try ServerProcess.larder(["-t", "2"])
        defer { s.stop() }
        let w = try TestClient(port: s.port, receiveBuffer: 4096)
        #expect(try w.request("watch mutations\r\n") == "OK\r\n")
        let c = try TestClient(port: s.port)
        var batch = ""
        for i in 0..<60_000 { batch += "ms key\(i) 1 q\r\nx\r\n" }
        let start = Date()
        try c.send(batch + "mn\r\n")
        _ = try c.read(until: "MN\r\n", timeout: 60)
        #expect(Date().timeIntervalSince(start) < 30)
        // Now read what the watcher kept: some lines, then a skipped count.
        var text = ""
        let deadline = Date().addingTimeInterval(10)
        while !text.contains("skipped=") && Date() < deadline {
            text += (try? w.read(until: "\n", timeout: 1)) ?? ""
        }
        #expect(text.contains("type=item_store"))
        let skipped = text.split(separator: "\n").compactMap { l -> Int? in
            l.hasPrefix("skipped=") ? Int(l.dropFirst(8)) : nil
        }.reduce(0, +)
        #expect(skipped > 0)
    }

    @Test("watch evictions names the evicted keys")
    func watchEvictions() throws {
        let s = try ServerProcess.larder(["-t", "2", "-m", "8"])
        defer { s.stop() }
        let w = try TestClient(port: s.port)
        #expect(try w.request("watch evictions\r\n") == "OK\r\n")
        let c = try TestClient(port: s.port)
        let value = String(repeating: "v", count: 1000)
        var batch = ""
        for i in 0..<20_000 { batch += "ms e\(i) 1000 q\r\n\(value)\r\n" }
        try c.send(batch + "mn\r\n")
        _ = try c.read(until: "MN\r\n", timeout: 60)
        let line = try w.read(until: "\n", timeout: 10)
        #expect(line.range(of: #"^ts=\d+\.\d{6} gid=\d+ type=eviction key=e\d+ fetch=no ttl=-1 la=0 clsid=1\n"#,
                           options: .regularExpression) != nil, "\(line.prefix(200))")
    }
}
