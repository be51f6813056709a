// Authentication (-Y) and the metrics endpoint's guard: the auth file's rules and the
// constant-time comparisons without sockets, then the real binary — refusal of bad files at
// start (exit 64, naming the setting, never quoting a password), the setting from the
// environment and the config file, SIGHUP re-reading the files, the counters in `stats` and
// /metrics, failures logged at most once per interval, and /metrics behind a bearer token or
// bcrypt basic auth (401 with WWW-Authenticate). Byte-for-byte replies are the differential
// test's job (DifferentialTests.swift, `authentication`).
import Foundation
import Testing
@testable import LarderServer
#if canImport(Glibc)
import Glibc
#endif

private func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

private func check(_ users: AuthUsers, _ user: String, _ password: String) -> Bool {
    bytes(user).withUnsafeBytes { u in bytes(password).withUnsafeBytes { users.check(user: u, password: $0) } }
}

/// A bcrypt hash (cost 4, so the test is quick) of "scrape-pw", made with Python's crypt.
private let scrapeHash = "$2b$04$719M4eR8fFNi5ZU/X/h32.R1ALSghOVS4XOfGHbKNXxerS0P58q1i"

@Suite("auth file and comparisons")
struct AuthFileTests {
    @Test("user:password lines: CRLF, no final newline, a colon in the password, a user listed twice")
    func accepted() throws {
        let u = try AuthUsers.parse(bytes("alice:secret\r\nbob:pa:ss\nalice:second\ncarol:x\ty"))
        #expect(u.count == 4)
        #expect(check(u, "alice", "secret") && check(u, "alice", "second"))
        #expect(check(u, "bob", "pa:ss") && check(u, "carol", "x\ty"))
        #expect(!check(u, "alice", "secre") && !check(u, "alice", "secrets") && !check(u, "Alice", "secret"))
        #expect(!check(u, "dave", "secret") && !check(u, "alice", ""))
    }

