// Limits and safe defaults: root refusal and privilege drop, the connection limit, idle
// timeout, graceful shutdown under load, and a client that never reads.
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

@Suite("limits and safe defaults", .serialized)
struct HostileTests {
    @Test("as root, larder refuses to start without -u, and drops to the -u user",
          .enabled(if: getuid() == 0, "only meaningful when the suite runs as root (as CI does)"))
    func rootAndUser() throws {
        let (exitStatus, text) = try runLarderExpectingExit(["-p", "0", "--metrics-port", "0"])
        #expect(exitStatus > 0)
        #expect(text.contains("-u"))
        let s = try ServerProcess.larder(["-u", "nobody"])
        defer { s.stop() }
        let status = try String(contentsOfFile: "/proc/\(s.process.processIdentifier)/status", encoding: .utf8)
        let uidLine = status.split(separator: "\n").first { $0.hasPrefix("Uid:") } ?? ""
        #expect(uidLine.split(whereSeparator: { $0 == "\t" || $0 == " " }).dropFirst().allSatisfy { $0 == "65534" }, "\(uidLine)")
        #expect(try TestClient(port: s.port).request("version\r\n").hasPrefix("VERSION "))
    }

    @Test("one connection over -c gets memcached's error, is counted, and the server accepts again")
    func connectionLimit() throws {
        let s = try ServerProcess.larder(["-t", "1", "-c", "5"])
        defer { s.stop() }
        var clients = try (0..<5).map { _ in try TestClient(port: s.port) }
        for c in clients { #expect(try c.request("version\r\n").hasPrefix("VERSION")) }
        let extra = try TestClient(port: s.port)
        #expect(try extra.readToEOF(timeout: 5).text == "SERVER_ERROR too many open connections\r\n")
        clients.removeLast().close()
        // Poll on a connection already open (a new one could be refused until the server has
        // seen the close): 4 clients left, and the one refusal counted.
        var st = ""
        #expect(eventually {
            st = (try? clients[0].request("stats\r\n", until: "END\r\n")) ?? ""
            return st.contains("STAT curr_connections 4\r\n")
        }, "\(st)")
        #expect(st.contains("STAT rejected_connections 1\r\n"))
        // One slot is free again: a new client is served, and the next one over is refused.
        clients.append(try TestClient(port: s.port))
        #expect(try clients.last!.request("version\r\n").hasPrefix("VERSION"))
        let extra2 = try TestClient(port: s.port)
        #expect(try extra2.readToEOF(timeout: 5).text == "SERVER_ERROR too many open connections\r\n")
    }

    @Test("--idle-timeout closes silent connections and spares active ones")
    func idleTimeout() throws {
        let s = try ServerProcess.larder(["-t", "1", "--idle-timeout", "1"])
        defer { s.stop() }
        let idle = try TestClient(port: s.port)
        let active = try TestClient(port: s.port)
        for _ in 0..<10 {
            #expect(try active.request("version\r\n").hasPrefix("VERSION"))
            usleep(300_000)
        }
        // Closed by the server (readToEOF throws if it is still open after 5 s), while the
        // active one, which talked every 0.3 s for 3 s, stays open.
        #expect(try idle.readToEOF(timeout: 5).isEmpty)
        #expect(try active.request("version\r\n").hasPrefix("VERSION"))
    }

    @Test("SIGTERM under load: replies already in flight arrive whole, exit 0 within 5 s")
    func shutdownUnderLoad() throws {
        let s = try ServerProcess.larder(["-t", "2"])
        let port = s.port
        let stop = ManagedFlag()
        let results = ResultBox()
        let group = DispatchGroup()
        // Plain threads: each client blocks on its socket.
        let clients = try (0..<10).map { _ in try TestClient(port: port) }
        for (i, c) in clients.enumerated() {
            group.enter()
            Thread.detachNewThread {
                var sent = 0
                while !stop.isSet && sent < 200_000 {
                    var batch = ""
                    for j in 0..<50 { batch += "set k\(i)-\(j) 0 0 5\r\nvalue\r\n" }
                    do { try c.send(batch) } catch { break }
                    sent += 50
                }
                let r = (try? c.readToEOF(timeout: 10)) ?? []
                results.append(r)
                group.leave()
            }
        }
        // Each client has its own reader too, or the server would stop reading from it.
        usleep(500_000)
        // stop() sends SIGTERM and waits up to 10 s; a server still running then is killed
        // and reported as -1.
        let status = s.stop(timeout: 10)
        #expect(status == 0)
        stop.set()
        #expect(group.wait(timeout: .now() + 20) == .success)
        for r in results.all {
            #expect(r.count % 8 == 0, "a reply was cut: \(r.count) bytes")
            #expect(r.text == String(repeating: "STORED\r\n", count: r.count / 8))
        }
    }

    @Test("a client that pipelines gets of a big value and never reads is throttled, others unaffected")
    func nonReader() throws {
        let s = try ServerProcess.larder(["-t", "2", "-m", "64"])
        defer { s.stop() }
        let value = String(repeating: "b", count: 512 * 1024)
        let w = try TestClient(port: s.port)
        #expect(try w.request("set big 0 0 \(value.utf8.count)\r\n\(value)\r\n") == "STORED\r\n")
        let hog = try TestClient(port: s.port, receiveBuffer: 4096)
        try hog.send(String(repeating: "get big\r\n", count: 2000))  // asks for ~1 GB of replies
        usleep(500_000)
        let good = try TestClient(port: s.port)
        // Served throughout (each request times out after 10 s); no speed bound here, which
        // would measure the debug build and the machine rather than the server.
        for i in 0..<200 {
            #expect(try good.request("set g\(i) 0 0 2\r\nok\r\n") == "STORED\r\n")
            #expect(try good.request("get g\(i)\r\n", until: "END\r\n") == "VALUE g\(i) 0 2\r\nok\r\nEND\r\n")
        }
        let rss = residentMB(pid: s.process.processIdentifier)
        #expect(rss < 200, "RSS \(rss) MB")
    }
}

/// A flag shared between tasks.
final class ManagedFlag: @unchecked Sendable {
    // @unchecked Sendable: guarded by the lock.
    private let lock = NSLock()
    private var value = false
    var isSet: Bool { lock.withLock { value } }
    func set() { lock.withLock { value = true } }
}

/// Byte strings collected from several threads.
final class ResultBox: @unchecked Sendable {
    // @unchecked Sendable: guarded by the lock.
    private let lock = NSLock()
    private var items: [[UInt8]] = []
    func append(_ r: [UInt8]) { lock.withLock { items.append(r) } }
    var all: [[UInt8]] { lock.withLock { items } }
}
