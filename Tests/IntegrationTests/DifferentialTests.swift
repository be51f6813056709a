// Differential test: the same raw request bytes go to memcached (Debian's package) and to
// Larder, each on a fresh connection that is half-closed after sending; the replies are
// compared byte for byte after normalising what legitimately differs (cas uniques and the
// version string).
import Foundation
import Testing

private func normalise(_ b: [UInt8]) -> String {
    var s = b.text
    s = s.replacingOccurrences(of: #"(VALUE \S+ \d+ \d+) \d+\r\n"#, with: "$1 <cas>\r\n", options: .regularExpression)
    s = s.replacingOccurrences(of: #"VERSION \S+"#, with: "VERSION <v>", options: .regularExpression)
    return s
}

private func b(_ s: String) -> [UInt8] { Array(s.utf8) }

/// Request sequences, each sent on its own connection after a `flush_all`.
private let cases: [(String, [UInt8])] = {
    let k251 = String(repeating: "k", count: 251)
    let k250 = String(repeating: "k", count: 250)
    var c: [(String, [UInt8])] = [
        // storage commands
        ("set/get", b("set a 0 0 1\r\nx\r\nget a\r\n")),
        ("set flags and exptime", b("set a 123 0 3\r\nabc\r\nget a\r\nset b 4294967295 100 1\r\nx\r\nget b\r\n")),
        ("flags truncate like C", b("set c 4294967296 0 1\r\nx\r\nget c\r\n")),
        ("length truncates like C", b("set z 0 0 4294967297\r\nx\r\nget z\r\n")),
        ("signed numbers", b("set z 0 0 +1\r\nx\r\nget z\r\nset y -0 0 1\r\nx\r\nget y\r\nset w -1 0 1\r\nx\r\n")),
        ("add/replace", b("add a 0 0 1\r\nx\r\nadd a 0 0 1\r\ny\r\nreplace a 0 0 1\r\nz\r\nreplace zz 0 0 1\r\nz\r\nget a zz\r\n")),
        ("append/prepend keep flags", b("set z 0 0 1\r\nx\r\nappend z 5 0 2\r\nyy\r\nprepend z 7 0 1\r\nw\r\nget z\r\nappend q 0 0 1\r\nx\r\nprepend q 0 0 1\r\nx\r\n")),
        ("cas", b("gets a\r\nset a 0 0 1\r\nx\r\ngets a\r\ncas a 0 0 1 999\r\ny\r\ncas zz 0 0 1 1\r\ny\r\ncas a 0 0 1 x\r\n1\r\ncas a 0 0 1 -1\r\nx\r\n")),
        ("noreply", b("set d 0 0 1 noreply\r\nx\r\nadd d 0 0 1 noreply\r\ny\r\nget d\r\nset e 0 0 1 norepl\r\nx\r\n")),
        ("value with CRLF inside", b("set v 0 0 6\r\na\r\nb\r\n\r\nget v\r\n")),
        ("empty value", b("set f 0 0 0\r\n\r\nget f\r\nincr f 1\r\n")),
        // bad data and bad lines
        ("bad data chunk", b("set a 0 0 5\r\nhelloXX\r\nget a\r\n")),
        ("bad data chunk, more junk", b("set a 0 0 5\r\nhelloXXYY\r\nget a\r\n")),
        ("bare LF data terminator", b("set a 0 0 1\nx\nget a\n")),
        ("data too long", b("set a 0 0 1\r\nxy\r\nget a\r\n")),
        ("bad data chunk with noreply", b("set a 0 0 1 noreply\r\nxy\r\nget a\r\n")),
        ("negative length", b("set b 0 0 -1\r\nget b\r\n")),
        ("huge length", b("set a 0 0 2147483647\r\nget a\r\n")),
        ("too many tokens", b("set kk 0 0 1 2 3\r\nx\r\nget kk\r\nset a 0 0 1 noreply extra\r\nx\r\n")),
        ("too few tokens", b("incr\r\nincr a\r\ntouch a\r\ncas a 0 0 1\r\nx\r\nget\r\ngets\r\ngat 0\r\ngats\r\ndelete\r\n")),
        ("unknown command", b("foo\r\nGET a\r\n\r\n\n")),
        ("bare LF line endings", b("set a 0 0 1\r\nx\r\nget a\nversion\n")),
        ("spaces", b("set  h  0  0  1 \r\nx\r\nget h\r\nget   h   \r\n")),
        ("tab is not a separator", b("set g\ta 0 0 1\r\nx\r\nget g\ta\r\nset s 0\t0 0 1\r\nx\r\n")),
        ("control bytes in key", b("set \u{01}\u{02} 0 0 1\r\nx\r\nget \u{01}\u{02}\r\n")),
        ("NUL ends the line", [UInt8](b("get a")) + [0] + b("b\r\nset a 0 0 1\r\nx\r\n")),
        ("long key on set", b("set \(k251) 0 0 1\r\nx\r\nget a\r\n")),
        ("long key on get", b("get \(k251)\r\n")),
        ("long key among keys", b("get a \(k251) b\r\n")),
        ("250-byte key", b("set \(k250) 0 0 1\r\nx\r\nget \(k250)\r\n")),
        ("HTTP request closes", b("GET / HTTP/1.1\r\nHost: x\r\n\r\n")),
        // delete
        ("delete forms", b("set z 0 0 1\r\nx\r\ndelete z noreply\r\ndelete z\r\ndelete z 0\r\ndelete z 0 noreply\r\ndelete z 0 x\r\ndelete z x\r\ndelete z 1\r\n")),
        ("delete long key", b("delete \(k251)\r\n")),
        // incr/decr
        ("incr/decr", b("set e 0 0 2\r\n10\r\ndecr e 1\r\nget e\r\nincr e 100\r\nget e\r\n")),
        ("incr wraps at 2^64", b("set n 0 0 20\r\n18446744073709551615\r\nincr n 2\r\nget n\r\n")),
        ("decr floors at 0", b("set m 0 0 1\r\n5\r\ndecr m 10\r\nget m\r\n")),
        ("bad deltas", b("set m 0 0 1\r\n5\r\nincr m 18446744073709551616\r\nincr m x\r\nincr m -1\r\nincr m 1a\r\nincr m +1\r\ndecr m -0\r\n")),
        ("non-numeric values", b("set j 0 0 2\r\n-5\r\nincr j 1\r\nset u 0 0 2\r\nab\r\nincr u 1\r\nincr u 1 noreply\r\n")),
        ("numeric oddities", b("set z 0 0 3\r\n 12\r\nincr z 1\r\nset z 0 0 3\r\n1 2\r\nincr z 1\r\nget z\r\nset z 0 0 22\r\n0000000000000000000001\r\nincr z 1\r\nget z\r\n")),
        ("incr extra token and noreply", b("set z 0 0 2\r\n12\r\nincr z 1 2\r\nincr z 1 noreply\r\nget z\r\nincr q 1 noreply\r\nincr q x noreply\r\n")),
        // touch / gat
        ("touch and gat", b("set a 0 0 1\r\nx\r\ntouch a 10\r\ntouch zz 10\r\ngat 0 a zz\r\ngats 0 a\r\ngat a\r\ntouch a x\r\ntouch a 0 noreply\r\ntouch zz 0 1\r\n")),
        // exptime
        ("exptime forms", b("set z 0 2592000 1\r\nx\r\nget z\r\nset y 0 2592001 1\r\nx\r\nget y\r\nset k 0 -1 1\r\nx\r\nget k\r\nset k2 0 99999999999 1\r\nx\r\nget k2\r\n")),
        // misc
        ("flush_all forms", b("set a 0 0 1\r\nx\r\nflush_all\r\nget a\r\nflush_all 0\r\nflush_all noreply\r\nflush_all -1\r\nflush_all x\r\nflush_all 1 2\r\nflush_all 0 noreply extra\r\nflush_all 0\r\n")),
        ("verbosity and version", b("verbosity 1\r\nverbosity\r\nverbosity 1 noreply\r\nverbosity x\r\nverbosity 1 2 3\r\nversion\r\nversion x\r\n")),
        ("quit", b("set a 0 0 1\r\nx\r\nquit\r\nget a\r\n")),
        ("quit with argument", b("quit x\r\nget a\r\n")),
        ("stats sub-commands", b("stats foo\r\nstats detail on\r\nstats detail\r\nstats reset\r\n")),
        ("multi-get beyond 24 tokens", b("set k1 0 0 1\r\n1\r\nset k30 0 0 2\r\n30\r\nget " + (0..<40).map { "k\($0)" }.joined(separator: " ") + "\r\n")),
        ("very long multi-get", b("get " + (0..<600).map { "k\($0)" }.joined(separator: " ") + "\r\n")),
        ("junk line with newline", [UInt8](repeating: 0x78, count: 3000) + b("\r\nset a 0 0 1\r\nx\r\n")),
    ]
    // Items near and over the size limit; the too-large data block is swallowed.
    c.append(("just under -I", b("set i 0 0 1048000\r\n") + [UInt8](repeating: 0x61, count: 1_048_000) + b("\r\nget j\r\n")))
    c.append(("over -I", b("set i 0 0 1048576\r\n") + [UInt8](repeating: 0x61, count: 1_048_576) + b("\r\nget j\r\n")))
    c.append(("way over -I", b("set i 0 0 3000000\r\n") + [UInt8](repeating: 0x61, count: 3_000_000) + b("\r\nget i\r\n")))
    c.append(("too-large set removes the old value", b("set z 0 0 1\r\nx\r\nset z 0 0 3000000\r\n") + [UInt8](repeating: 0x61, count: 3_000_002) + b("get z\r\n")))
    // append/prepend may not grow an item past -I: NOT_STORED, the item unchanged.
    let half = [UInt8](repeating: 0x62, count: 600_000)
    c.append(("append past -I", b("set p 0 0 600000\r\n") + half + b("\r\nappend p 0 0 600000\r\n") + half
        + b("\r\nprepend p 0 0 600000\r\n") + half + b("\r\nappend p 0 0 1\r\nz\r\nget q\r\n")))
    c.append(("append up to -I", b("set p 0 0 524000\r\n") + half[0..<524_000] + b("\r\nappend p 0 0 524000\r\n")
        + half[0..<524_000] + b("\r\nappend p 0 0 1\r\nz\r\nappend p 0 0 1\r\nz\r\nget q\r\n")))
    c.append(("too-large add keeps it", b("set z 0 0 1\r\nx\r\nadd z 0 0 3000000\r\n") + [UInt8](repeating: 0x61, count: 3_000_002) + b("get z\r\n")))
    return c
}()

@Suite("differential: Larder vs memcached", .serialized)
struct DifferentialTests {
    @Test("every case gets memcached's bytes")
    func differential() throws {
        let mc = try ServerProcess.memcached(["-t", "2", "-m", "64"])
        defer { mc.stop() }
        let larder = try ServerProcess.larder(["-t", "2", "-m", "64"])
        defer { larder.stop() }
        var differences: [String] = []
        for (name, bytes) in cases {
            _ = try exchange(b("flush_all\r\n"), port: mc.port)
            _ = try exchange(b("flush_all\r\n"), port: larder.port)
            let expected = normalise(try exchange(bytes, port: mc.port))
            let got = normalise(try exchange(bytes, port: larder.port))
            if expected != got {
                differences.append("\(name):\n  memcached: \(expected.debugDescription)\n  larder:    \(got.debugDescription)")
            }
        }
        let report = "\(differences.count) of \(cases.count) cases differ:\n" + differences.joined(separator: "\n")
        #expect(differences.isEmpty, Comment(rawValue: report))
    }

    @Test("pipelined requests split at every byte boundary get memcached's bytes")
    func splitEverywhere() throws {
        let mc = try ServerProcess.memcached(["-t", "1"])
        defer { mc.stop() }
        let larder = try ServerProcess.larder(["-t", "1"])
        defer { larder.stop() }
        let req = b("set a 1 0 3\r\nabc\r\nget a b\r\nappend a 0 0 2\r\nde\r\ngets a\r\nincr n 1\r\ndelete a\r\nget a\r\n")
        let expected = normalise(try exchange(req, port: mc.port))
        // Send one byte at a time with the server answering in between.
        let c = try TestClient(port: larder.port)
        for byte in req { try c.send([byte]); usleep(200) }
        c.shutdownWrite()
        #expect(normalise(try c.readToEOF()) == expected)
    }
}