    @Test("refused files name the line and never quote it", arguments: [
        ("alice:secret\n\nbob:pw\n", "line 2 is empty"),
        ("alice:secret\n\n", "line 2 is empty"),
        ("# users\nalice:secret\n", "line 1 has no ':'"),
        ("alice:secret\nsecretsecret\n", "line 2 has no ':'"),
        (":secret\n", "line 1 has an empty user name or password"),
        ("alice:\n", "line 1 has an empty user name or password"),
        ("alice:sec ret\n", "line 1 has a space"),
        ("alice:secret\0\n", "NUL byte"),
        ("alice:" + String(repeating: "s", count: 249) + "\n", "line 1 is longer than 254 bytes"),
        ("", "has no user:password line"),
    ])
    func refused(text: String, message: String) {
        #expect {
            _ = try AuthUsers.parse(bytes(text))
        } throws: { error in
            let m = (error as? AuthFileError)?.message ?? ""
            return m.contains(message) && !m.contains("secret") && !m.contains("sss")
        }
    }

    @Test("the longest line memcached reads (254 bytes) is accepted")
    func longestLine() throws {
        let password = String(repeating: "p", count: 248)
        let u = try AuthUsers.parse(bytes("alice:\(password)\n"))
        #expect(check(u, "alice", password))
    }

    @Test("10,000 users: every one authenticates, a wrong password for any does not")
    func manyUsers() throws {
        let text = (0..<10_000).map { "user\($0):pw-\($0 * 7919)" }.joined(separator: "\n")
        let u = try AuthUsers.parse(bytes(text))
        #expect(u.count == 10_000)
        for i in [0, 1, 4_999, 9_999] {
            #expect(check(u, "user\(i)", "pw-\(i * 7919)"))
            #expect(!check(u, "user\(i)", "pw-\(i * 7919 + 1)"))
        }
    }

    @Test("constant-time comparison: equal only when length and every byte agree")
    func constantTime() {
        func eq(_ a: String, _ b: String) -> Bool {
            bytes(a).withUnsafeBytes { x in bytes(b).withUnsafeBytes { constantTimeEquals(x, $0) } }
        }
        #expect(eq("", "") && eq("secret", "secret"))
        #expect(!eq("secret", "secreT") && !eq("secret", "secre") && !eq("secre", "secret") && !eq("", "x"))
        #expect(!eq("a\0", "a"))
    }

    @Test("metrics credentials: token trimmed, bcrypt lines checked, plain passwords and high costs refused")
    func metricsFiles() throws {
        #expect(try MetricsGuard.parseToken(bytes("  s3cr3t-token\n")) == bytes("s3cr3t-token"))
        #expect(throws: AuthFileError.self) { try MetricsGuard.parseToken(bytes("\n")) }
        #expect(throws: AuthFileError.self) { try MetricsGuard.parseToken(bytes("two words")) }
        #expect(try MetricsGuard.parseUsers(bytes("prom:\(scrapeHash)\n")).count == 1)
        for bad in ["prom:scrape-pw", "prom:$1$abc$def", ":\(scrapeHash)", "prom:\(scrapeHash)\nprom:\(scrapeHash)",
                    "prom:$2b$13$" + scrapeHash.dropFirst(7), ""] {
            #expect(throws: AuthFileError.self, "\(bad)") { try MetricsGuard.parseUsers(bytes(bad)) }
        }
    }

    @Test("metrics gate: bearer and basic accepted, wrong or missing refused, a verified password remembered")
    func gate() throws {
        let g = MetricsGuard(token: bytes("tok"), users: try MetricsGuard.parseUsers(bytes("prom:\(scrapeHash)")), generation: 1)
        let gate = MetricsGate()
        func basic(_ s: String) -> String { "Basic " + Data(s.utf8).base64EncodedString() }
        #expect(gate.allows("Bearer tok", g) && gate.allows("bearer tok", g))
        #expect(!gate.allows("Bearer to", g) && !gate.allows("Bearer tokk", g) && !gate.allows(nil, g) && !gate.allows("tok", g))
        #expect(gate.allows(basic("prom:scrape-pw"), g))
        #expect(gate.allows(basic("prom:scrape-pw"), g))  // from the cache
        #expect(!gate.allows(basic("prom:scrape-pX"), g) && !gate.allows(basic("other:scrape-pw"), g))
        #expect(!gate.allows("Basic !!!!", g) && !gate.allows(basic("promscrape-pw"), g))
        // Only the configured schemes count.
        let tokenOnly = MetricsGuard(token: bytes("tok"), users: nil, generation: 2)
        #expect(!gate.allows(basic("prom:scrape-pw"), tokenOnly) && gate.allows("Bearer tok", tokenOnly))
        #expect(tokenOnly.challenges == ["Bearer realm=\"larder\""])
    }

    @Test("metrics gate: at most two bcrypt runs a second, wrong passwords included")
    func bcryptBound() throws {
        let g = MetricsGuard(token: nil, users: try MetricsGuard.parseUsers(bytes("prom:\(scrapeHash)")), generation: 1)
        final class Clock: @unchecked Sendable { var second: UInt64 = 1 }  // one test thread
        let clock = Clock()
        let gate = MetricsGate(second: { clock.second })
        func basic(_ s: String) -> String { "Basic " + Data(s.utf8).base64EncodedString() }
        #expect(!gate.allows(basic("prom:wrong-1"), g) && !gate.allows(basic("prom:wrong-2"), g))
        // The right password in the same second is refused without hashing...
        #expect(!gate.allows(basic("prom:scrape-pw"), g))
        // ...and accepted in the next.
        clock.second = 2
        #expect(gate.allows(basic("prom:scrape-pw"), g))
    }
}

/// Writes a credentials file (mode 0600, owned by the user Larder serves as).
private func secretFile(_ text: String) throws -> String { try AuthFixture.write(text) }

/// Authenticates on `c` with the given credentials; returns the reply line.
private func auth(_ c: TestClient, _ user: String, _ password: String) throws -> String {
    let data = "\(user) \(password)"
    return try c.request("set auth 0 0 \(data.utf8.count)\r\n\(data)\r\n")
}

@Suite("authentication, real binary", .serialized)
struct AuthServerTests {
    @Test("a missing, unreadable, open-to-others, empty or malformed auth file stops Larder at start")
    func refusedAtStart() throws {
        let good = try secretFile("alice:topsecret\n")
        defer { unlink(good) }
        let open = try secretFile("alice:topsecret\n")
        defer { unlink(open) }
        chmod(open, 0o644)
        let empty = try secretFile("")
        defer { unlink(empty) }
        let bad = try secretFile("alice:topsecret\n# comment\n")
        defer { unlink(bad) }
        let user = getuid() == 0 ? ["-u", "nobody"] : []
        let cases: [([String], String)] = [
            (["-Y", "/nonexistent/auth"], "No such file"),
            (["-Y", open], "chmod o-rwx"),
            (["-Y", empty], "has no user:password line"),
            (["-Y", bad], "line 2 has no ':'"),
            (["-Y", NSTemporaryDirectory()], "not a regular file"),
            (["-Y", ""], "expected the path of a file"),
        ]
        for (args, message) in cases {
            let r = try runLarderExpectingExit(["-p", "0", "--metrics-port", "0"] + user + args)
            #expect(r.status == 64, "\(args)")
            #expect(r.stderr.contains("auth-file") && r.stderr.contains(message), "\(args): \(r.stderr)")
            #expect(!r.stderr.contains("topsecret"))
        }
        if getuid() == 0 {
            // Read after dropping privileges: a file only root can read is refused, with the fix.
            chown(good, 0, 0)
            let r = try runLarderExpectingExit(["-p", "0", "--metrics-port", "0", "-u", "nobody", "-Y", good])
            #expect(r.status == 64 && r.stderr.contains("Permission denied") && r.stderr.contains("chown nobody"), "\(r.stderr)")
        }
    }

