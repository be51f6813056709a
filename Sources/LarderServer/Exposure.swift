// What Larder says at start when it listens beyond loopback: each listener and the metrics
// endpoint is checked for what guards it (TLS, -Y, client certificates, a metrics token), and
// every unguarded exposure gets one warning naming the address, the risk and the flag that
// closes it. Pure: the server logs what this returns.

enum Exposure {
    /// True for addresses only this host can reach.
    static func isLoopback(_ address: String) -> Bool {
        let a = address.lowercased()
        return a.hasPrefix("127.") || a == "::1" || a == "localhost" || a == "0:0:0:0:0:0:0:1"
    }

    static func isAllInterfaces(_ address: String) -> Bool {
        address.isEmpty || address == "0.0.0.0" || address == "::" || address == "*"
    }

    /// The warnings for `config`, one per unguarded exposure (empty on loopback only).
    static func warnings(_ config: ServerConfig) -> [String] {
        var out: [String] = []
        let auth = config.authFile != nil
        let clientCerts = config.tls.verifyMode >= 2
        for l in config.listeners where !isLoopback(l.address) {
            let port = l.port ?? config.port
            let name = isAllInterfaces(l.address)
                ? "\(l.address.isEmpty ? "*" : l.address):\(port) (ALL interfaces)" : "\(l.address):\(port)"
            let tls = config.tls.enabled && !l.plain
            switch (tls, auth) {
            case (false, false):
                out.append("listening on \(name) with neither TLS (-Z) nor authentication (-Y): anyone who can reach it can read, overwrite and flush every item, and every byte crosses the network in clear")
            case (false, true):
                out.append("listening on \(name) with -Y but without TLS (-Z\(l.plain ? "; this listener is notls:" : "")): passwords and values cross the network in clear")
            case (true, false) where !clientCerts:
                out.append("listening on \(name) with TLS but no authentication (-Y) or client certificates (ssl_verify_mode=2): anyone who can reach it can read, overwrite and flush every item")
            default:
                break
            }
        }
        let metricsAddress = config.listen  // the metrics port binds the first -l address
        if config.metricsPort != 0 && !isLoopback(metricsAddress) {
            if config.metricsTokenFile == nil && config.metricsAuthFile == nil {
                out.append("/metrics on \(metricsAddress):\(config.metricsPort) has no token or password (--metrics-token-file, --metrics-auth-file): anyone who can reach it can read the cache's figures")
            } else if !(config.tls.enabled && config.tls.metrics) {
                out.append("/metrics on \(metricsAddress):\(config.metricsPort) takes a token or password without TLS (--metrics-tls): they cross the network in clear")
            }
        }
        return out
    }
}
