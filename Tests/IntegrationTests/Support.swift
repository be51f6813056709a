// Test support: start the real `larder` binary (and memcached) on ephemeral 127.0.0.1 ports,
// and talk to them over plain sockets.
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

enum TestEnv {
    /// The binary under test: $LARDER_BIN, or the debug build next to the test bundle.
    static var larderBinary: String {
        if let b = ProcessInfo.processInfo.environment["LARDER_BIN"] { return b }
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        for c in ["debug", "release"] {
            let p = root.appendingPathComponent(".build/\(c)/larder").path
            if FileManager.default.isExecutableFile(atPath: p) { return p }
        }
        return root.appendingPathComponent(".build/debug/larder").path
    }

    static var memcachedBinary: String? {
        for p in ["/usr/bin/memcached", "/usr/local/bin/memcached"] where FileManager.default.isExecutableFile(atPath: p) {
            return p
        }
        return nil
    }
}

/// A running server process, stopped with SIGTERM when `stop` is called.
final class ServerProcess: @unchecked Sendable {
    // @unchecked Sendable: used from one test at a time.
    let process: Process
    let port: Int
    private let errPipe: Pipe
    private(set) var stderrText = ""
    /// Signal `stop` sends. memcached is killed outright: Foundation starts children with
    /// SIGTERM blocked, and only Larder unblocks it (its graceful shutdown is under test).
    private var stopSignal = SIGTERM

    private init(process: Process, port: Int, errPipe: Pipe) {
        self.process = process
        self.port = port
        self.errPipe = errPipe
    }

    /// Starts larder with `args` plus `-p 0`, and reads the bound port from its log.
    static func larder(_ args: [String] = [], env: [String: String] = [:], metricsPort: Int = 0) throws -> ServerProcess {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: TestEnv.larderBinary)
        // As root (CI), Larder refuses to start without -u, like memcached.
        let asUser = getuid() == 0 && !args.contains("-u") ? ["-u", "nobody"] : []
        p.arguments = ["-p", "0", "--metrics-port", "\(metricsPort)"] + asUser + args
        p.environment = larderEnvironment(env)
        let err = Pipe()
        p.standardError = err
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        // Read stderr until the "listening on" line.
        var text = ""
        let deadline = Date().addingTimeInterval(20)
        let fd = err.fileHandleForReading.fileDescriptor
        while Date() < deadline {
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            if poll(&pfd, 1, 200) > 0 {
                var buf = [UInt8](repeating: 0, count: 4096)
                let n = read(fd, &buf, buf.count)
                if n <= 0 { break }
                text += String(decoding: buf[0..<n], as: UTF8.self)
                if let r = text.range(of: #"listening on \S+:(\d+)"#, options: .regularExpression) {
                    let m = String(text[r])
                    let port = Int(m.split(separator: ":").last!)!
                    let s = ServerProcess(process: p, port: port, errPipe: err)
                    s.stderrText = text
                    return s
                }
            }
            if !p.isRunning { break }
        }
        p.terminate()
        throw TestFailure("larder did not start: \(text)")
    }

    /// Starts memcached on a free port.
    static func memcached(_ args: [String] = []) throws -> ServerProcess {
        guard let bin = TestEnv.memcachedBinary else { throw TestFailure("memcached is not installed") }
        for _ in 0..<5 {
            let port = freePort()
            let p = Process()
            p.executableURL = URL(fileURLWithPath: bin)
            p.arguments = ["-p", "\(port)", "-l", "127.0.0.1", "-U", "0"] + (getuid() == 0 ? ["-u", "nobody"] : []) + args
            let err = Pipe()
            p.standardError = err
            p.standardOutput = FileHandle.nullDevice
            try p.run()
            for _ in 0..<100 {
                if let c = try? TestClient(port: port) {
                    c.close()
                    let s = ServerProcess(process: p, port: port, errPipe: err)
                    s.stopSignal = SIGKILL
                    return s
                }
                if !p.isRunning { break }
                usleep(20_000)
            }
            p.terminate()
        }
        throw TestFailure("memcached did not start")
    }

    /// Reads what the server logged since, until the log contains `text` or `timeout`
    /// passes; returns the whole log so far (`stderrText`).
    @discardableResult
    func readLog(until text: String, timeout: TimeInterval = 10) -> String {
        let fd = errPipe.fileHandleForReading.fileDescriptor
        let deadline = Date().addingTimeInterval(timeout)
        var buf = [UInt8](repeating: 0, count: 4096)
        while !stderrText.contains(text) && Date() < deadline {
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&pfd, 1, 100) > 0 else { continue }
            let n = read(fd, &buf, buf.count)
            if n <= 0 { break }
            stderrText += String(decoding: buf[0..<n], as: UTF8.self)
        }
        return stderrText
    }

    /// SIGTERM, then wait; returns the exit status.
    @discardableResult
    func stop(timeout: TimeInterval = 10) -> Int32 {
        if process.isRunning { kill(process.processIdentifier, stopSignal) }
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(10_000) }
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            return -1
        }
        return process.terminationStatus
    }

    deinit {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
    }
}