    @Test("the auth file from LARDER_AUTH_FILE or the config file")
    func fromEnvironmentAndFile() throws {
        let file = try secretFile("alice:secret\n")
        defer { unlink(file) }
        let conf = NSTemporaryDirectory() + "larder-auth-conf-\(getpid())"
        try "# test\n-Y \(file)\n".write(toFile: conf, atomically: true, encoding: .utf8)
        defer { unlink(conf) }
        for (args, env) in [([String](), ["LARDER_AUTH_FILE": file]), (["--config", conf], [:])] {
            let s = try ServerProcess.larder(["-t", "1"] + args, env: env)
            defer { s.stop() }
            let c = try TestClient(port: s.port)
            #expect(try c.request("version\r\n") == "CLIENT_ERROR unauthenticated\r\n")
            #expect(try auth(c, "alice", "secret") == "STORED\r\n")
            #expect(try c.request("version\r\n").hasPrefix("VERSION "))
        }
    }

    @Test("SIGHUP re-reads the file; connections already in stay in; a bad file keeps the old users")
    func reload() throws {
        let file = try secretFile("alice:secret\n")
        defer { unlink(file) }
        let s = try ServerProcess.larder(["-t", "1", "-Y", file])
        defer { s.stop() }
        let inside = try TestClient(port: s.port)
        #expect(try auth(inside, "alice", "secret") == "STORED\r\n")

        try "bob:hunter2\n".write(toFile: file, atomically: false, encoding: .utf8)
        kill(s.process.processIdentifier, SIGHUP)
        s.readLog(until: "SIGHUP: re-read -Y")
        #expect(try auth(TestClient(port: s.port), "bob", "hunter2") == "STORED\r\n")
        #expect(try auth(TestClient(port: s.port), "alice", "secret") == "CLIENT_ERROR authentication failure\r\n")
        #expect(try inside.request("mn\r\n") == "MN\r\n")

        try "no colon here\n".write(toFile: file, atomically: false, encoding: .utf8)
        kill(s.process.processIdentifier, SIGHUP)
        let log = s.readLog(until: "keeping the credentials loaded before")
        #expect(log.contains("line 1 has no ':'") && !log.contains("hunter2") && !log.contains("no colon here"))
        #expect(try auth(TestClient(port: s.port), "bob", "hunter2") == "STORED\r\n")
    }

    @Test("auth_cmds and auth_errors: in stats where memcached puts them, and in /metrics")
    func counters() throws {
        let file = try secretFile("alice:secret\n")
        defer { unlink(file) }
        let metricsPort = freePort()
        let s = try ServerProcess.larder(["-t", "2", "-Y", file], metricsPort: metricsPort)
        defer { s.stop() }
        for (user, password) in [("alice", "nope"), ("bob", "secret"), ("alice", "secret")] {
            _ = try auth(TestClient(port: s.port), user, password)
        }
        let c = try TestClient(port: s.port)
        _ = try auth(c, "alice", "secret")
        let stats = try c.request("stats\r\n", until: "END\r\n")
        #expect(stats.contains("STAT store_no_memory 0\r\nSTAT auth_cmds 4\r\nSTAT auth_errors 2\r\nSTAT bytes_read "))
        let settings = try c.request("stats settings\r\n", until: "END\r\n")
        #expect(settings.contains("STAT cas_enabled yes\r\nSTAT auth_enabled_sasl no\r\nSTAT auth_enabled_ascii \(file)\r\n"))
        let page = try httpGet(port: metricsPort, path: "/metrics").body
        #expect(metric(page, "larder_auth_total{outcome=\"ok\"}") == 2)
        #expect(metric(page, "larder_auth_total{outcome=\"failed\"}") == 2)
    }

