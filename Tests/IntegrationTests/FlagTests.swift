// The flag parser that reads both the command line and the config file: getopt's spellings,
// the settings each flag sets, and the refusals (unknown flag, missing value, stray argument).
import LarderServer
import Testing

@Suite("flag parser")
struct FlagTests {
    func settings(_ args: [String]) throws -> [String] {
        try FlagParser.settings(FlagParser.parse(args)).map { "\($0.setting)=\($0.value)" }
    }

    @Test("short, long, attached and = spellings set the same settings")
    func spellings() throws {
        #expect(try settings(["-p", "1", "-p2", "--port", "3", "--port=4"]) == ["port=1", "port=2", "port=3", "port=4"])
        #expect(try settings(["-m", "32", "--memory-limit=16", "-I", "2m"]) == ["memory-limit=32", "memory-limit=16", "max-item-size=2m"])
        #expect(try settings(["-M"]) == ["disable-evictions=true"])
        #expect(try settings(["--disable-evictions", "--client-memory", "0"]) == ["disable-evictions=true", "client-memory=0"])
    }

    @Test("-v counts, clustered switches and a value after them in one word")
    func clusters() throws {
        #expect(try settings(["-vv"]) == ["verbose=2"])
        #expect(try settings(["-v", "--verbose", "-v"]) == ["verbose=3"])
        #expect(try settings(["-vvvvv"]) == ["verbose=3"])
        #expect(try settings(["-Mvt4"]) == ["disable-evictions=true", "threads=4", "verbose=1"])
    }

    @Test("help, version and config are actions, not settings")
    func actions() throws {
        let parsed = try FlagParser.parse(["-h", "--version", "--config", "/x"])
        #expect(parsed.map(\.spec.kind) == [.help, .version, .config])
        #expect(parsed.last?.value == "/x")
        #expect(FlagParser.settings(parsed).isEmpty)
    }

    @Test("refused: unknown flags, missing values, values given to switches, stray words",
          arguments: [
        (["--port-number", "1"], "unknown flag '--port-number'"),
        (["-x"], "unknown flag '-x'"),
        (["-p"], "needs a value"),
        (["--memory-limit"], "needs a value"),
        (["--disable-evictions=yes"], "takes no value"),
        (["11211"], "unexpected argument '11211'"),
        (["--", "extra"], "unexpected argument 'extra'"),
    ])
    func refused(args: [String], message: String) {
        #expect {
            _ = try FlagParser.parse(args)
        } throws: { error in
            "\(error)".contains(message)
        }
    }

    @Test("every setting has a flag, and every flag's setting is known")
    func tableCoversSettings() {
        var fromFlags: Set<String> = []
        for f in FlagParser.table {
            switch f.kind {
            case .setting(let s), .enable(let s), .count(let s): fromFlags.insert(s)
            default: break
            }
        }
        #expect(fromFlags == Set(ServerConfig.settingNames))
    }

    @Test("help lists every flag under memcached's groups")
    func help() {
        let text = FlagParser.helpText(version: "9.9")
        for g in ["Connection:", "Memory:", "Clients:", "Metrics:", "Debugging:"] { #expect(text.contains(g)) }
        for f in FlagParser.table { #expect(text.contains("--\(f.long)")) }
    }
}
