// Renders `stats` and its sub-commands under memcached's stat names. The general group comes
// from MetricTable, which /metrics is rendered from too.
import LarderProtocol
import LarderMetrics
import LarderStore
#if canImport(Glibc)
import Glibc
#endif

enum StatsReport {
    static func render(_ group: StatsGroup, context: ServerContext, to out: ByteSink) {
        var lines: [(String, String)] = []
        switch group {
        case .general: lines = general(context)
        case .settings: lines = settings(context)
        case .items:
            let c = context.store.counters()
            if c.currItems > 0 {
                lines = [
                    ("items:1:number", "\(c.currItems)"),
                    ("items:1:evicted", "\(c.evictions)"),
                    ("items:1:expired_unfetched", "\(c.expiredUnfetched)"),
                    ("items:1:reclaimed", "\(c.reclaimed)"),
                ]
            }
        case .slabs:
            let c = context.store.counters()
            lines = [("active_slabs", "0"), ("total_malloced", "\(c.usedBytes)")]
        case .conns:
            let now = context.store.clock.now()
            for info in context.openConnections() {
                lines.append(("\(info.fd):addr", info.peer))
                lines.append(("\(info.fd):listen_addr", "tcp:\(context.config.listen):\(context.boundPort.load(ordering: .relaxed))"))
                lines.append(("\(info.fd):secs_since_open", "\(now - info.openedAt)"))
            }
        case .reset:
            // A baseline for `stats`; /metrics keeps counting (Prometheus counters only grow).
            for b in context.workerCounters { b.reset() }
            context.connections.reset()
            ReplyEncoder.append(.reset, to: out)
            return
        case .detail:
            // Larder keeps no per-prefix detail; accept the switch as memcached does.
            ReplyEncoder.append(.ok, to: out)
            return
        }
        for (k, v) in lines { ReplyEncoder.appendStat(k, v, to: out) }
        ReplyEncoder.append(.end, to: out)
    }

    /// The general group: MetricTable's rows with a memcached name.
    static func general(_ ctx: ServerContext) -> [(String, String)] {
        MetricTable.statsLines(ctx)
    }

    /// User and system CPU time as memcached prints them (seconds.microseconds).
    static func rusage() -> (user: String, system: String) {
        var ru = Glibc.rusage()
        getrusage(Int32(RUSAGE_SELF.rawValue), &ru)
        func tv(_ t: timeval) -> String {
            let us = String(t.tv_usec)
            return "\(t.tv_sec)." + String(repeating: "0", count: max(0, 6 - us.count)) + us
        }
        return (tv(ru.ru_utime), tv(ru.ru_stime))
    }

    static func settings(_ ctx: ServerContext) -> [(String, String)] {
        let cfg = ctx.config
        return [
            ("maxbytes", "\(ctx.store.memoryLimit)"),
            ("maxconns", "\(cfg.maxConnections)"),
            ("tcpport", "\(ctx.boundPort.load(ordering: .relaxed))"),
            ("udpport", "0"),
            ("inter", cfg.listen),
            ("verbosity", "\(ctx.verbosity.load(ordering: .relaxed))"),
            ("evictions", cfg.disableEviction ? "off" : "on"),
            ("num_threads", "\(cfg.threads)"),
            ("cas_enabled", "yes"),
            // memcached shows the -Y path here (or "no"); SASL is never on (no binary protocol).
            ("auth_enabled_sasl", "no"),
            ("auth_enabled_ascii", cfg.authFile ?? "no"),
            ("item_size_max", "\(cfg.maxItemSize)"),
            ("shards", "\(ctx.store.shardCount)"),
            ("metrics_port", "\(cfg.metricsPort)"),
            ("client_memory_limit", "\(cfg.clientMemoryMB * 1024 * 1024)"),
            ("output_timeout", "\(cfg.outputTimeout)"),
            // memcached's names for its TLS settings (shown by it only when built with TLS).
            ("ssl_enabled", cfg.tls.enabled ? "yes" : "no"),
            ("ssl_chain_cert", cfg.tls.chainCert ?? "NULL"),
            ("ssl_key", cfg.tls.key ?? "NULL"),
            ("ssl_verify_mode", "\(cfg.tls.verifyMode)"),
            ("ssl_ciphers", cfg.tls.ciphers ?? "NULL"),
            ("ssl_ca_cert", cfg.tls.caCert ?? "NULL"),
            ("ssl_min_version", cfg.tls.minVersion.rawValue),
            ("ssl_handshake_timeout", "\(cfg.tls.handshakeTimeout)"),
        ]
    }
}
