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
    // Meta replies: cas values (` c<n>` flags, `cas=<n>` of me) are the servers' own, and
    // last-access ages (`l<n>`, `la=<n>`) approximate in Larder; a
    // remaining TTL may be a second apart (the two servers are asked at different moments),
    // so it is rounded up to a multiple of 10 (t29 and t30 compare equal, t30 and t100 not).
    var lines = s.components(separatedBy: "\r\n")
    for (i, line) in lines.enumerated() {
        guard let code = line.split(separator: " ", maxSplits: 1).first,
              ["HD", "VA", "EN", "NF", "EX", "NS", "ME"].contains(String(code)) else { continue }
        var parts = line.split(separator: " ", omittingEmptySubsequences: false).map(String.init)
        for j in 1..<max(1, parts.count) {
            let p = parts[j]
            if code == "ME" {
                if p.hasPrefix("cas=") { parts[j] = "cas=<cas>" }
                if p.hasPrefix("la=") { parts[j] = "la=<age>" }
                if p.hasPrefix("exp="), let v = Int(p.dropFirst(4)), v < -1 { parts[j] = "exp=-\(roundTTL(-v))" }
                continue
            }
            if p.hasPrefix("c"), p.count > 1, p.dropFirst().allSatisfy(\.isNumber) { parts[j] = "c<cas>" }
            if p.hasPrefix("t"), p.count > 1, let v = Int(p.dropFirst()), v >= 0 { parts[j] = "t\(roundTTL(v))" }
            // Last-access age is approximate in Larder (docs/PROTOCOL.md).
            if p.hasPrefix("l"), p.count > 1, p.dropFirst().allSatisfy(\.isNumber) { parts[j] = "l<age>" }
        }
        lines[i] = parts.joined(separator: " ")
    }
    return lines.joined(separator: "\r\n")
}

