// Larder's command-line flags: one table (short and long name, the setting each sets, its
// help group) and one getopt-style parser over it. The `larder` command line and the config
// file (`/etc/larder/larder.conf`: one flag per line, memcached's Debian convention) both go
// through `FlagParser.parse`, so a file entry and a flag can never mean different things.
// Hand-written rather than swift-argument-parser, which pulls FoundationEssentials and the
// regex runtime into the server binary (about 3 MB stripped and 7 MB of RSS at start).

/// The groups of `larder --help`, in memcached's order.
public enum FlagGroup: String, CaseIterable, Sendable {
    case connection = "Connection"
    case memory = "Memory"
    case clients = "Clients"
    case metrics = "Metrics"
    case tls = "TLS"
    case debugging = "Debugging"
    case general = "General"
}

/// What a flag does once parsed.
public enum FlagKind: Sendable, Equatable {
    /// Sets the named setting (`ServerConfig.settingNames`) to the flag's value.
    case setting(String)
    /// A switch that sets the named setting to `true`.
    case enable(String)
    /// Counted switch (`-v`, `-vv`): sets the named setting to the count.
    case count(String)
    /// `-o key=value,key=value`: memcached's extended options; each key (`ssl_key`) sets the
    /// setting of the same name with `-` for `_` (`ssl-key`). Only `extendedOptions` are taken.
    case extended
    /// `--config FILE`: command line and environment only.
    case config
    case help
    case version
}

/// One flag of the table.
public struct FlagSpec: Sendable {
    public let short: Character?
    public let long: String
    /// Placeholder shown in help (`<num>`); nil for switches.
    public let value: String?
    public let kind: FlagKind
    public let group: FlagGroup
    public let help: String
}

/// One flag found in argv or on a config-file line, with its value and how it was written.
public struct ParsedFlag: Sendable {
    public let spec: FlagSpec
    public let value: String?
    /// As written (`-p`, `--port`), for messages.
    public let written: String
}

/// A command line that does not parse: an unknown flag, a missing value, a stray argument.
public struct FlagError: Error, CustomStringConvertible, Equatable {
    public var message: String
    public var description: String { message }
}

