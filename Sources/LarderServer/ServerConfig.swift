// Server configuration: the settings, their defaults, and how a flag, an environment
// variable (LARDER_*) and the config file combine. Precedence: flag > environment > file >
// built-in default. A bad value is refused with an error naming the setting.
#if canImport(Glibc)
import Glibc
#endif

/// Everything the server needs to start.
public struct ServerConfig: Sendable, Equatable {
    /// `-p`: TCP port (0 picks a free one, reported in the log).
    public var port: Int = 11211
    /// `-l`: address to listen on. 127.0.0.1 unless asked otherwise.
    public var listen: String = "127.0.0.1"
    /// `-m`: memory limit in megabytes.
    public var memoryLimitMB: Int = 64
    /// `-c`: most simultaneous client connections.
    public var maxConnections: Int = 1024
    /// `-t`: worker threads (default: the number of cores).
    public var threads: Int = ServerConfig.coreCount()
    /// `-I`: largest item in bytes.
    public var maxItemSize: Int = 1024 * 1024
    /// `-M`: refuse writes with an out-of-memory error instead of evicting.
    public var disableEviction: Bool = false
    /// `-v` count: 0 warnings, 1 info, 2+ debug.
    public var verbosity: Int = 0
    /// Store shards (a power of two).
    public var shards: Int = 64
    /// Port of the Prometheus `/metrics` endpoint; 0 disables it.
    public var metricsPort: Int = 9150
    /// `-u`: user to run as. Required when started as root (as memcached requires it);
    /// privileges are dropped to this user after the sockets are bound.
    public var user: String? = nil
    /// Close a client connection idle this many seconds; 0 (the default, as memcached) never.
    public var idleTimeout: Int = 0
    /// `--client-memory`: megabytes all client connections together may make Larder hold
    /// (input buffers, queued replies and the values they pin, per-connection state). When it
    /// is reached the connections holding the most are closed. 0 turns the limit off.
    /// 64 MB: room for every idle connection of the default `-c 1024` (~24 KB each) plus ~40 MB
    /// of large values arriving and replies waiting (docs/CLIENTS.md).
    public var clientMemoryMB: Int = 64
    /// `--output-timeout`: close a connection whose replies have sat at the per-connection
    /// output limit (4 MB) this many seconds without the client reading; 0 never.
    public var outputTimeout: Int = 30
    /// `-A`: allow the `shutdown` command (off by default, as memcached's `-A`).
    public var enableShutdown: Bool = false
    /// `-l` as given: one or more comma-separated `[notls:]address[:port]` (memcached's form).
    /// `listen` above is the first address; these are every listener.
    public var listeners: [ListenSpec] = [ListenSpec(address: "127.0.0.1", port: nil, plain: false)]
    /// TLS (`-Z`, `-o ssl_*`, `--metrics-tls`): see TLSSettings and docs/TLS.md.
    public var tls = TLSSettings()
    /// `-Y`: memcached's ASCII authentication file (`user:password` lines); nil = no auth.
    public var authFile: String? = nil
    /// `--metrics-token-file`: a bearer token /metrics requires (Prometheus' `authorization`).
    public var metricsTokenFile: String? = nil
    /// `--metrics-auth-file`: `user:bcrypt-hash` lines /metrics requires (Prometheus' `basic_auth`).
    public var metricsAuthFile: String? = nil
    /// `-e`: the memory file (tmpfs, e.g. /dev/shm/larder) holding the items, so that a restart
    /// (graceful or after a crash) takes them over. nil: anonymous memory.
    public var memoryFile: String? = nil

    public init() {}

    public static func coreCount() -> Int {
        max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
    }

    /// Names of the settings as they appear in the config file; the environment variable is
    /// `LARDER_` + the name upper-cased with `-` as `_`.
    public static let settingNames = [
        "port", "listen", "memory-limit", "conn-limit", "threads", "max-item-size",
        "disable-evictions", "verbose", "shards", "metrics-port", "user", "idle-timeout",
        "client-memory", "output-timeout",
        "enable-shutdown", "auth-file", "metrics-token-file", "metrics-auth-file", "memory-file",
    ] + TLSSettings.settingNames

