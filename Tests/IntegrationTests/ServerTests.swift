// Integration tests: the real `larder` binary on an ephemeral 127.0.0.1 port, spoken to over
// sockets, replies compared byte for byte.
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

@Suite("larder over TCP")
struct ServerTests {
    @Test("set then get, as in the README's nc example")
    func setGet() throws {
        let s = try ServerProcess.larder(["-t", "2"])
        defer { s.stop() }
        let reply = try exchange(Array("set a 0 0 1\r\nx\r\nget a\r\n".utf8), port: s.port)
        #expect(reply.text == "STORED\r\nVALUE a 0 1\r\nx\r\nEND\r\n")
    }

    @Test("a pipelined batch is answered completely and in order")
    func pipelined() throws {
        let s = try ServerProcess.larder(["-t", "2"])
        defer { s.stop() }
        var req = ""
        var expected = ""
        for i in 0..<200 {
            req += "set key\(i) \(i) 0 \(String(i).count)\r\n\(i)\r\n"
            expected += "STORED\r\n"
        }
        for i in stride(from: 199, through: 0, by: -1) {
            req += "get key\(i)\r\n"
            expected += "VALUE key\(i) \(i) \(String(i).count)\r\n\(i)\r\nEND\r\n"
        }
        req += "get " + (0..<100).map { "key\($0)" }.joined(separator: " ") + "\r\n"
        for i in 0..<100 { expected += "VALUE key\(i) \(i) \(String(i).count)\r\n\(i)\r\n" }
        expected += "END\r\n"
        req += "delete key5\r\ndelete key5\r\nincr key7 3\r\ndecr key7 100\r\n"
        expected += "DELETED\r\nNOT_FOUND\r\n10\r\n0\r\n"
        let reply = try exchange(Array(req.utf8), port: s.port)
        #expect(reply.text == expected)
    }

    @Test("a value of nearly 1 MB with CRLF inside survives byte for byte, sent in pieces")
    func largeValue() throws {
        let s = try ServerProcess.larder(["-t", "2"])
        defer { s.stop() }
        // The largest value memcached accepts for a 3-byte key with flags 0 under -I 1m.
        let size = 1024 * 1024 - (48 + 8 + 3 + 1 + 2)
        var value = [UInt8](repeating: 0, count: size)
        for i in 0..<size { value[i] = UInt8(truncatingIfNeeded: i &* 31 &+ 7) }
        value[10] = 0x0D; value[11] = 0x0A
        let c = try TestClient(port: s.port)
        let header = Array("set big 0 0 \(size)\r\n".utf8)
        try c.send(header)
        var off = 0
        while off < size {
            let n = min(7919, size - off)
            try c.send(Array(value[off..<(off + n)]))
            off += n
        }
        try c.send(Array("\r\n".utf8))
        #expect(try c.read(until: "\r\n") == "STORED\r\n")
        try c.send("get big\r\n")
        let head = Array("VALUE big 0 \(size)\r\n".utf8)
        let got = try c.read(count: head.count + size + 7)
        #expect(Array(got[0..<head.count]) == head)
        #expect(Array(got[head.count..<(head.count + size)]) == value)
        #expect(Array(got[(head.count + size)...]).text == "\r\nEND\r\n")
        // One byte more is refused and the data block swallowed.
        try c.send(Array("set big2 0 0 \(size + 1)\r\n".utf8) + [UInt8](repeating: 0x41, count: size + 1) + Array("\r\nget big2\r\n".utf8))
        #expect(try c.read(until: "END\r\n") == "SERVER_ERROR object too large for cache\r\nEND\r\n")
    }