public enum FlagParser {
    /// Every flag `larder` takes. memcached's short and long names where memcached has the
    /// flag (`-p/--port`, `-m/--memory-limit`, `-M/--disable-evictions`, `-V/--version`, ...).
    public static let table: [FlagSpec] = [
        FlagSpec(short: "p", long: "port", value: "<num>", kind: .setting("port"), group: .connection,
                 help: "TCP port to listen on (default: 11211; 0 picks a free one)"),
        FlagSpec(short: "l", long: "listen", value: "<addr>", kind: .setting("listen"), group: .connection,
                 help: "address to listen on (default: 127.0.0.1, loopback only)"),
        FlagSpec(short: "c", long: "conn-limit", value: "<num>", kind: .setting("conn-limit"), group: .connection,
                 help: "max simultaneous connections (default: 1024)"),
        FlagSpec(short: "t", long: "threads", value: "<num>", kind: .setting("threads"), group: .connection,
                 help: "number of worker threads (default: number of cores)"),
        FlagSpec(short: "u", long: "user", value: "<user>", kind: .setting("user"), group: .connection,
                 help: "user to run as; required when started as root (privileges are dropped after binding)"),
        FlagSpec(short: "m", long: "memory-limit", value: "<num>", kind: .setting("memory-limit"), group: .memory,
                 help: "item memory in megabytes, index included (default: 64)"),
        FlagSpec(short: "I", long: "max-item-size", value: "<size>", kind: .setting("max-item-size"), group: .memory,
                 help: "largest item: bytes, or with a k/m suffix (default: 1m; at most half of -m)"),
        FlagSpec(short: "M", long: "disable-evictions", value: nil, kind: .enable("disable-evictions"), group: .memory,
                 help: "return an error when memory is exhausted instead of evicting"),
        FlagSpec(short: "e", long: "memory-file", value: "<path>", kind: .setting("memory-file"), group: .memory,
                 help: "keep items in this file (on tmpfs, e.g. /dev/shm/larder) so a restart, even after a crash, keeps them"),
        FlagSpec(short: nil, long: "shards", value: "<num>", kind: .setting("shards"), group: .memory,
                 help: "store shards, a power of two (default: 64, lowered so each holds 4 x -I)"),
        FlagSpec(short: nil, long: "client-memory", value: "<num>", kind: .setting("client-memory"), group: .clients,
                 help: "megabytes all client connections together may hold; beyond it the connections holding the most are closed; 0 = no limit (default: 64)"),
        FlagSpec(short: nil, long: "idle-timeout", value: "<sec>", kind: .setting("idle-timeout"), group: .clients,
                 help: "close connections idle this many seconds; 0 = never (default: 0)"),
        FlagSpec(short: nil, long: "output-timeout", value: "<sec>", kind: .setting("output-timeout"), group: .clients,
                 help: "close a connection whose replies sat at the 4 MB output limit unread this long; 0 = never (default: 30)"),
        FlagSpec(short: "Y", long: "auth-file", value: "<file>", kind: .setting("auth-file"), group: .connection,
                 help: "require memcached's ASCII authentication: <file> holds user:password lines; clients send 'set <any> 0 0 <n>' with 'user password' as data first (SIGHUP re-reads the file)"),
        FlagSpec(short: "A", long: "enable-shutdown", value: nil, kind: .enable("enable-shutdown"), group: .connection,
                 help: "allow the shutdown command (a graceful stop, as SIGTERM)"),
        FlagSpec(short: nil, long: "metrics-port", value: "<num>", kind: .setting("metrics-port"), group: .metrics,
                 help: "port of the Prometheus /metrics endpoint, on the -l address; 0 = off (default: 9150)"),
        FlagSpec(short: "Z", long: "enable-ssl", value: nil, kind: .enable("enable-ssl"), group: .tls,
                 help: "serve TLS on every listener not prefixed notls: (needs -o ssl_chain_cert=...,ssl_key=...)"),
        FlagSpec(short: "o", long: "extended", value: "<opts>", kind: .extended, group: .tls,
                 help: "comma-separated TLS options as memcached's: ssl_chain_cert=<file>, ssl_key=<file>, ssl_ca_cert=<file>, ssl_verify_mode=0-3 (0 none, 1 request, 2 require, 3 once), ssl_min_version=tlsv1.2|tlsv1.3, ssl_ciphers=<list>, ssl_handshake_timeout=<sec> (default 10)"),
        FlagSpec(short: nil, long: "metrics-tls", value: nil, kind: .enable("metrics-tls"), group: .tls,
                 help: "serve /metrics over HTTPS with the -Z certificate and key"),
        FlagSpec(short: nil, long: "metrics-token-file", value: "<file>", kind: .setting("metrics-token-file"), group: .metrics,
                 help: "require 'Authorization: Bearer <token>' on /metrics, the token read from <file>"),
        FlagSpec(short: nil, long: "metrics-auth-file", value: "<file>", kind: .setting("metrics-auth-file"), group: .metrics,
                 help: "require HTTP basic auth on /metrics: <file> holds user:bcrypt-hash lines (htpasswd -nbB user pass)"),
        FlagSpec(short: "v", long: "verbose", value: nil, kind: .count("verbose"), group: .debugging,
                 help: "more logging: -v info, -vv debug"),
        FlagSpec(short: nil, long: "config", value: "<file>", kind: .config, group: .general,
                 help: "read settings from <file>: one flag per line, # comments (e.g. /etc/larder/larder.conf)"),
        FlagSpec(short: "h", long: "help", value: nil, kind: .help, group: .general,
                 help: "print this help and exit"),
        FlagSpec(short: "V", long: "version", value: nil, kind: .version, group: .general,
                 help: "print version and exit"),
    ]

    /// Parses arguments as getopt_long does: `-p 11211`, `-p11211`, `-vv`, `-Mv`,
    /// `--port 11211`, `--port=11211`; `--` ends the flags. Positional arguments are refused.
    public static func parse(_ args: [String]) throws(FlagError) -> [ParsedFlag] {
        var out: [ParsedFlag] = []
        var i = 0
        while i < args.count {
            let arg = args[i]
            i += 1
            if arg == "--" {
                if i < args.count { throw FlagError(message: "unexpected argument '\(args[i])'") }
                break
            }
            if arg.hasPrefix("--") {
                let body = arg.dropFirst(2)
                let name: Substring
                var inline: String? = nil
                if let eq = body.firstIndex(of: "=") {
                    name = body[..<eq]
                    inline = String(body[body.index(after: eq)...])
                } else {
                    name = body
                }
                guard let spec = table.first(where: { $0.long == name }) else {
                    throw FlagError(message: "unknown flag '--\(name)'")
                }
                if spec.kind == .extended, let v = inline ?? (i < args.count ? args[i] : nil) {
                    try checkExtended(v)
                }
                if spec.value == nil {
                    if inline != nil { throw FlagError(message: "flag '--\(name)' takes no value") }
                    out.append(ParsedFlag(spec: spec, value: nil, written: "--\(name)"))
                } else if let inline {
                    out.append(ParsedFlag(spec: spec, value: inline, written: "--\(name)"))
                } else {
                    guard i < args.count else { throw FlagError(message: "flag '--\(name)' needs a value \(spec.value!)") }
                    out.append(ParsedFlag(spec: spec, value: args[i], written: "--\(name)"))
                    i += 1
                }
            } else if arg.hasPrefix("-") && arg.count > 1 {
                var rest = arg.dropFirst()
                while let c = rest.first {
                    rest = rest.dropFirst()
                    guard let spec = table.first(where: { $0.short == c }) else {
                        throw FlagError(message: "unknown flag '-\(c)'")
                    }
                    if spec.value == nil {
                        out.append(ParsedFlag(spec: spec, value: nil, written: "-\(c)"))
                        continue
                    }
                    if spec.kind == .extended, let v = !rest.isEmpty ? String(rest) : (i < args.count ? args[i] : nil) {
                        try checkExtended(v)
                    }
                    if !rest.isEmpty {
                        out.append(ParsedFlag(spec: spec, value: String(rest), written: "-\(c)"))
                    } else {
                        guard i < args.count else { throw FlagError(message: "flag '-\(c)' needs a value \(spec.value!)") }
                        out.append(ParsedFlag(spec: spec, value: args[i], written: "-\(c)"))
                        i += 1
                    }
                    break
                }
            } else {
                throw FlagError(message: "unexpected argument '\(arg)' (settings are flags, e.g. -p 11211)")
            }
        }
        return out
    }