/// Polls `condition` every 20 ms until it holds or `timeout` passes; returns whether it held.
/// Tests wait for what they check this way, never with a sleep followed by an exact count.
func eventually(timeout: TimeInterval = 10, _ condition: () throws -> Bool) rethrows -> Bool {
    let deadline = Date().addingTimeInterval(timeout)
    while true {
        if try condition() { return true }
        if Date() >= deadline { return false }
        usleep(20_000)
    }
}

/// The test runner's environment without any LARDER_* variable, plus `extra`.
func larderEnvironment(_ extra: [String: String]) -> [String: String] {
    var environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("LARDER_") }
    for (k, v) in extra { environment[k] = v }
    return environment
}

/// Runs larder with `args` when it is expected to refuse to start; returns its exit status
/// and what it wrote to stderr. A larder that starts anyway is killed after 20 s (status -1).
func runLarderExpectingExit(_ args: [String], env: [String: String] = [:]) throws -> (status: Int32, stderr: String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: TestEnv.larderBinary)
    p.arguments = args
    p.environment = larderEnvironment(env)
    let err = Pipe()
    p.standardError = err
    p.standardOutput = FileHandle.nullDevice
    try p.run()
    let deadline = Date().addingTimeInterval(20)
    while p.isRunning && Date() < deadline { usleep(10_000) }
    if p.isRunning {
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        return (-1, "")
    }
    return (p.terminationStatus, String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self))
}

struct TestFailure: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

func freePort() -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    addr.sin_port = 0
    _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
    return Int(UInt16(bigEndian: addr.sin_port))
}

/// A blocking TCP client with timeouts.
final class TestClient: @unchecked Sendable {
    // @unchecked Sendable: each client is used by one task at a time.
    let fd: Int32
    private var pending: [UInt8] = []

