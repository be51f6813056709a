// Renders `stats` and its sub-commands under memcached's stat names, from the same counters
// the metrics endpoint reads.
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

    static func general(_ ctx: ServerContext) -> [(String, String)] {
        let now = ctx.store.clock.now()
        let c = ctx.store.counters()
        var ru = rusage()
        getrusage(Int32(RUSAGE_SELF.rawValue), &ru)
        func tv(_ t: timeval) -> String {
            let us = String(t.tv_usec)
            return "\(t.tv_sec)." + String(repeating: "0", count: max(0, 6 - us.count)) + us
        }
        func n(_ k: Counter) -> String { "\(ctx.total(k))" }
        let conns = ctx.connections
        return [
            ("pid", "\(getpid())"),
            ("uptime", "\(now - ctx.startTime)"),
            ("time", "\(now)"),
            ("version", larderVersion),
            ("pointer_size", "\(MemoryLayout<Int>.size * 8)"),
            ("rusage_user", tv(ru.ru_utime)),
            ("rusage_system", tv(ru.ru_stime)),
            ("max_connections", "\(ctx.config.maxConnections)"),
            ("curr_connections", "\(conns.current.load(ordering: .relaxed))"),
            ("total_connections", "\(conns.total.load(ordering: .relaxed) &- conns.totalBaseline.load(ordering: .relaxed))"),
            ("rejected_connections", "\(conns.rejected.load(ordering: .relaxed) &- conns.rejectedBaseline.load(ordering: .relaxed))"),
            ("listen_disabled_num", "\(conns.listenDisabled.load(ordering: .relaxed))"),
            ("accepting_conns", conns.accepting.load(ordering: .relaxed) ? "1" : "0"),
            ("client_memory", "\(ctx.clientMemoryBytes)"),
            ("client_memory_limit", "\(ctx.config.clientMemoryMB * 1024 * 1024)"),
            ("evicted_clients", "\(ctx.clientsEvicted)"),
            ("output_timeouts", "\(ctx.outputTimeouts)"),
            ("cmd_get", n(.cmdGet)),
            ("cmd_set", n(.cmdSet)),
            ("cmd_flush", n(.cmdFlush)),
            ("cmd_touch", n(.cmdTouch)),
            ("get_hits", n(.getHits)),
            ("get_misses", n(.getMisses)),
            ("get_expired", n(.getExpired)),
            ("delete_misses", "\(ctx.total(.deleteMisses) &+ ctx.total(.deleteExpired) &+ ctx.total(.deleteCasMismatch))"),
            ("delete_hits", n(.deleteHits)),
            ("incr_misses", n(.incrMisses)),
            ("incr_hits", n(.incrHits)),
            ("decr_misses", n(.decrMisses)),
            ("decr_hits", n(.decrHits)),
            ("cas_misses", n(.casMisses)),
            ("cas_hits", n(.casHits)),
            ("cas_badval", n(.casBadval)),
            ("touch_hits", "\(ctx.total(.touchHits) &+ ctx.total(.gatHits))"),
            ("touch_misses", "\(ctx.total(.touchMisses) &+ ctx.total(.gatMisses))"),
            ("store_too_large", n(.storeTooLarge)),
            ("store_no_memory", n(.storeNoMemory)),
            ("bytes_read", n(.bytesRead)),
            ("bytes_written", n(.bytesWritten)),
            ("limit_maxbytes", "\(ctx.store.memoryLimit)"),
            ("threads", "\(ctx.config.threads)"),
            ("bytes", "\(c.itemBytes)"),
            ("index_bytes", "\(c.indexBytes)"),
            ("curr_items", "\(c.currItems)"),
            ("total_items", "\(c.totalItems)"),
            ("expired_unfetched", "\(c.expiredUnfetched)"),
            ("evicted_unfetched", "\(c.evictedUnfetched)"),
            ("evictions", "\(c.evictions)"),
            ("reclaimed", "\(c.reclaimed)"),
            ("stale_slots", "\(ctx.staleSlots(c))"),
            ("memory_used", "\(c.usedBytes)"),
            ("segment_size", "\(ctx.store.segmentSize)"),
            ("segment_bytes", "\(c.segmentBytes)"),
            ("segment_bytes_written", "\(c.segmentBytesWritten)"),
            ("segment_bytes_live", "\(c.liveSegmentBytes)"),
            ("large_value_bytes", "\(c.externalBytes)"),
            ("copied_forward", "\(c.copiedForward)"),
            ("segments_evicted", "\(c.segmentsEvicted)"),
            ("segments_expired", "\(c.segmentsExpired)"),
            ("restored_items", "\(ctx.store.restoreReport.restoredItems)"),
            ("restore_outcome", ctx.store.restoreReport.outcome.rawValue),
        ]
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
            ("item_size_max", "\(cfg.maxItemSize)"),
            ("shards", "\(ctx.store.shardCount)"),
            ("metrics_port", "\(cfg.metricsPort)"),
            ("client_memory_limit", "\(cfg.clientMemoryMB * 1024 * 1024)"),
            ("output_timeout", "\(cfg.outputTimeout)"),
        ]
    }
}