    /// The settings that parsed flags set, in order, as `(setting, value, flag as written)`.
    /// A counted switch becomes one entry with the count (capped at 3); a later flag for the
    /// same setting overrides an earlier one, as with getopt.
    public static func settings(_ flags: [ParsedFlag]) -> [(setting: String, value: String, written: String)] {
        var out: [(setting: String, value: String, written: String)] = []
        var counts: [String: (Int, String)] = [:]
        for f in flags {
            switch f.spec.kind {
            case .setting(let s): out.append((s, f.value ?? "", f.written))
            case .enable(let s): out.append((s, "true", f.written))
            case .count(let s): counts[s] = ((counts[s]?.0 ?? 0) + 1, f.written)
            case .extended:
                for (key, value) in extendedPairs(f.value ?? "") {
                    out.append((key.replacingOccurrences(of: "_", with: "-"), value, "-o \(key)"))
                }
            case .config, .help, .version: break
            }
        }
        for (s, (n, written)) in counts.sorted(by: { $0.key < $1.key }) {
            out.append((s, "\(min(n, 3))", written))
        }
        return out
    }

    /// The `-o` keys Larder takes (memcached's names; the rest of memcached's `-o` options
    /// tune its slab allocator and threads, which Larder does not have).
    public static let extendedOptions = TLSSettings.settingNames
        .filter { $0.hasPrefix("ssl-") }.map { $0.replacingOccurrences(of: "-", with: "_") }

    /// `-o a=1,b=2` as (key, value) pairs; an entry without `=` has an empty value.
    static func extendedPairs(_ v: String) -> [(String, String)] {
        v.split(separator: ",").map { entry in
            guard let eq = entry.firstIndex(of: "=") else { return (String(entry), "") }
            return (String(entry[..<eq]), String(entry[entry.index(after: eq)...]))
        }
    }

    private static func checkExtended(_ v: String) throws(FlagError) {
        let pairs = extendedPairs(v)
        if pairs.isEmpty { throw FlagError(message: "flag '-o' needs key=value options") }
        for (key, value) in pairs {
            guard extendedOptions.contains(key) else {
                throw FlagError(message: "unknown -o option '\(key)' (Larder takes \(extendedOptions.joined(separator: ", ")))")
            }
            if value.isEmpty { throw FlagError(message: "-o \(key) needs a value (\(key)=...)") }
        }
    }

    /// `larder --help`: the flags by group, memcached's layout (`-p, --port=<num>  text`).
    public static func helpText(version: String) -> String {
        var s = "Usage: larder [flags]\n"
        s += "larder \(version): an in-memory cache server that speaks the memcached text protocol.\n"
        // Option column, then the text; help2man (scripts/package) needs two spaces between.
        let width = 30
        for group in FlagGroup.allCases {
            let flags = table.filter { $0.group == group }
            if flags.isEmpty { continue }
            s += "\n\(group.rawValue):\n"
            for f in flags {
                var left = "  "
                left += f.short.map { "-\($0), " } ?? "    "
                left += "--\(f.long)"
                if let v = f.value { left += "=\(v)" }
                if left.count <= width - 2 {
                    left += String(repeating: " ", count: width - left.count)
                } else {
                    left += "\n" + String(repeating: " ", count: width)
                }
                s += left + f.help + "\n"
            }
        }
        s += """

        Every setting can also come from the environment (LARDER_PORT, LARDER_LISTEN,
        LARDER_MEMORY_LIMIT, ..., LARDER_CONFIG) or the config file, one flag per line
        (# starts a comment). A flag wins over the environment, which wins over the file.
        A bad or unknown setting stops Larder at start with exit status 64.

        """
        return s
    }
}