    @Test("200 concurrent connections each get their own answers")
    func manyConnections() async throws {
        let s = try ServerProcess.larder(["-t", "2"])
        defer { s.stop() }
        let port = s.port
        let clients = try (0..<200).map { _ in try TestClient(port: port) }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for (i, c) in clients.enumerated() {
                group.addTask {
                    for round in 0..<5 {
                        let v = "v\(i)-\(round)"
                        let stored = try c.request("set conn\(i) \(i) 0 \(v.count)\r\n\(v)\r\n")
                        #expect(stored == "STORED\r\n")
                        let got = try c.request("get conn\(i)\r\n", until: "END\r\n")
                        #expect(got == "VALUE conn\(i) \(i) \(v.count)\r\n\(v)\r\nEND\r\n")
                    }
                }
            }
            try await group.waitForAll()
        }
        let st = try stats(port: port)
        // The 200 clients plus the connection asking for stats.
        #expect(st["curr_connections"] == "201")
        #expect(st["cmd_set"] == "1000")
        #expect(st["get_hits"] == "1000")
    }

    @Test("stats names memcached's counters and counts what happened")
    func statsCounts() throws {
        let s = try ServerProcess.larder(["-t", "2", "-m", "32"])
        defer { s.stop() }
        let req = "set a 0 0 1\r\n1\r\nget a b\r\ngets a\r\ndelete a\r\ndelete a\r\nincr n 1\r\nset n 0 0 1\r\n5\r\nincr n 1\r\ndecr n 1\r\ndecr x 1\r\ntouch n 0\r\ntouch x 0\r\ncas n 0 0 1 1\r\n1\r\ncas x 0 0 1 1\r\n1\r\n"
        _ = try exchange(Array(req.utf8), port: s.port)
        let st = try stats(port: s.port)
        let names = "pid uptime time version curr_connections total_connections cmd_get cmd_set cmd_touch get_hits get_misses get_expired delete_hits delete_misses incr_hits incr_misses decr_hits decr_misses cas_hits cas_misses cas_badval touch_hits touch_misses curr_items total_items bytes limit_maxbytes threads evictions bytes_read bytes_written"
        for n in names.split(separator: " ") { #expect(st[String(n)] != nil, "missing stat \(n)") }
        #expect(st["cmd_get"] == "3")
        #expect(st["get_hits"] == "2")
        #expect(st["get_misses"] == "1")
        #expect(st["delete_hits"] == "1")
        #expect(st["delete_misses"] == "1")
        #expect(st["incr_hits"] == "1")
        #expect(st["incr_misses"] == "1")
        #expect(st["decr_hits"] == "1")
        #expect(st["decr_misses"] == "1")
        #expect(st["touch_hits"] == "1")
        #expect(st["touch_misses"] == "1")
        #expect(st["cas_badval"] == "1")
        #expect(st["cas_misses"] == "1")
        #expect(st["cmd_set"] == "4")
        #expect(st["curr_items"] == "1")
        #expect(st["limit_maxbytes"] == "\(32 * 1024 * 1024)")
        #expect(st["threads"] == "2")
        #expect(Int(st["bytes_read"] ?? "0")! >= req.utf8.count)
    }

    @Test("SIGTERM finishes the replies in flight and exits 0")
    func gracefulShutdown() throws {
        let s = try ServerProcess.larder(["-t", "2"])
        let c = try TestClient(port: s.port)
        #expect(try c.request("set k 0 0 2\r\nhi\r\n") == "STORED\r\n")
        let start = Date()
        let status = s.stop(timeout: 10)
        #expect(status == 0)
        #expect(Date().timeIntervalSince(start) < 5)
        // The idle connection was closed by the server.
        #expect(try c.readToEOF(timeout: 2).isEmpty)
    }

    @Test("threads are named for top -H and crash reports")
    func threadNames() throws {
        let s = try ServerProcess.larder(["-t", "2"])
        defer { s.stop() }
        let pid = s.process.processIdentifier
        let wanted: Set<String> = ["larder-worker-0", "larder-worker-1", "larder-sweeper"]
        // The port answers before every thread has started: poll, with a deadline.
        var names: Set<String> = []
        _ = eventually {
            let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
            names = Set(tasks.compactMap { try? String(contentsOfFile: "/proc/\(pid)/task/\($0)/comm", encoding: .utf8) }
                .map { $0.trimmingCharacters(in: .whitespacesAndNewlines) })
            return names.isSuperset(of: wanted)
        }
        for n in ["larder-worker-0", "larder-worker-1", "larder-sweeper"] {  // tests run without metrics
            #expect(names.contains(n), "threads: \(names.sorted())")
        }
    }

    @Test("quit closes only that connection")
    func quit() throws {
        let s = try ServerProcess.larder(["-t", "1"])
        defer { s.stop() }
        let a = try TestClient(port: s.port)
        let b = try TestClient(port: s.port)
        try a.send("set q 0 0 1\r\nz\r\nquit\r\nget q\r\n")
        #expect(try a.readToEOF().text == "STORED\r\n")
        #expect(try b.request("get q\r\n", until: "END\r\n") == "VALUE q 0 1\r\nz\r\nEND\r\n")
    }

    @Test("a line of junk longer than 2048 bytes closes that connection only")
    func junkLine() throws {
        let s = try ServerProcess.larder(["-t", "1"])
        defer { s.stop() }
        let bad = try TestClient(port: s.port)
        try bad.send([UInt8](repeating: 0x78, count: 5000))
        #expect(try bad.readToEOF(timeout: 5).isEmpty)
        // A long multi-get line is still fine.
        let good = try TestClient(port: s.port)
        let keys = (0..<800).map { "key-number-\($0)" }.joined(separator: " ")
        #expect(try good.request("get \(keys)\r\n", until: "END\r\n") == "END\r\n")
    }
}