private func roundTTL(_ v: Int) -> Int { (v + 9) / 10 * 10 }

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
    // Meta commands (memcached 1.6.18: mg ms md ma mn me, every flag, mode and error).
    let o33 = "O" + String(repeating: "9", count: 32)
    let o32 = "O" + String(repeating: "9", count: 31)
    let manyFlags = "a b c d e f g h i j k l m n o p q r s".split(separator: " ").joined(separator: " ")
    c += [
        ("meta mn and me", b("mn\r\nme\r\nme x\r\nms x 1\r\nx\r\nme x\r\nmg x h\r\nme x\r\nme x y\r\nmn x\r\nmz\r\nmgg x\r\nme \(k251)\r\n")),
        ("me with TTL, flags, binary", b("ms mt 5 T100 F7\r\nhello\r\nme mt\r\nms Zm9v 3 b\r\nbar\r\nme Zm9v b\r\nme foo\r\nme Zm9 b\r\n")),
        ("mg hit and miss flags", b("ms a 3 F5 T100\r\nabc\r\nmg a\r\nmg a v\r\nmg a s v f t c k O123 h l\r\nmg a q\r\nmg a k q\r\nmg b q\r\nmg b\r\nmg b k O9 v s q\r\nmg b k O9 v s\r\nmn\r\n")),
        ("mg h and u", b("ms a 1\r\nx\r\nmg a h u\r\nmg a h\r\nmg a h\r\nms a 1\r\ny\r\nmg a h v\r\n")),
        ("mg touch", b("ms a 1 T100\r\nx\r\nmg a t T30 t\r\nmg a T0 t\r\nmg a T-1 v\r\nmg a v\r\nmg zz T10\r\nmg zz T10 q\r\nmn\r\n")),
        ("mg errors", b("mg\r\nmg a v v\r\nmg a Zz\r\nmg a Nx\r\nmg a Tx\r\nmg a Rx\r\nmg a E1\r\nmg a S1\r\nmg \(k251)\r\nmg a \(o33)\r\nmg zz \(o33)\r\nmg zz \(o32)\r\nmg a \(manyFlags)\r\nmg a \u{7f}\r\nmg a Tx Zz\r\nmg a Nx Rx\r\nmg a q q\r\nmg a Fx\r\nmg a C1 J5 D3 MX I P L\r\n")),
        ("ms modes", b("ms a 1 ME\r\n1\r\nms a 1 ME\r\n2\r\nms a 1 MA\r\n3\r\nms a 1 MP\r\n0\r\nmg a v\r\nms b 1 MR\r\nx\r\nms b 1 MA\r\nx\r\nms b 1 MP\r\nx\r\nms a 1 MR\r\nz\r\nms a 1 MS\r\ns\r\nmg a v\r\nmg b v\r\n")),
        ("ms flags and reply order", b("ms a 2 c k O1 F9 T0\r\nhi\r\nmg a f v\r\nms a 2 O1 k c q\r\nhi\r\nms a 2 ME c k O1\r\nhi\r\nms nn 1 MR c k O2\r\n1\r\nms a 2 C1 c\r\nhi\r\nms zz 2 C1 k\r\nhi\r\nms a 1 MA C1 c\r\n2\r\nms a 1 MA C0 q\r\n3\r\nmg a v\r\nms a 0 s t f v h l u N5 R5\r\n\r\nmg a v\r\n")),
        ("ms cas round trip", b("ms a 1\r\nx\r\nmg a c\r\n")),
        ("ms errors", b("ms a\r\nms a x\r\nhi\r\nms a -1\r\nms a 2 Mx\r\nhi\r\nms a 2 MEE\r\nhi\r\nms a 2 Z\r\nhi\r\nms a 2 T T\r\nhi\r\nms a 2 Fx\r\nhi\r\nms a 2 Tx\r\nhi\r\nms a 2 \(o33)\r\nhi\r\nms a 2 \(o33) Mx\r\nhi\r\nms a 2 S2\r\nhi\r\nms a 2 E5\r\nhi\r\nms a S2\r\nhi\r\nms \(k251) 1\r\nx\r\nms a 2 \(manyFlags)\r\nhi\r\nms\r\nmg a v\r\n")),
        ("ms bad data chunk", b("ms y 2\r\nabc\r\nms y 2 q\r\nabcd\r\nmg y v\r\nms y 1 q\r\nx\nmn\r\n")),
        ("ms CRLF inside and empty", b("ms v 6\r\na\r\nb\r\n\r\nmg v v\r\nms e 0\r\n\r\nmg e v s\r\n")),
        ("md", b("ms a 1\r\nx\r\nmd a q\r\nmd a q\r\nmd a\r\nmd a k O5\r\nms a 1\r\nx\r\nmd a C1\r\nmd a C1 q k\r\nmg a v\r\nmd a x\r\nmd a Zz\r\nmd a q q\r\nmd \(k251)\r\nmd a \(o33)\r\nmd a \(manyFlags)\r\nmd\r\nmd a v s t f c\r\nmg a v\r\n")),
        ("md with cas round trip", b("ms a 1 c\r\nx\r\nmg a\r\n")),
        ("ma", b("ma n\r\nma n q\r\nma n N0 J5 q\r\nma n q\r\nma n v\r\nma n MD D100 v t\r\nma n M+ D7 v\r\nma n M- D2 v\r\nma n MI v\r\nma n Mx\r\nma n MII\r\nma n Dx\r\nma n Jx\r\nma n D-1\r\nma zz q O5 k\r\nma zz O5 k\r\nma n C1 q O6 k\r\nma n v q t c N0 T0\r\nma n t T50 t\r\nmg n v t\r\nma\r\nma \(k251)\r\nma n \(o33)\r\nma n \(manyFlags)\r\n")),
        ("ma vivify and TTL", b("ma v N100 J41 v t\r\nma v N100 J41 v t\r\nma w N0 J18446744073709551615 v\r\nma w v\r\nma x N30 T60 t v\r\nma y T60 N30 t v\r\nmg x t\r\nmg y t\r\n")),
        ("ma on odd values", b("ms s 1\r\nx\r\nma s\r\nms s 2\r\n10\r\nma s MD D5 v\r\nmg s v\r\nma s MD D50 v\r\nms s 20\r\n18446744073709551615\r\nma s v\r\nma s D18446744073709551616\r\n")),
        ("stale: md I, X and W once", b("ms x 2 T100\r\nhi\r\nmd x I T30\r\nmg x t v\r\nmg x v\r\nmg x\r\nmg x c\r\nms x 3 C999 I\r\nnew\r\nmg x v\r\nms x 3 I\r\nnew\r\nmg x v\r\n")),
        ("stale: ms with an older cas and I", b("ms x 3 T0\r\nold\r\nms x 3 C1 I\r\nnew\r\nmg x v\r\nmg x v\r\nmd x I q\r\nmg x v\r\nmg x v\r\nmd x I\r\nmg x v\r\nmd x\r\nmg x v\r\n")),
        ("vivify: N gives W once, then Z", b("mg v N30 s t v\r\nmg v N30 v\r\nmg v v\r\nmg v N30 c t\r\nms v 1\r\nx\r\nmg v v\r\nmg v N30 v\r\nmg w N30 q\r\nmg w N30 q\r\nmg w t N30 t\r\nmn\r\n")),
        ("recache: R wins once", b("ms r 1 T10\r\nx\r\nmg r R30 v\r\nmg r R30 v\r\nmg r R5 v\r\nmg r h l t\r\nmg r h\r\nms s 1 T100\r\nx\r\nmg s R30 v\r\nmg s T20 R30 v\r\nms u 1\r\nx\r\nmg u R30 v\r\nmg u R0 v\r\nmg u R-1 v\r\n")),
        ("base64 keys", b("ms Zm9v 3 b F5 T0\r\nbar\r\nmg foo v f k\r\nmg Zm9v b k v s\r\nmg Zm9 b\r\nmg Zm9v= b\r\nmg !!!! b\r\nmg Zg== b k\r\nmg Zg b k\r\nms Zm9v 1 b k c q\r\nx\r\nmd Zm9v b k q\r\nmd Zm9v b k\r\nme Zm9v b\r\nma Zm9v b N0 J1 k v\r\nmg Zm9v b k O1 v\r\nmg Zm9v b b\r\nms AAEC 1 b k\r\nx\r\nmg AAEC b k v\r\nmd AAEC b\r\nms Zm9v 2 b Mx\r\nhi\r\nmg Z=== b\r\nmg ==== b\r\nmg Zg==Zg== b k\r\nmg Z=g= b k\r\nmg Zm9v! b k v\r\nmg Zm9v!! b\r\n")),
        ("quiet pipeline", b("ms a 1 q\r\n1\r\nms b 1 q\r\n2\r\nmg a q v k\r\nmg zz q v k\r\nmg b q v k O7\r\nmg yy q k\r\nmd zz q\r\nmd a q\r\nma b q\r\nma zz q\r\nmn\r\n")),
        ("mixed classic and meta", b("set a 0 0 1\r\nx\r\nmg a v f\r\nms b 2 F3\r\nyz\r\nget a b\r\ngets b\r\nincr a 1\r\nset n 0 0 1\r\n5\r\nma n v\r\nincr n 1\r\ndelete b\r\nmd b\r\nappend a 0 0 1\r\nq\r\nmg a v\r\ntouch a 100\r\nmg a t\r\nmn\r\nget a\r\n")),
        ("classic commands clear stale", b("ms x 1\r\nx\r\nmd x I\r\nappend x 0 0 1\r\ny\r\nmg x v\r\nmd x I\r\nset x 0 0 1\r\nz\r\nmg x v\r\nmd x I\r\ntouch x 100\r\nmg x v\r\n")),
        ("meta too large", b("ms x 1\r\nx\r\nms x 1048576\r\n") + [UInt8](repeating: 0x61, count: 1_048_578) + b("mg x v\r\nms x 1048576 q T0 MA\r\n") + [UInt8](repeating: 0x61, count: 1_048_578) + b("mn\r\n")),
        // Admin commands tools send.
        ("cache_memlimit", b("cache_memlimit 4\r\ncache_memlimit 2000000000\r\ncache_memlimit x\r\ncache_memlimit 64 noreply\r\ncache_memlimit\r\ncache_memlimit 32\r\ncache_memlimit 64\r\ncache_memlimit 1 2 3\r\ncache_memlimit 4 noreply\r\n")),
        ("slabs", b("slabs reassign 1 1\r\nslabs reassign 0 1\r\nslabs reassign 1 2\r\nslabs reassign x 2\r\nslabs reassign 1 39\r\nslabs reassign 1 40\r\nslabs reassign 1 2 3\r\nslabs automove 3\r\nslabs automove 1\r\nslabs automove 0\r\nslabs automove x\r\nslabs automove ratio 0.5\r\nslabs automove ratio\r\nslabs automove ratio x 1\r\nslabs automove 1 noreply\r\nslabs\r\nslabs foo\r\n")),
        ("stats cachedump forms", b("stats cachedump\r\nstats cachedump 1\r\nstats cachedump x 1\r\nstats cachedump 64 1\r\nstats cachedump 50 0\r\n")),
        ("lru_crawler forms", b("lru_crawler crawl all\r\nlru_crawler tocrawl 5\r\nlru_crawler tocrawl x\r\nlru_crawler sleep 100\r\nlru_crawler sleep 2000000\r\nlru_crawler x\r\nlru_crawler\r\nlru_crawler metadump\r\n")),
        ("shutdown without -A", b("shutdown\r\nshutdown x\r\nshutdown graceful\r\nget a\r\n")),
    ]
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

    /// ASCII authentication (-Y): both servers read the same auth file; each case is a
    /// conversation on one connection, a step sent only once the replies to the previous one
    /// (their number of lines is given) have arrived. Pre-auth requests go one per step:
    /// memcached keeps only the last of the pre-auth replies it produces from one read (see
    /// `pipelinedPreAuth` below); everything else is pipelined freely.
    @Test("authentication: every reply and the connection's fate are memcached's")
    func authentication() throws {
        let file = try AuthFixture.write("alice:secret\nbob:pw2\nalice:second\n")
        defer { unlink(file) }
        let mc = try ServerProcess.memcached(["-t", "2", "-Y", file])
        defer { mc.stop() }
        let larder = try ServerProcess.larder(["-t", "2", "-Y", file])
        defer { larder.stop() }
        var differences: [String] = []
        for (name, steps) in authCases {
            let expected = normalise(try converse(steps, port: mc.port))
            let got = normalise(try converse(steps, port: larder.port))
            if expected != got {
                differences.append("\(name):\n  memcached: \(expected.debugDescription)\n  larder:    \(got.debugDescription)")
            }
        }
        // Both servers saw the same attempts: the counters and their place in `stats` agree.
        #expect(try authStats(mc.port) == authStats(larder.port))
        #expect(try authStats(larder.port).contains { $0.hasPrefix("STAT auth_errors ") })
        let report = "\(differences.count) of \(authCases.count) cases differ:\n" + differences.joined(separator: "\n")
        #expect(differences.isEmpty, Comment(rawValue: report))
    }

    /// The one deliberate difference: memcached answers pre-auth requests through a single
    /// response object that each new one resets until the batch is written, so of several
    /// pre-auth requests read at once only the last reply is sent (a client waiting for one
    /// reply per request would hang). Larder answers each; its last reply is memcached's only.
    @Test("pipelined pre-auth requests: memcached drops all but the last reply, Larder answers each")
    func pipelinedPreAuth() throws {
        let file = try AuthFixture.write("alice:secret\n")
        defer { unlink(file) }
        let mc = try ServerProcess.memcached(["-t", "1", "-Y", file])
        defer { mc.stop() }
        let larder = try ServerProcess.larder(["-t", "1", "-Y", file])
        defer { larder.stop() }
        let batches: [(String, [String])] = [
            ("version\r\nquit\r\nset a 0 0 5\r\nalice\r\n",
             ["CLIENT_ERROR unauthenticated", "CLIENT_ERROR unauthenticated", "CLIENT_ERROR bad authentication token format"]),
            ("set a 0 0 5\r\nalice\r\nset a 0 0 12\r\nalice wrongg\r\nset a 0 0 12\r\nalice secret\r\nget a\r\n",
             ["CLIENT_ERROR bad authentication token format", "CLIENT_ERROR authentication failure", "STORED", "END"]),
        ]
        for (request, larderLines) in batches {
            let l = try exchange(b(request), port: larder.port).text
            #expect(l == larderLines.map { $0 + "\r\n" }.joined())
            // memcached: only the last pre-auth reply, then whatever follows authentication.
            let firstKept = larderLines.firstIndex(of: "STORED") ?? larderLines.count - 1
            #expect(try exchange(b(request), port: mc.port).text == larderLines[firstKept...].map { $0 + "\r\n" }.joined())
        }
    }
}