    /// Applies one setting given as text (from a file, the environment or a flag).
    public mutating func apply(_ name: String, _ raw: String, source: String) throws(ConfigError) {
        let value = raw.trimmingCharacters(in: " \t")
        func int(_ range: ClosedRange<Int>) throws(ConfigError) -> Int {
            guard let v = Int(value), range.contains(v) else {
                throw ConfigError(setting: name, source: source,
                                  message: "'\(raw)' is not a whole number in \(range.lowerBound)...\(range.upperBound)")
            }
            return v
        }
        switch name {
        case "port": port = try int(0...65535)
        case "listen":
            guard let specs = ListenSpec.parseList(value) else {
                throw ConfigError(setting: name, source: source,
                                  message: "'\(raw)' is not a list of IPv4 or IPv6 addresses, each [notls:]address[:port]")
            }
            listeners = specs
            listen = specs[0].address
        case "memory-limit": memoryLimitMB = try int(1...1_048_576)
        case "conn-limit": maxConnections = try int(1...1_000_000)
        case "threads": threads = try int(1...256)
        case "max-item-size":
            guard let v = parseSize(value), v >= 1024, v <= 1024 * 1024 * 1024 else {
                throw ConfigError(setting: name, source: source,
                                  message: "'\(raw)' is not a size between 1k and 1024m (e.g. 1048576, 512k, 2m)")
            }
            maxItemSize = v
        case "disable-evictions":
            guard let b = parseBool(value) else {
                throw ConfigError(setting: name, source: source, message: "'\(raw)' is not true or false")
            }
            disableEviction = b
        case "verbose": verbosity = try int(0...3)
        case "shards":
            let v = try int(1...4096)
            guard v & (v - 1) == 0 else {
                throw ConfigError(setting: name, source: source, message: "'\(raw)' is not a power of two")
            }
            shards = v
        case "metrics-port": metricsPort = try int(0...65535)
        case "user":
            guard !value.isEmpty, getpwnam(value) != nil else {
                throw ConfigError(setting: name, source: source, message: "no such user '\(raw)'")
            }
            user = value
        case "idle-timeout": idleTimeout = try int(0...31_536_000)
        case "client-memory": clientMemoryMB = try int(0...1_048_576)
        case "output-timeout": outputTimeout = try int(0...31_536_000)
        case "enable-shutdown":
            guard let b = parseBool(value) else {
                throw ConfigError(setting: name, source: source, message: "'\(raw)' is not true or false")
            }
            enableShutdown = b
        case "auth-file", "metrics-token-file", "metrics-auth-file":
            // Read (and checked) at start, after privileges are dropped, and again on SIGHUP.
            guard !value.isEmpty else {
                throw ConfigError(setting: name, source: source, message: "expected the path of a file")
            }
            switch name {
            case "auth-file": authFile = value
            case "metrics-token-file": metricsTokenFile = value
            default: metricsAuthFile = value
            }
        case "memory-file":
            guard !value.isEmpty, !value.hasSuffix("/") else {
                throw ConfigError(setting: name, source: source, message: "'\(raw)' is not a file path")
            }
            memoryFile = value
        default:
            if try tls.apply(name, value, raw: raw, source: source) { return }
            throw ConfigError(setting: name, source: source, message: "unknown setting")
        }
    }

    /// Cross-setting checks, run once everything is merged.
    public func validate() throws(ConfigError) {
        // memcached's rule: an item may take at most half the memory limit (with -m 1 -I 1m
        // no item of the largest size could ever be stored next to its index).
        if maxItemSize > memoryLimitMB * 1024 * 1024 / 2 {
            throw ConfigError(setting: "max-item-size", source: "configuration",
                              message: "\(maxItemSize) bytes is more than half the memory limit (\(memoryLimitMB) MB); raise -m or lower -I")
        }
        if metricsPort != 0 && metricsPort == port && port != 0 {
            throw ConfigError(setting: "metrics-port", source: "configuration",
                              message: "must differ from port \(port)")
        }
        try tls.validate(metricsPort: metricsPort)
    }