    @Test("thousands of failed attempts: a few log lines that count them, never a password")
    func failuresAreNotFlooded() throws {
        let file = try secretFile("alice:secret\n")
        defer { unlink(file) }
        let s = try ServerProcess.larder(["-t", "1", "-Y", file])
        defer { s.stop() }
        func burst(_ n: Int) throws {
            let c = try TestClient(port: s.port)
            let guess = "alice guess-0001"
            let one = "set a 0 0 \(guess.utf8.count)\r\n\(guess)\r\n"
            try c.send(String(repeating: one, count: n))
            _ = try c.read(count: n * "CLIENT_ERROR authentication failure\r\n".utf8.count)
        }
        try burst(2000)
        // Housekeeping may run only every few seconds: wait for its line (bounded).
        s.readLog(until: "failed attempt", timeout: 25)
        try burst(2000)
        // Wait (bounded) until the lines account for all 4,000; without the rate limit there
        // would be one per attempt.
        let deadline = Date().addingTimeInterval(45)
        var lines: [Substring] = []
        var total = 0
        repeat {
            let log = s.readLog(until: "(not in any log line)", timeout: 0.5)
            lines = log.split(separator: "\n").filter { $0.contains("failed attempt") }
            total = lines.compactMap { l in l.split(separator: " ").firstIndex(of: "failed").map { Int(l.split(separator: " ")[$0 - 1]) ?? 0 } }.reduce(0, +)
        } while total < 4000 && Date() < deadline
        #expect(total == 4000, "\(lines) \(s.stderrText)")
        // Every line about authentication after the start-up notice, whatever its wording.
        let authLines = s.stderrText.split(separator: "\n").filter { $0.contains("auth") && !$0.contains("authentication required") }
        #expect(authLines.count <= 4, "\(authLines.count) lines")
        #expect(!s.stderrText.contains("guess"))
    }
}

@Suite("metrics endpoint guard, real binary", .serialized)
struct MetricsGuardTests {
    func get(_ port: Int, _ authorization: String?) throws -> (status: Int, head: String, body: String) {
        let c = try TestClient(port: port)
        try c.send("GET /metrics HTTP/1.0\r\n" + (authorization.map { "Authorization: \($0)\r\n" } ?? "") + "\r\n")
        let text = try c.readToEOF().text
        let parts = text.components(separatedBy: "\r\n\r\n")
        return (Int(text.split(separator: " ").dropFirst().first ?? "0") ?? 0, parts[0], parts.dropFirst().joined())
    }

    @Test("401 with both challenges without credentials; a bearer token or basic auth opens it; failures counted")
    func guarded() throws {
        let token = try secretFile("t0k3n-for-prometheus\n")
        defer { unlink(token) }
        let users = try secretFile("prom:\(scrapeHash)\n")
        defer { unlink(users) }
        let port = freePort()
        let s = try ServerProcess.larder(["-t", "1", "--metrics-token-file", token, "--metrics-auth-file", users], metricsPort: port)
        defer { s.stop() }
        let denied = try get(port, nil)
        #expect(denied.status == 401)
        #expect(denied.head.contains("WWW-Authenticate: Basic realm=\"larder\"") && denied.head.contains("WWW-Authenticate: Bearer realm=\"larder\""))
        #expect(!denied.body.contains("larder_"))
        #expect(try get(port, "Bearer wrong").status == 401)
        #expect(try get(port, "Basic " + Data("prom:wrong".utf8).base64EncodedString()).status == 401)
        #expect(try httpGet(port: port, path: "/other").status == 401)
        let ok = try get(port, "Bearer t0k3n-for-prometheus")
        #expect(ok.status == 200)
        #expect(metric(ok.body, "larder_metrics_auth_failures_total") == 4)
        #expect(try get(port, "Basic " + Data("prom:scrape-pw".utf8).base64EncodedString()).status == 200)
        #expect(!s.readLog(until: "failed attempt").contains("wrong"))
    }

    @Test("credentials files are checked at start like the auth file")
    func refused() throws {
        let open = try secretFile("tok\n")
        defer { unlink(open) }
        chmod(open, 0o604)
        let plain = try secretFile("prom:plain-password\n")
        defer { unlink(plain) }
        let user = getuid() == 0 ? ["-u", "nobody"] : []
        for (args, setting, message) in [(["--metrics-token-file", open], "metrics-token-file", "chmod o-rwx"),
                                         (["--metrics-auth-file", plain], "metrics-auth-file", "bcrypt")] {
            let r = try runLarderExpectingExit(["-p", "0", "--metrics-port", "0"] + user + args)
            #expect(r.status == 64 && r.stderr.contains(setting) && r.stderr.contains(message), "\(r.stderr)")
            #expect(!r.stderr.contains("plain-password"))
        }
    }
}
