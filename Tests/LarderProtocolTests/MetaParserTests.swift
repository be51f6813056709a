// Meta and admin command parsing: every request fed whole, a byte at a time and in random
// chunks (parseAllWays), checking the command, its flags in order, base64 keys, memcached's
// error for each malformed form, and that an `ms` refused after its length was read has its
// data block swallowed (so the value is not read as commands).
import Testing
@testable import LarderProtocol

@Suite("parser: meta and admin")
struct MetaParserTests {
    @Test("meta commands", arguments: [
        ("mn\r\n", ["mn  []"]),
        ("mn x y\r\n", ["mn x [y]"]),
        ("mg a\r\n", ["mg a []"]),
        ("mg a v k O123 T30 N5 R10 q\r\n", ["mg a [v,k,O123,T30,N5,R10,q]"]),
        ("ms a 2 T0 F5 c\r\nhi\r\n", ["ms a [T0,F5,c] data=\"hi\""]),
        ("ms a 0\r\n\r\n", ["ms a [] data=\"\""]),
        ("ms a 4\r\na\r\nb\r\n", ["ms a [] data=\"a\\r\\nb\""]),
        ("md a q I T30\r\n", ["md a [q,I,T30]"]),
        ("ma a MD D5 J1 N0\r\n", ["ma a [MD,D5,J1,N0]"]),
        ("me a\r\n", ["me a []"]),
        ("mg Zm9v b k\r\n", ["mg b64:foo [b,k]"]),
        ("me Zm9v b\r\n", ["me b64:foo []"]),
        ("mgg a\r\nmz a\r\n", ["invalid ERROR [unknown]", "invalid ERROR [unknown]"]),
    ])
    func meta(input: String, expected: [String]) {
        #expect(parseAllWays(input) == expected)
    }

    @Test("meta errors, in memcached's order", arguments: [
        ("mg\r\n", "invalid ERROR [mg]"),
        ("mg \(String(repeating: "k", count: 251))\r\n", "invalid CLIENT_ERROR bad command line format [mg]"),
        ("mg a v v\r\n", "invalid CLIENT_ERROR duplicate flag [mg]"),
        ("mg a Z\r\n", "invalid CLIENT_ERROR invalid flag [mg]"),
        ("mg a Tx Zz\r\n", "invalid CLIENT_ERROR invalid flag [mg]"),
        ("mg a Nx Rx\r\n", "invalid CLIENT_ERROR bad token in command line format [mg]"),
        ("mg a Fx\r\n", "invalid CLIENT_ERROR bad command line format [mg]"),
        ("mg a MEE\r\n", "invalid CLIENT_ERROR incorrect length for M token [mg]"),
        ("mg Zm9 b\r\n", "invalid CLIENT_ERROR error decoding key [mg]"),
        ("mg a O\(String(repeating: "9", count: 32))\r\n", "invalid CLIENT_ERROR opaque token too long [mg]"),
        ("mg a a b c d e f g h i j k l m n o p q r s\r\n", "invalid CLIENT_ERROR options flags are too long [mg]"),
        ("md a a b c d e f g h i j k l m n o p q r s\r\n", "invalid CLIENT_ERROR options flags too long [md]"),
        ("md a Zz\r\n", "invalid CLIENT_ERROR invalid or duplicate flag [md]"),
        ("ma a q q\r\n", "invalid CLIENT_ERROR invalid or duplicate flag [ma]"),
        ("ma a Mx\r\n", "invalid CLIENT_ERROR invalid mode for ma M token [ma]"),
        ("ma a Dx\r\n", "invalid CLIENT_ERROR invalid or duplicate flag [ma]"),
        ("me\r\n", "invalid CLIENT_ERROR bad command line format [me]"),
        ("me Zm9 b\r\n", "invalid CLIENT_ERROR bad command line format [me]"),
        ("ms a\r\n", "invalid CLIENT_ERROR bad command line format [ms]"),
        ("ms\r\n", "invalid ERROR [ms]"),
    ])
    func errors(input: String, expected: String) {
        #expect(parseAllWays(input) == [expected])
    }