/// An auth file both servers can read: mode 0600 (Larder refuses files others may read),
/// owned by the user they serve as (nobody when the tests run as root).
enum AuthFixture {
    static func write(_ text: String) throws -> String {
        let path = NSTemporaryDirectory() + "larder-auth-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try text.write(toFile: path, atomically: false, encoding: .utf8)
        chmod(path, 0o600)
        if getuid() == 0, let pw = getpwnam("nobody") { chown(path, pw.pointee.pw_uid, pw.pointee.pw_gid) }
        return path
    }
}

/// Sends each step's bytes on one connection, waiting after each for the given number of
/// reply lines (CRLFs); then half-closes and reads to the end. A step that does not get its
/// lines (the server closed or stayed silent) ends the conversation with a marker. Returns
/// everything received.
private func converse(_ steps: [([UInt8], Int)], port: Int) throws -> [UInt8] {
    let c = try TestClient(port: port)
    var out: [UInt8] = []
    for (bytes, lines) in steps {
        guard (try? c.send(bytes)) != nil else { break }
        var got = 0
        while got < lines {
            // One read may bring several lines (and always ends at a line's end).
            guard let chunk = try? c.read(until: "\r\n") else {
                // Closed or silent: recorded in the output, so the case shows as a difference.
                return out + b("<waited for \(lines) line(s), got \(got)>")
            }
            out += Array(chunk.utf8)
            got += chunk.components(separatedBy: "\r\n").count - 1
        }
    }
    c.shutdownWrite()
    out += (try? c.readToEOF()) ?? []
    return out
}

