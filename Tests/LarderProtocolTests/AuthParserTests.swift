// The authentication reader (-Y) without sockets: what it answers for each input, fed whole,
// one byte at a time and in seeded random chunks (the answers must not depend on how the
// bytes arrive). Expected replies are memcached 1.6.18's, measured with `memcached -Y`
// (docs/AUTH.md); the differential test checks them against the real server.
import BenchSupport
import Testing
@testable import LarderProtocol

/// Runs `input` through an AuthParser the way a connection does, delivering it in pieces of
/// the given sizes; returns what happened, one entry per step with an effect. A good
/// credential ("alice secret") switches off the reader and the rest is returned as `rest`.
private func drive(_ input: [UInt8], chunks: [Int]) -> (events: [String], rest: [UInt8]) {
    var parser = AuthParser()
    var buffer: [UInt8] = []
    var events: [String] = []
    var fed = 0
    var pieces = chunks.makeIterator()
    while true {
        let n = min(pieces.next() ?? input.count, input.count - fed)
        buffer += input[fed..<(fed + n)]
        fed += n
        loop: while !buffer.isEmpty {
            let step = buffer.withUnsafeBytes { parser.parse($0) }
            switch step {
            case .needMore:
                break loop
            case .line(let c):
                buffer.removeFirst(c)
            case .refuse(let e, let c):
                events.append(String(describing: ReplyEncoder.errorLine(e)))
                buffer.removeFirst(c)
            case .credentials(let u, let p, let c):
                let user = String(decoding: buffer[u], as: UTF8.self), password = String(decoding: buffer[p], as: UTF8.self)
                buffer.removeFirst(c)
                if user == "alice" && password == "secret" {
                    events.append("STORED")
                    return (events, buffer + input[fed...])
                }
                events.append("CLIENT_ERROR authentication failure")
            case .close:
                events.append("<close>")
                return (events, [])
            }
        }
        if fed == input.count { return (events, buffer) }
    }
}

private func b(_ s: String) -> [UInt8] { Array(s.utf8) }