    @Test("an ms refused after its length is known swallows its data block")
    func msSwallows() {
        #expect(parseAllWays("ms a 2 Mx\r\nhi\r\nmn\r\n") == ["invalid CLIENT_ERROR invalid mode for ms M token [ms]", "mn  []"])
        #expect(parseAllWays("ms a 2 Z\r\nhi\r\nmn\r\n") == ["invalid CLIENT_ERROR invalid flag [ms]", "mn  []"])
        #expect(parseAllWays("ms a 2 O\(String(repeating: "9", count: 32))\r\nhi\r\nmn\r\n")
                == ["invalid CLIENT_ERROR opaque token too long [ms]", "mn  []"])
        // Before the length is known nothing is swallowed: the value is read as a command.
        #expect(parseAllWays("ms a x\r\nhi\r\n") == ["invalid CLIENT_ERROR bad command line format [ms]", "invalid ERROR [unknown]"])
        #expect(parseAllWays("ms a 2\r\nabc\r\n") == ["invalid CLIENT_ERROR bad data chunk [ms]", "invalid ERROR [unknown]"])
        let limits = ProtocolLimits(maxItemSize: 1024)
        let big = "ms a 2000 T0\r\n" + String(repeating: "v", count: 2000) + "\r\nmn\r\n"
        #expect(parseAllWays(big, limits: limits) == ["ms a [T0] data=\"\" too-large", "mn  []"])
    }

    @Test("admin commands", arguments: [
        ("cache_memlimit 100\r\n", "admin cacheMemlimit(megabytes: 100, noreply: false)"),
        ("cache_memlimit 100 noreply\r\n", "admin cacheMemlimit(megabytes: 100, noreply: true)"),
        ("cache_memlimit x\r\n", "invalid ERROR [admin]"),
        ("cache_memlimit\r\n", "invalid ERROR [admin]"),
        ("slabs automove 2\r\n", "admin slabsAutomove(level: 2, noreply: false)"),
        ("slabs automove 3\r\n", "invalid ERROR [admin]"),
        ("slabs automove x\r\n", "invalid CLIENT_ERROR bad command line format [admin]"),
        ("slabs automove ratio 0.8\r\n", "admin slabsAutomoveRatio(noreply: false)"),
        ("slabs reassign 1 2\r\n", "admin slabsReassign(source: 1, destination: 2)"),
        ("stats cachedump 1 10\r\n", "admin cachedump(slabClass: 1, limit: 10)"),
        ("stats cachedump 1\r\n", "invalid CLIENT_ERROR bad command line [stats]"),
        ("stats cachedump 64 1\r\n", "invalid CLIENT_ERROR Illegal slab id [stats]"),
        ("lru_crawler metadump all\r\n", "admin metadump"),
        ("lru_crawler sleep 2000000\r\n", "invalid CLIENT_ERROR sleep must be one second or less [admin]"),
        ("shutdown\r\n", "admin shutdown(graceful: Optional(false))"),
        ("shutdown graceful\r\n", "admin shutdown(graceful: Optional(true))"),
        ("shutdown now\r\n", "admin shutdown(graceful: nil)"),
        ("watch\r\n", "admin watch(LarderProtocol.WatchClasses(rawValue: 1))"),
        ("watch deletions mutations\r\n", "admin watch(LarderProtocol.WatchClasses(rawValue: 10))"),
        ("watch nonsense\r\n", "invalid ERROR [admin]"),
    ])
    func admin(input: String, expected: String) {
        #expect(parseAllWays(input) == [expected])
    }

    @Test("base64 round trip and memcached's refusals")
    func base64() {
        for s in ["Zg==", "Zm8=", "Zm9v", "AAEC//79", "Zm9vYmFy"] {
            let d = Array(s.utf8).withUnsafeBytes { base64Decode($0) }
            #expect(d != nil)
            let sink = ByteSink()
            d!.withUnsafeBytes { base64Encode($0, to: sink) }
            #expect(String(decoding: sink.array, as: UTF8.self) == s)
        }
        for s in ["Zg", "Zm9", "Zm9v=", "!!!!", "Z===", "===="] {
            #expect(Array(s.utf8).withUnsafeBytes { base64Decode($0) } == nil, "\(s)")
        }
        // memcached's decoder skips bytes outside the alphabet and stops after padding.
        for (s, d) in [("Zm9v!", "foo"), ("Zg==Zg==", "f"), ("Z=g=", "d"), ("Zm 9v", "foo")] {
            #expect(Array(s.utf8).withUnsafeBytes { base64Decode($0) } == Array(d.utf8), "\(s)")
        }
    }
}