/// `stats` lines around the auth counters: the line before, the two counters, the line after.
private func authStats(_ port: Int) throws -> [String] {
    let c = try TestClient(port: port)
    try c.send("set a 0 0 12\r\nalice secret\r\nstats\r\n")
    let lines = try c.read(until: "END\r\n").components(separatedBy: "\r\n")
    guard let i = lines.firstIndex(where: { $0.hasPrefix("STAT auth_cmds ") }), i > 0, i + 2 < lines.count else { return lines }
    let name = { (l: String) in String(l.split(separator: " ")[1]) }
    return [name(lines[i - 1]), lines[i], lines[i + 1], name(lines[i + 2])]
}

/// Authentication conversations: (bytes, reply lines to wait for) per step.
private let authCases: [(String, [([UInt8], Int)])] = {
    func s(_ text: String, _ lines: Int) -> ([UInt8], Int) { (b(text), lines) }
    let secret = "alice secret"
    return [
        ("commands before auth", [s("version\r\n", 1), s("quit\r\n", 1), s("mn\r\n", 1), s("get a\r\n", 1), s("stats\r\n", 1),
                                  s("flush_all\r\n", 1), s("verbosity 1\r\n", 1), s("ms a 1\r\n", 1), s("x\r\n", 1), s("\r\n", 1),
                                  s("delete a noreply\r\n", 1), s("shutdown\r\n", 1), s("GET / HTTP/1.1\r\n", 1)]),
        ("auth, then commands pipelined", [s("set k 0 0 12\r\n\(secret)\r\nset b 0 0 1\r\nx\r\nget b\r\nmn\r\nversion\r\nmg b v\r\n", 9)]),
        ("a second auth set is a normal set", [s("set a 0 0 12\r\n\(secret)\r\nset c 0 0 12\r\n\(secret)\r\nget c\r\n", 5)]),
        ("noreply is ignored", [s("set a 0 0 12 noreply\r\n\(secret)\r\n", 1), s("get a\r\nset d 0 0 1 noreply\r\nx\r\nget d\r\n", 4)]),
        ("failure keeps the connection", [s("set a 0 0 11\r\nalice wrong\r\n", 1), s("get a\r\n", 1), s("set a 0 0 7\r\nbob pw2\r\n", 1),
                                          s("get a\r\n", 1)]),
        ("a user listed twice takes either password", [s("set a 0 0 12\r\nalice second\r\n", 1), s("mn\r\n", 1)]),
        ("wrong user, case, prefix", [s("set a 0 0 11\r\nalic secret\r\n", 1), s("set a 0 0 12\r\nALICE secret\r\n", 1),
                                      s("set a 0 0 11\r\nalice secre\r\n", 1), s("set a 0 0 13\r\nalice secret2\r\n", 1),
                                      s("set a 0 0 7\r\nbob pw3\r\n", 1)]),
        ("bad token format", [s("set a 0 0 5\r\nalice\r\n", 1), s("set a 0 0 12\r\nalice:secret\r\n", 1), s("set a 0 0 0\r\n\r\n", 1),
                              s("set a 0 0 4294967296\r\n\r\n", 1), s("set a 0 0 12\r\nalice\tsecret\r\n", 1)]),
        ("bad termination", [s("set a 0 0 12\r\nalice secretXX", 1), s("\r\n", 1), s("set a 0 0 12\r\nalice secret\nv", 1),
                             s("set a 0 0 4294967294\r\n", 1), s("set a 0 0 4294967295\r\nx", 1), s("mn\r\n", 1)]),
        ("request lines", [s("set a 0 0 -1\r\n", 1), s("set a 0 0 abc\r\n", 1), s("set a 0 0 12x\r\n", 1), s("set a 0 0\r\n", 1),
                           s("SET a 0 0 12\r\n", 1), s("set\ta 0 0 12\r\n", 1), s("set\n", 1), s("set a x y 12\r\n\(secret)\r\n", 1)]),
        ("spaces and extra tokens", [s("   set  a 0 0 12 extra more\r\n\(secret)\r\n", 1)]),
        ("spaces in the data", [s("set a 0 0 14\r\n alice  secret\r\n", 1)]),
        ("a third data token is ignored", [s("set a 0 0 18\r\nalice secret extra\r\n", 1)]),
        ("bare LF after the auth line", [s("set a 0 0 12\n\(secret)\r\n", 1)]),
        ("+12", [s("set a 0 0 +12\r\n\(secret)\r\n", 1)]),
        ("NUL ends the data", [([UInt8](b("set a 0 0 13\r\nalice secre")) + [0] + b("t\r\n"), 1),
                               ([UInt8](b("set a 0 0 13\r\nalice secret")) + [0] + b("\r\n"), 1)]),
        ("NUL ends the line", [([UInt8](b("set a 0 0 12")) + [0] + b(" junk\r\n\(secret)\r\n"), 1)]),
        ("the auth line and block split", [s("set a 0 0 12\r", 0), s("\nalice ", 0), s("secret\r", 0), s("\nmn\r\n", 2)]),
        ("largest block", [([UInt8](b("set a 0 0 16382\r\n\(secret)")) + [UInt8](repeating: 0x20, count: 16370) + b("\r\n"), 1)]),
        ("a block too large closes", [([UInt8](b("set a 0 0 16383\r\n\(secret)")) + [UInt8](repeating: 0x20, count: 16371) + b("\r\n"), 0)]),
        ("a 1 MB block closes", [([UInt8](b("set a 0 0 1048576\r\n")) + [UInt8](repeating: 0x61, count: 1_048_578), 0)]),
        ("2048 bytes with no newline wait", [([UInt8](repeating: 0x78, count: 2048), 0), s("\r\n", 1)]),
        ("2049 bytes with no newline close", [([UInt8](repeating: 0x78, count: 2049), 0)]),
        ("a long line with its newline", [([UInt8](repeating: 0x78, count: 3000) + b("\r\n"), 1)]),
    ]
}()