/// `stats` as a dictionary, over a fresh connection.
func stats(port: Int, group: String = "") throws -> [String: String] {
    let c = try TestClient(port: port)
    let text = try c.request("stats\(group.isEmpty ? "" : " " + group)\r\n", until: "END\r\n")
    var d: [String: String] = [:]
    for line in text.split(separator: "\r\n") where line.hasPrefix("STAT ") {
        let parts = line.split(separator: " ", maxSplits: 2)
        if parts.count == 3 { d[String(parts[1])] = String(parts[2]) }
    }
    return d
}

@Suite("memory and slow readers")
struct MemoryTests {
    @Test("a slow reader gets the complete original value after delete and overwrite")
    func slowReader() throws {
        let s = try ServerProcess.larder(["-t", "2"])
        defer { s.stop() }
        let size = 900_000
        var original = [UInt8](repeating: 0, count: size)
        for i in 0..<size { original[i] = UInt8(truncatingIfNeeded: i &* 7 &+ 3) }
        let writer = try TestClient(port: s.port)
        try writer.send(Array("set big 0 0 \(size)\r\n".utf8) + original + Array("\r\n".utf8))
        #expect(try writer.read(until: "\r\n") == "STORED\r\n")
        // The slow client asks for the value 8 times and reads almost nothing for a while, so
        // the server has megabytes queued for it (more than the socket buffers hold).
        let slow = try TestClient(port: s.port, receiveBuffer: 4096)
        try slow.send(String(repeating: "get big\r\n", count: 8))
        let head = Array("VALUE big 0 \(size)\r\n".utf8)
        let first = try slow.read(count: 1000)
        #expect(Array(first[0..<head.count]) == head)
        usleep(200_000)
        // Meanwhile the key is deleted and overwritten, from another connection.
        #expect(try writer.request("delete big\r\n") == "DELETED\r\n")
        #expect(try writer.request("set big 0 0 3\r\nnew\r\n") == "STORED\r\n")
        #expect(try writer.request("get big\r\n", until: "END\r\n") == "VALUE big 0 3\r\nnew\r\nEND\r\n")
        // The slow reader still receives 8 complete copies of the original value.
        let one = head + original + Array("\r\nEND\r\n".utf8)
        let rest = try slow.read(count: one.count * 8 - 1000, timeout: 30)
        let all = first + rest
        for k in 0..<8 {
            #expect(Array(all[(k * one.count)..<((k + 1) * one.count)]) == one, "copy \(k) differs")
        }
    }

    @Test("small values whose segments are evicted while a slow client is being sent them arrive intact")
    func slowReaderOfSmallValues() throws {
        let s = try ServerProcess.larder(["-t", "2", "-m", "8"])
        defer { s.stop() }
        func value(_ k: Int, _ gen: Int) -> [UInt8] {
            (0..<2000).map { UInt8(truncatingIfNeeded: 97 + ($0 &* 31 &+ k &* 7 &+ gen) % 26) }
        }
        let writer = try TestClient(port: s.port)
        var batch: [UInt8] = []
        for k in 0..<300 { batch += Array("set s\(k) 0 0 2000 noreply\r\n".utf8) + value(k, 0) + Array("\r\n".utf8) }
        try writer.send(batch)
        _ = try writer.request("version\r\n")
        // The slow client asks for every value 6 times (3.6 MB of replies, under the 4 MB at
        // which the server stops reading from a client, so all are answered at once) and
        // reads a little.
        let slow = try TestClient(port: s.port, receiveBuffer: 4096)
        var gets = ""
        for r in 0..<6 { for k in 0..<300 { gets += "get s\((k + r) % 300)\r\n" } }
        try slow.send(gets)
        let first = try slow.read(count: 1000)
        usleep(200_000)
        // Meanwhile 20 MB of new items go through the 8 MB store: every segment that held the
        // originals is evicted and reused, and the originals are overwritten too.
        for round in 0..<8 {
            batch = []
            for k in 0..<1000 { batch += Array("set f\(round)-\(k) 0 0 2000 noreply\r\n".utf8) + value(k, 1) + Array("\r\n".utf8) }
            for k in 0..<300 { batch += Array("set s\(k) 0 0 2000 noreply\r\n".utf8) + value(k, round + 1) + Array("\r\n".utf8) }
            try writer.send(batch)
        }
        _ = try writer.request("version\r\n")
        #expect(Int(try stats(port: s.port)["evictions"]!)! > 4000)
        var expected: [UInt8] = []
        for r in 0..<6 {
            for k in 0..<300 {
                let key = (k + r) % 300
                expected += Array("VALUE s\(key) 0 2000\r\n".utf8) + value(key, 0) + Array("\r\nEND\r\n".utf8)
            }
        }
        let rest = try slow.read(count: expected.count - 1000, timeout: 30)
        let all = first + rest
        #expect(all.count == expected.count)
        #expect(all == expected, "a reply differs from the value the key held when it was asked for")
    }

