// The `larder` command line: memcached's flags (parsed by LarderServer's FlagParser, the same
// parser that reads the config file), LARDER_* environment variables and the config file,
// merged with flag > environment > file > default precedence; then logging and the server.
import LarderServer
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// The Larder release and the memcached protocol version it follows, both taken from the one
/// `larderVersion` string ("1.6.18-larder-0.1.0").
func versionParts() -> (larder: String, memcached: String) {
    // "<memcached version>-larder-<release>"; neither part contains a '-'.
    guard let first = larderVersion.firstIndex(of: "-"), let last = larderVersion.lastIndex(of: "-"),
          larderVersion[first...last] == "-larder-" else { return (larderVersion, "?") }
    return (String(larderVersion[larderVersion.index(after: last)...]), String(larderVersion[..<first]))
}

enum LarderCommand {
    /// Runs the command line; returns only by exiting.
    static func main(_ args: [String]) -> Never {
        let parsed: [ParsedFlag]
        do {
            parsed = try FlagParser.parse(args)
        } catch {
            printError("larder: \(error); see larder --help")
            exit(64)
        }
        let (release, protocolVersion) = versionParts()
        if parsed.contains(where: { $0.spec.kind == .help }) {
            printOut(FlagParser.helpText(version: release))
            exit(0)
        }
        if parsed.contains(where: { $0.spec.kind == .version }) {
            printOut("larder \(release) (memcached text protocol \(protocolVersion))\n")
            exit(0)
        }
        let configPath = parsed.last(where: { $0.spec.kind == .config })?.value
        let flags = FlagParser.settings(parsed).map { ($0.setting, $0.value) }

        let cfg: ServerConfig
        var notices: [String] = []
        do {
            cfg = try ServerConfig.resolve(file: configPath, environment: currentEnvironment(), flags: flags,
                                           notices: &notices)
        } catch {
            for n in notices { printError("larder: warning: \(n)") }
            printError("larder: \(error)")
            exit(64)
        }
        for n in notices { printError("larder: warning: \(n)") }
        if geteuid() == 0 && cfg.user == nil {
            printError("larder: can't run as root without the -u switch (e.g. -u nobody); like memcached, Larder will not serve as root")
            exit(64)
        }
        let level: Logger.Level = cfg.verbosity >= 2 ? .debug : (cfg.verbosity == 1 ? .info : .notice)
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = level
            return h
        }
        let logger = Logger(label: "larder")
        let server: Server
        do {
            server = try Server(config: cfg, logger: logger)
        } catch let error as ConfigError {
            // A setting only checkable at start (a TLS file missing, unreadable, open to others or
            // not matching; a credentials file read after -u): as bad configuration.
            printError("larder: \(error)")
            exit(64)
        } catch {
            printError("larder: \(error)")
            exit(71)
        }
        server.run()
        exit(0)
    }
}

func currentEnvironment() -> [String: String] {
    var env: [String: String] = [:]
    var p = environ
    while let entry = p.pointee {
        let s = String(cString: entry)
        if let eq = s.firstIndex(of: "=") {
            env[String(s[..<eq])] = String(s[s.index(after: eq)...])
        }
        p += 1
    }
    return env
}

func printError(_ s: String) {
    let line = s + "\n"
    _ = line.withCString { write(2, $0, strlen($0)) }
}

func printOut(_ s: String) {
    _ = s.withCString { write(1, $0, strlen($0)) }
}