    init(port: Int, host: String = "127.0.0.1", receiveBuffer: Int32? = nil) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        if var rb = receiveBuffer {
            // Before connect, so the advertised window starts small.
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rb, socklen_t(MemoryLayout<Int32>.size))
        }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr(host)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        if rc != 0 {
            let e = errno
            close()
            throw TestFailure("connect to \(port) failed: errno \(e)")
        }
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    }

    private var isClosed = false
    /// Closes the socket once: a second close(2) of the number could close a descriptor
    /// another test (running in parallel) has been given since.
    func close() {
        if isClosed { return }
        isClosed = true
        Glibc.close(fd)
    }
    deinit { close() }

    func send(_ bytes: [UInt8]) throws {
        var off = 0
        while off < bytes.count {
            let n = bytes[off...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { throw TestFailure("send failed: errno \(errno)") }
            off += n
        }
    }
    func send(_ s: String) throws { try send(Array(s.utf8)) }

    func shutdownWrite() { shutdown(fd, Int32(SHUT_WR)) }

    /// Reads until the peer closes (or `timeout` passes).
    func readToEOF(timeout: TimeInterval = 10) throws -> [UInt8] {
        var out = pending
        pending = []
        let deadline = Date().addingTimeInterval(timeout)
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let left = deadline.timeIntervalSinceNow
            if left <= 0 { throw TestFailure("timed out waiting for EOF; got \(out.count) bytes") }
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            if poll(&pfd, 1, Int32(left * 1000)) <= 0 { continue }
            let n = Glibc.read(fd, &buf, buf.count)
            if n <= 0 { return out }
            out.append(contentsOf: buf[0..<n])
        }
    }

    /// Reads until the received bytes end with `suffix`.
    func read(until suffix: String, timeout: TimeInterval = 10) throws -> String {
        let s = Array(suffix.utf8)
        var out = pending
        pending = []
        let deadline = Date().addingTimeInterval(timeout)
        var buf = [UInt8](repeating: 0, count: 65536)
        while !(out.count >= s.count && Array(out[(out.count - s.count)...]) == s) {
            let left = deadline.timeIntervalSinceNow
            if left <= 0 { throw TestFailure("timed out waiting for \(suffix.debugDescription); got \(String(decoding: out, as: UTF8.self).debugDescription)") }
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            if poll(&pfd, 1, Int32(left * 1000)) <= 0 { continue }
            let n = Glibc.read(fd, &buf, buf.count)
            if n <= 0 { throw TestFailure("connection closed; got \(String(decoding: out, as: UTF8.self).debugDescription)") }
            out.append(contentsOf: buf[0..<n])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Reads exactly `count` bytes.
    func read(count: Int, timeout: TimeInterval = 10) throws -> [UInt8] {
        var out = pending
        pending = []
        let deadline = Date().addingTimeInterval(timeout)
        var buf = [UInt8](repeating: 0, count: 65536)
        while out.count < count {
            let left = deadline.timeIntervalSinceNow
            if left <= 0 { throw TestFailure("timed out after \(out.count) of \(count) bytes") }
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            if poll(&pfd, 1, Int32(left * 1000)) <= 0 { continue }
            let n = Glibc.read(fd, &buf, min(buf.count, count - out.count))
            if n <= 0 { throw TestFailure("connection closed after \(out.count) of \(count) bytes") }
            out.append(contentsOf: buf[0..<n])
        }
        return out
    }

    /// Sends a request and reads the reply up to `until`.
    func request(_ s: String, until: String = "\r\n") throws -> String {
        try send(s)
        return try read(until: until)
    }
}

/// Sends `bytes` on a fresh connection, half-closes, and returns everything the server sent.
func exchange(_ bytes: [UInt8], port: Int) throws -> [UInt8] {
    let c = try TestClient(port: port)
    try c.send(bytes)
    c.shutdownWrite()
    return try c.readToEOF()
}

extension Array where Element == UInt8 {
    var text: String { String(decoding: self, as: UTF8.self) }
}

/// GET over plain HTTP/1.0; returns status line, headers and body.
func httpGet(port: Int, path: String) throws -> (status: Int, headers: String, body: String) {
    let c = try TestClient(port: port)
    try c.send("GET \(path) HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
    let text = try c.readToEOF().text
    guard let split = text.range(of: "\r\n\r\n") else { throw TestFailure("bad HTTP reply: \(text.prefix(200))") }
    let head = String(text[..<split.lowerBound])
    let status = Int(head.split(separator: " ").dropFirst().first ?? "0") ?? 0
    return (status, head, String(text[split.upperBound...]))
}

/// The value of one sample in a Prometheus text page, e.g. `larder_deletes_total{outcome="deleted"}`.
func metric(_ page: String, _ sample: String) -> Double? {
    for line in page.split(separator: "\n") where line.hasPrefix(sample + " ") {
        return Double(line.dropFirst(sample.count + 1))
    }
    return nil
}

/// Runs larder with `args` to completion (`--help`, `--version`); returns its exit status and
/// what it wrote to stdout.
func runLarderCapturingStdout(_ args: [String]) throws -> (status: Int32, stdout: String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: TestEnv.larderBinary)
    p.arguments = args
    p.environment = larderEnvironment([:])
    let out = Pipe()
    p.standardOutput = out
    p.standardError = FileHandle.nullDevice
    try p.run()
    let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    p.waitUntilExit()
    return (p.terminationStatus, text)
}