    @Test("writing 10x the limit keeps the store within it and evicts, counting evictions")
    func limitHolds() throws {
        let s = try ServerProcess.larder(["-t", "2", "-m", "8"])
        defer { s.stop() }
        let c = try TestClient(port: s.port)
        let value = String(repeating: "v", count: 4096)
        var batch = ""
        let n = 10 * 8 * 1024 * 1024 / 4096
        for i in 0..<n {
            batch += "set key\(i) 0 0 4096 noreply\r\n\(value)\r\n"
            if i % 100 == 99 { try c.send(batch); batch = "" }
        }
        try c.send(batch)
        // Recently written keys are there, the first ones were evicted.
        #expect(try c.request("get key\(n - 1)\r\n", until: "END\r\n").hasPrefix("VALUE key\(n - 1) 0 4096\r\n"))
        #expect(try c.request("get key0\r\n", until: "END\r\n") == "END\r\n")
        let st = try stats(port: s.port)
        let used = Int(st["bytes"]!)! + Int(st["index_bytes"]!)!
        #expect(used <= 8 * 1024 * 1024)
        #expect(Int(st["evictions"]!)! > n / 2)
        #expect(Int(st["evicted_unfetched"]!)! > 0)
        #expect(Int(st["curr_items"]!)! + Int(st["evictions"]!)! == n)
        // Resident memory stays near the limit (debug build; generous bound for the runtime).
        // Sanitizer builds carry shadow memory, so the bound means nothing there.
        if ProcessInfo.processInfo.environment["LARDER_SANITIZED"] == nil {
            let rss = residentMB(pid: s.process.processIdentifier)
            #expect(rss < 8 * 115 / 100 + 48, "RSS \(rss) MB")
        }
    }

    @Test("-M answers out of memory instead of evicting")
    func noEvict() throws {
        let s = try ServerProcess.larder(["-t", "1", "-m", "4", "-M"])
        defer { s.stop() }
        let c = try TestClient(port: s.port)
        let value = String(repeating: "v", count: 100_000)
        var replies = ""
        for i in 0..<80 { replies += try c.request("set k\(i) 0 0 100000\r\n\(value)\r\n") }
        #expect(replies.contains("SERVER_ERROR out of memory storing object\r\n"))
        #expect(replies.hasPrefix("STORED\r\n"))
        let st = try stats(port: s.port)
        #expect(st["evictions"] == "0")
        #expect(try c.request("get k0\r\n", until: "END\r\n").hasPrefix("VALUE k0 0 100000\r\n"))
    }

    @Test("stale slots return to zero when the server is idle")
    func staleSlotsDrain() throws {
        let s = try ServerProcess.larder(["-t", "2"])
        defer { s.stop() }
        let c = try TestClient(port: s.port)
        var req = ""
        for i in 0..<2000 { req += "set t\(i) 0 1000 1 noreply\r\nx\r\n" }
        for i in 0..<1000 { req += "delete t\(i) noreply\r\n" }
        for i in 1000..<1500 { req += "set t\(i) 0 0 1 noreply\r\ny\r\n" }
        try c.send(req)
        _ = try c.request("version\r\n")
        for _ in 0..<50 { _ = try? TestClient(port: s.port) }  // connections that close at once
        var stale = "?"
        _ = try eventually(timeout: 15) {
            stale = try stats(port: s.port)["stale_slots"] ?? "?"
            return stale == "0"
        }
        #expect(stale == "0")
    }
}

func residentMB(pid: Int32) -> Int {
    guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return -1 }
    for line in text.split(separator: "\n") where line.hasPrefix("VmRSS:") {
        return (Int(line.split(separator: " ").dropFirst().first ?? "0") ?? 0) / 1024
    }
    return -1
}