    /// Loads a config file into `self`. Two formats, told apart by the first entry:
    /// - `larder.conf` (memcached's Debian convention): one command-line flag per line
    ///   (`-m 64`, `--memory-limit 64`, `--memory-limit=64`, `-M`, `-vv`), `#` comments and blank
    ///   lines, parsed by `FlagParser`, the parser of the command line itself.
    /// - the old `setting: value` lines of `Config/larder.yml` (a YAML subset), still read for
    ///   this release with a deprecation notice appended to `notices`.
    /// Anything else — an unknown or repeated setting, two flags on a line, a nested value, a
    /// line of the other format — is refused naming the file, the line and the setting.
    public mutating func applyFile(_ path: String, notices: inout [String]) throws(ConfigError) {
        var st = stat()
        guard stat(path, &st) == 0 else {
            throw ConfigError(setting: "config", source: path, message: "cannot read the file: \(String(cString: strerror(errno)))")
        }
        guard (st.st_mode & S_IFMT) == S_IFREG else {
            throw ConfigError(setting: "config", source: path, message: "not a regular file (a directory?)")
        }
        guard st.st_size <= 1 << 20 else {
            throw ConfigError(setting: "config", source: path, message: "larger than 1 MB; not a config file")
        }
        guard let text = readTextFile(path) else {
            throw ConfigError(setting: "config", source: path, message: "cannot read the file (or it is not a file)")
        }
        // Lines without comments, numbered from 1, blank ones dropped.
        var lines: [(number: Int, text: String, indented: Bool)] = []
        for (n, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            var line = Substring(raw)
            if let hash = line.firstIndex(of: "#") { line = line[..<hash] }
            let trimmed = String(line).trimmingCharacters(in: " \t\r")
            if trimmed.isEmpty || trimmed == "---" { continue }
            lines.append((n + 1, trimmed, line.first == " " || line.first == "\t"))
        }
        if let first = lines.first, !first.text.hasPrefix("-") {
            notices.append("\(path) is in the old 'setting: value' format, read for this release only; "
                + "write one flag per line instead (e.g. '--memory-limit 64'; see larder --help)")
            try applyLegacyLines(lines, path: path)
        } else {
            try applyFlagLines(lines, path: path)
        }
    }

    /// Loads a config file, dropping notices (for callers that have nowhere to show them).
    public mutating func applyFile(_ path: String) throws(ConfigError) {
        var notices: [String] = []
        try applyFile(path, notices: &notices)
    }

    /// `larder.conf` lines: each one flag with its value, as on the command line.
    private mutating func applyFlagLines(_ lines: [(number: Int, text: String, indented: Bool)],
                                         path: String) throws(ConfigError) {
        var seen: [String: Int] = [:]
        for line in lines {
            let where_ = "\(path), line \(line.number)"
            let words = line.text.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
            guard words[0].hasPrefix("-") else {
                throw ConfigError(setting: "config", source: where_,
                                  message: "expected one flag per line, e.g. '--memory-limit 64' (got '\(line.text)')")
            }
            let parsed: [ParsedFlag]
            do {
                parsed = try FlagParser.parse(words)
            } catch {
                throw ConfigError(setting: words[0], source: where_, message: error.message)
            }
            let settings = FlagParser.settings(parsed)
            for p in parsed {
                switch p.spec.kind {
                case .config, .help, .version:
                    throw ConfigError(setting: p.written, source: where_, message: "not allowed in a config file")
                default: break
                }
            }
            // One flag per line (`-vv` is one); `-o a=1,b=2` is one flag setting several things.
            guard Set(parsed.map(\.spec.long)).count == 1, !settings.isEmpty else {
                throw ConfigError(setting: words[0], source: where_, message: "one flag per line, please")
            }
            for (key, value, written) in settings {
                if let first = seen[key] {
                    throw ConfigError(setting: key, source: where_, message: "set twice (first on line \(first))")
                }
                seen[key] = line.number
                try apply(key, value, source: "\(where_) (\(written))")
            }
        }
    }

    /// The deprecated `setting: value` lines of Config/larder.yml.
    private mutating func applyLegacyLines(_ lines: [(number: Int, text: String, indented: Bool)],
                                           path: String) throws(ConfigError) {
        var seen: [String: Int] = [:]
        for line in lines {
            let where_ = "\(path), line \(line.number)"
            let trimmed = line.text
            if line.indented {
                throw ConfigError(setting: "config", source: where_, message: "expected 'setting: value' at the start of the line")
            }
            guard let colon = trimmed.firstIndex(of: ":") else {
                throw ConfigError(setting: "config", source: where_, message: "expected 'setting: value'")
            }
            var key = String(trimmed[..<colon]).trimmingCharacters(in: " \t")
            if let renamed = ServerConfig.renamedSettings[key] { key = renamed }
            var value = String(trimmed[trimmed.index(after: colon)...]).trimmingCharacters(in: " \t")
            if value.count >= 2, let q = value.first, q == "\"" || q == "'", value.last == q {
                value = String(value.dropFirst().dropLast())
            }
            guard ServerConfig.settingNames.contains(key) else {
                throw ConfigError(setting: key, source: where_, message: "unknown setting")
            }
            if let first = seen[key] {
                throw ConfigError(setting: key, source: where_, message: "set twice (first on line \(first))")
            }
            seen[key] = line.number
            if value.isEmpty {
                throw ConfigError(setting: key, source: where_, message: "expected a single value")
            }
            try apply(key, value, source: where_)
        }
    }

