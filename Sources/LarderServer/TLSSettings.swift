// The TLS settings (memcached's -Z and -o ssl_* names) and the listener list of -l
// (`[notls:]address[:port]`, comma-separated, as memcached takes it). Pure values: the files
// they name are read and checked when the server starts (TLSContext).
#if canImport(Glibc)
import Glibc
#endif

/// One listening address of `-l`.
public struct ListenSpec: Sendable, Equatable {
    public var address: String
    /// nil: the `-p` port.
    public var port: Int?
    /// `notls:` prefix: plain text on this listener even with `-Z`.
    public var plain: Bool

    /// `127.0.0.1`, `notls:127.0.0.1:11212`, `[::1]:11212`, `::1`, comma-separated; nil if
    /// any entry is not an address (with a port in 0...65535).
    static func parseList(_ value: String) -> [ListenSpec]? {
        let entries = value.split(separator: ",", omittingEmptySubsequences: false)
        var out: [ListenSpec] = []
        for e in entries {
            var s = Substring(String(e).trimmingCharacters(in: " \t"))
            var plain = false
            if s.hasPrefix("notls:") {
                plain = true
                s = s.dropFirst(6)
            }
            var address = String(s)
            var port: Int? = nil
            if s.hasPrefix("["), let close = s.firstIndex(of: "]") {
                address = String(s[s.index(after: s.startIndex)..<close])
                let rest = s[s.index(after: close)...]
                if !rest.isEmpty {
                    guard rest.hasPrefix(":"), let p = Int(rest.dropFirst()) else { return nil }
                    port = p
                }
            } else if s.filter({ $0 == ":" }).count == 1, let colon = s.firstIndex(of: ":") {
                guard let p = Int(s[s.index(after: colon)...]) else { return nil }
                address = String(s[..<colon])
                port = p
            }
            guard !address.isEmpty, isValidAddress(address) else { return nil }
            if let p = port, !(0...65535).contains(p) { return nil }
            out.append(ListenSpec(address: address, port: port, plain: plain))
        }
        return out.isEmpty ? nil : out
    }
}

/// The lowest TLS version accepted.
public enum TLSVersion: String, Sendable, Equatable {
    case tls12 = "tlsv1.2"
    case tls13 = "tlsv1.3"
}

public struct TLSSettings: Sendable, Equatable {
    /// `-Z`: TLS on every listener not marked `notls:`.
    public var enabled = false
    /// `ssl_chain_cert`: the server certificate, then its intermediates (PEM).
    public var chainCert: String? = nil
    /// `ssl_key`: the private key (PEM); when absent it is read from `chainCert`.
    public var key: String? = nil
    /// `ssl_ca_cert`: the CAs client certificates must chain to (mutual TLS).
    public var caCert: String? = nil
    /// `ssl_verify_mode`, memcached's values: 0 no client certificate asked, 1 asked and
    /// checked if sent, 2 required, 3 required on the first handshake only.
    public var verifyMode = 0
    public var minVersion = TLSVersion.tls12
    /// `ssl_ciphers`: OpenSSL cipher list for TLS 1.2 (TLS 1.3 suites stay OpenSSL's).
    public var ciphers: String? = nil
    /// `ssl_handshake_timeout` (Larder's; memcached has none): seconds a client may take to
    /// finish its handshake before the connection is closed.
    public var handshakeTimeout = 10
    /// `--metrics-tls`: /metrics over HTTPS with the same certificate.
    public var metrics = false

    public init() {}

    static let settingNames = [
        "enable-ssl", "ssl-chain-cert", "ssl-key", "ssl-ca-cert", "ssl-verify-mode", "ssl-min-version",
        "ssl-ciphers", "ssl-handshake-timeout", "metrics-tls",
    ]

    /// Applies one TLS setting; false if `name` is not one.
    mutating func apply(_ name: String, _ value: String, raw: String, source: String) throws(ConfigError) -> Bool {
        func bool() throws(ConfigError) -> Bool {
            guard let b = parseBool(value) else {
                throw ConfigError(setting: name, source: source, message: "'\(raw)' is not true or false")
            }
            return b
        }
        func path() throws(ConfigError) -> String {
            guard !value.isEmpty else { throw ConfigError(setting: name, source: source, message: "needs a file name") }
            return value
        }
        switch name {
        case "enable-ssl": enabled = try bool()
        case "metrics-tls": metrics = try bool()
        case "ssl-chain-cert": chainCert = try path()
        case "ssl-key": key = try path()
        case "ssl-ca-cert": caCert = try path()
        case "ssl-verify-mode":
            guard let v = Int(value), (0...3).contains(v) else {
                throw ConfigError(setting: name, source: source,
                                  message: "'\(raw)' is not 0 (none), 1 (request), 2 (require) or 3 (once)")
            }
            verifyMode = v
        case "ssl-min-version":
            // memcached also takes 0...3 (tlsv1.0...tlsv1.3); below 1.2 is refused here.
            switch value.lowercased() {
            case "tlsv1.2", "2": minVersion = .tls12
            case "tlsv1.3", "3": minVersion = .tls13
            default:
                throw ConfigError(setting: name, source: source,
                                  message: "'\(raw)' is not tlsv1.2 or tlsv1.3 (Larder does not offer TLS 1.0 or 1.1)")
            }
        case "ssl-ciphers":
            guard !value.isEmpty else { throw ConfigError(setting: name, source: source, message: "needs a cipher list") }
            ciphers = value
        case "ssl-handshake-timeout":
            guard let v = Int(value), (1...3600).contains(v) else {
                throw ConfigError(setting: name, source: source, message: "'\(raw)' is not a whole number in 1...3600")
            }
            handshakeTimeout = v
        default:
            return false
        }
        return true
    }

    /// Cross-setting checks (the files themselves are checked at start by TLSContext).
    func validate(metricsPort: Int) throws(ConfigError) {
        if enabled && chainCert == nil {
            throw ConfigError(setting: "ssl_chain_cert", source: "configuration",
                              message: "-Z needs a certificate: -o ssl_chain_cert=<file>,ssl_key=<file>")
        }
        if metrics && !enabled {
            throw ConfigError(setting: "metrics-tls", source: "configuration",
                              message: "needs -Z and its certificate (-o ssl_chain_cert=...,ssl_key=...)")
        }
        if metrics && metricsPort == 0 {
            throw ConfigError(setting: "metrics-tls", source: "configuration", message: "the metrics endpoint is off (--metrics-port 0)")
        }
        if enabled && verifyMode > 0 && caCert == nil {
            throw ConfigError(setting: "ssl_verify_mode", source: "configuration",
                              message: "\(verifyMode) checks client certificates and needs ssl_ca_cert=<file> with the CA that signs them")
        }
    }
}