@Suite("authentication reader")
struct AuthParserTests {
    static let cases: [(String, [UInt8], [String], String)] = [
        ("any command is refused", b("version\r\nquit\r\nmn\r\nget a\r\nstats\r\n"), Array(repeating: "CLIENT_ERROR unauthenticated", count: 5), ""),
        ("good credentials", b("set a 0 0 12\r\nalice secret\r\nget a\r\n"), ["STORED"], "get a\r\n"),
        ("noreply is ignored", b("set a 0 0 12 noreply\r\nalice secret\r\n"), ["STORED"], ""),
        ("key, flags and exptime are ignored", b("set a x y 12\r\nalice secret\r\n"), ["STORED"], ""),
        ("extra tokens", b("set a 0 0 12 extra more\r\nalice secret\r\n"), ["STORED"], ""),
        ("leading and double spaces", b("   set  a 0 0 14\r\n alice  secret\r\n"), ["STORED"], ""),
        ("a third data token is ignored", b("set a 0 0 18\r\nalice secret extra\r\n"), ["STORED"], ""),
        ("bare LF after the line", b("set a 0 0 12\nalice secret\r\n"), ["STORED"], ""),
        ("+12 parses", b("set a 0 0 +12\r\nalice secret\r\n"), ["STORED"], ""),
        ("NUL ends the data", b("set a 0 0 13\r\nalice secret") + [0] + b("\r\n"), ["STORED"], ""),
        ("NUL ends the line", b("set a 0 0 12") + [0] + b(" junk\r\nalice secret\r\n"), ["STORED"], ""),
        ("wrong password, then right", b("set a 0 0 11\r\nalice wrong\r\nset a 0 0 12\r\nalice secret\r\n"),
         ["CLIENT_ERROR authentication failure", "STORED"], ""),
        ("NUL inside the password", b("set a 0 0 13\r\nalice secre") + [0] + b("t\r\n"), ["CLIENT_ERROR authentication failure"], ""),
        ("user only", b("set a 0 0 5\r\nalice\r\n"), ["CLIENT_ERROR bad authentication token format"], ""),
        ("colon instead of space", b("set a 0 0 12\r\nalice:secret\r\n"), ["CLIENT_ERROR bad authentication token format"], ""),
        ("empty block", b("set a 0 0 0\r\n\r\n"), ["CLIENT_ERROR bad authentication token format"], ""),
        ("length wraps to 0 in 32 bits", b("set a 0 0 4294967296\r\n\r\n"), ["CLIENT_ERROR bad authentication token format"], ""),
        ("size + 2 wraps to 0", b("set a 0 0 4294967294\r\n"), ["CLIENT_ERROR bad command line termination"], ""),
        ("size + 2 wraps to 1", b("set a 0 0 4294967295\r\nx"), ["CLIENT_ERROR bad command line termination"], ""),
        ("bad termination", b("set a 0 0 12\r\nalice secretXX\r\n"),
         ["CLIENT_ERROR bad command line termination", "CLIENT_ERROR unauthenticated"], ""),
        ("bad numbers", b("set a 0 0 -1\r\nset a 0 0 abc\r\nset a 0 0 12x\r\nset a 0 0\r\nSET a 0 0 12\r\nset\ta 0 0 12\r\n"),
         Array(repeating: "CLIENT_ERROR unauthenticated", count: 6), ""),
        ("a lone newline waits for a second byte", b("\n"), [], "\n"),
        ("largest block memcached can buffer", b("set a 0 0 16382\r\nalice secret") + [UInt8](repeating: 0x20, count: 16370) + b("\r\n"), ["STORED"], ""),
        ("a larger block closes", b("set a 0 0 16383\r\n"), ["<close>"], ""),
        ("a 1 MB block closes", b("set a 0 0 1048576\r\n") + [UInt8](repeating: 0x61, count: 4096), ["<close>"], ""),
        ("2048 bytes without a newline wait", [UInt8](repeating: 0x78, count: 2048), [], String(repeating: "x", count: 2048)),
        ("2049 bytes without a newline close", [UInt8](repeating: 0x78, count: 2049), ["<close>"], ""),
        ("a long line with its newline is refused", [UInt8](repeating: 0x78, count: 3000) + b("\r\n"), ["CLIENT_ERROR unauthenticated"], ""),
    ]

    @Test("replies match memcached's, however the bytes arrive", arguments: 0..<AuthParserTests.cases.count)
    func replies(_ i: Int) {
        let (name, input, expected, rest) = AuthParserTests.cases[i]
        let whole = drive(input, chunks: [input.count])
        #expect(whole.events == expected, "\(name)")
        #expect(String(decoding: whole.rest, as: UTF8.self) == rest, "\(name)")
        // A line over the limit closes the connection when it trickles in without its newline
        // (memcached checks what is buffered), so that case is only fed whole.
        if name.hasPrefix("a long line") { return }
        let single = drive(input, chunks: Array(repeating: 1, count: input.count))
        #expect(single.events == expected, "\(name), one byte at a time")
        // Seeded by the suite's seed (LARDER_TEST_SEED replays a run) and the case.
        var rng = SplitMix(state: testSeed &+ UInt64(i))
        let chunks = (0..<input.count).map { _ in 1 + Int(rng.next() % 64) }
        #expect(drive(input, chunks: chunks).events == expected, "\(name), random chunks (LARDER_TEST_SEED=\(testSeed))")
    }

    @Test("a pending block asks for its size, so the connection buffers it in one go")
    func bytesWanted() {
        var p = AuthParser()
        let line = b("set a 0 0 100\r\n")
        #expect(line.withUnsafeBytes { p.parse($0) } == .line(consumed: line.count))
        #expect(p.bytesWanted == 102)
        #expect([UInt8](repeating: 0x61, count: 50).withUnsafeBytes { p.parse($0) } == .needMore)
    }
}
