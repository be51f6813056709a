// The start-up warnings for listening beyond loopback: which combinations of TLS, -Y, client
// certificates and metrics credentials warn, and what each warning names.
import Testing
@testable import LarderServer

@Suite("exposure warnings")
struct ExposureTests {
    func config(_ listeners: [(String, Bool)], tls: Bool = false, auth: Bool = false, verify: Int = 0,
                metricsPort: Int = 0, metricsToken: Bool = false) -> ServerConfig {
        var c = ServerConfig()
        c.listeners = listeners.map { ListenSpec(address: $0.0, port: nil, plain: $0.1) }
        c.listen = listeners.first?.0 ?? "127.0.0.1"
        c.tls.enabled = tls
        c.tls.verifyMode = verify
        c.authFile = auth ? "/etc/larder/auth" : nil
        c.metricsPort = metricsPort
        c.metricsTokenFile = metricsToken ? "/etc/larder/token" : nil
        return c
    }

    @Test("loopback listeners never warn, whatever else is set")
    func loopbackQuiet() {
        #expect(Exposure.warnings(config([("127.0.0.1", false), ("::1", true)], metricsPort: 9150)).isEmpty)
        #expect(Exposure.warnings(config([("localhost", false)])).isEmpty)
    }

    @Test("beyond loopback: plain without -Y, -Y without TLS, TLS without -Y each warn once, naming the fix")
    func combinations() {
        let open = Exposure.warnings(config([("10.0.0.5", false)]))
        #expect(open.count == 1 && open[0].contains("10.0.0.5:11211") && open[0].contains("-Z") && open[0].contains("-Y"))
        let clearPasswords = Exposure.warnings(config([("10.0.0.5", false)], auth: true))
        #expect(clearPasswords.count == 1 && clearPasswords[0].contains("passwords") && clearPasswords[0].contains("in clear"))
        let tlsOnly = Exposure.warnings(config([("10.0.0.5", false)], tls: true))
        #expect(tlsOnly.count == 1 && tlsOnly[0].contains("ssl_verify_mode=2"))
        #expect(Exposure.warnings(config([("10.0.0.5", false)], tls: true, auth: true)).isEmpty)
        #expect(Exposure.warnings(config([("10.0.0.5", false)], tls: true, verify: 2)).isEmpty)
        // A notls: listener beside a TLS one is plain text: it warns on its own.
        let mixed = Exposure.warnings(config([("10.0.0.5", false), ("10.0.0.6", true)], tls: true, auth: true))
        #expect(mixed.count == 1 && mixed[0].contains("10.0.0.6") && mixed[0].contains("notls:"))
        let all = Exposure.warnings(config([("0.0.0.0", false)]))
        #expect(all.count == 1 && all[0].contains("ALL interfaces"))
    }

    @Test("/metrics beyond loopback warns without a token or password")
    func metricsGuard() {
        let w = Exposure.warnings(config([("10.0.0.5", false)], tls: true, auth: true, metricsPort: 9150))
        #expect(w.count == 1 && w[0].contains("/metrics on 10.0.0.5:9150") && w[0].contains("--metrics-token-file"))
        let clearToken = Exposure.warnings(config([("10.0.0.5", false)], tls: true, auth: true, metricsPort: 9150, metricsToken: true))
        #expect(clearToken.count == 1 && clearToken[0].contains("--metrics-tls") && clearToken[0].contains("in clear"))
        var guarded = config([("10.0.0.5", false)], tls: true, auth: true, metricsPort: 9150, metricsToken: true)
        guarded.tls.metrics = true
        #expect(Exposure.warnings(guarded).isEmpty)
    }
}