    /// Settings renamed to match their flag, by old name. The old names are still read in the
    /// deprecated `setting: value` file and as `LARDER_*` variables (the new name wins).
    static let renamedSettings = ["disable-eviction": "disable-evictions"]

    /// Applies `LARDER_*` variables from `environment`.
    public mutating func applyEnvironment(_ environment: [String: String]) throws(ConfigError) {
        for name in ServerConfig.settingNames {
            var variable = ServerConfig.environmentName(name)
            if environment[variable] == nil,
               let old = ServerConfig.renamedSettings.first(where: { $0.value == name })?.key,
               environment[ServerConfig.environmentName(old)] != nil {
                variable = ServerConfig.environmentName(old)
            }
            if let v = environment[variable] {
                try apply(name, v, source: "environment variable \(variable)")
            }
        }
    }

    public static func environmentName(_ setting: String) -> String {
        "LARDER_" + setting.uppercased().replacingOccurrences(of: "-", with: "_")
    }

    /// Builds the configuration: defaults, then the file, then the environment, then flags.
    /// Warnings (a deprecated file format) are appended to `notices`.
    public static func resolve(file: String?, environment: [String: String],
                               flags: [(String, String)], notices: inout [String]) throws(ConfigError) -> ServerConfig {
        var c = ServerConfig()
        let path = file ?? environment["LARDER_CONFIG"]
        if let path { try c.applyFile(path, notices: &notices) }
        try c.applyEnvironment(environment)
        for (k, v) in flags { try c.apply(k, v, source: "command-line flag --\(k)") }
        try c.validate()
        return c
    }

    /// `resolve` for callers that show no notices.
    public static func resolve(file: String?, environment: [String: String],
                               flags: [(String, String)]) throws(ConfigError) -> ServerConfig {
        var notices: [String] = []
        return try resolve(file: file, environment: environment, flags: flags, notices: &notices)
    }
}

/// A setting that could not be used.
public struct ConfigError: Error, CustomStringConvertible, Equatable {
    public var setting: String
    public var source: String
    public var message: String
    public var description: String { "invalid setting '\(setting)' (from \(source)): \(message)" }
}

/// Sizes as memcached's -I takes them: bytes, or a number with k/m suffix. Overflow is
/// checked: a size that does not fit in an Int is no size (nil), never a trap.
func parseSize(_ s: String) -> Int? {
    let lower = s.lowercased()
    if let last = lower.last, last == "k" || last == "m" {
        guard let n = Int(lower.dropLast()), n >= 0 else { return nil }
        let (v, overflow) = n.multipliedReportingOverflow(by: last == "k" ? 1024 : 1024 * 1024)
        return overflow ? nil : v
    }
    return Int(lower)
}

func parseBool(_ s: String) -> Bool? {
    switch s.lowercased() {
    case "true", "yes", "on", "1": true
    case "false", "no", "off", "0": false
    default: nil
    }
}

func isValidAddress(_ s: String) -> Bool {
    var v4 = in_addr()
    var v6 = in6_addr()
    return inet_pton(AF_INET, s, &v4) == 1 || inet_pton(AF_INET6, s, &v6) == 1
}

/// The text of a regular file, or nil (missing, unreadable, a directory).
func readTextFile(_ path: String) -> String? {
    var st = stat()
    guard stat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { return nil }
    guard let f = fopen(path, "r") else { return nil }
    defer { fclose(f) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = fread(&chunk, 1, chunk.count, f)
        if n > 0 { bytes.append(contentsOf: chunk[0..<n]) }
        if n < chunk.count { break }
    }
    return String(decoding: bytes, as: UTF8.self)
}

extension String {
    func trimmingCharacters(in set: String) -> String {
        let chars = Set(set)
        var s = Substring(self)
        while let f = s.first, chars.contains(f) { s = s.dropFirst() }
        while let l = s.last, chars.contains(l) { s = s.dropLast() }
        return String(s)
    }

    func replacingOccurrences(of a: String, with b: String) -> String {
        split(separator: Character(a), omittingEmptySubsequences: false).joined(separator: b)
    }
}
