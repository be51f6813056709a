// Every metric Larder reports, declared once: its memcached `stats` name, its Prometheus
// family, labels, type and help, and how its value is read. `stats` (StatsReport) and
// /metrics (MetricsPage) are both rendered from this table, so they cannot drift apart.
//
// The table is in memcached 1.6.18's `stats` order. A row with no `stat` is only in
// /metrics; a row with no `family` is only in `stats` — memcached's fields that have no
// Larder equivalent are there (at 0, with the reason), so tools that read every field find
// them. /metrics groups rows by family, in order of first appearance, delete outcomes first.
import Atomics
import CLibevent
import LarderMetrics
import LarderProtocol
import LarderStore
#if canImport(Glibc)
import Glibc
#endif

/// What a row's value is read from. Worker counters are summed over the workers: since the
/// process started for /metrics (Prometheus counters never go back), since the last
/// `stats reset` for `stats`.
struct MetricSource {
    let ctx: ServerContext
    /// One snapshot of the store's counters (one shard lock at a time), shared by all rows.
    let store: StoreCounters
    let sinceReset: Bool

    func count(_ c: Counter) -> UInt64 {
        var t: UInt64 = 0
        for b in ctx.workerCounters { t &+= sinceReset ? b.sinceReset(c) : b.get(c) }
        return t
    }

    func count(_ counters: Counter...) -> UInt64 { counters.reduce(0) { $0 &+ count($1) } }

    /// Requests of the given command families, every outcome.
    func requests(_ families: [CommandFamily]) -> UInt64 {
        var t: UInt64 = 0
        for b in ctx.workerCounters {
            for f in families {
                for s in CommandStatus.allCases { t &+= sinceReset ? b.sinceReset(f, s) : b.get(f, s) }
            }
        }
        return t
    }

    /// A server-wide counter with a `stats reset` baseline.
    func resettable(_ total: ManagedAtomic<UInt64>, _ baseline: ManagedAtomic<UInt64>) -> UInt64 {
        let t = total.load(ordering: .relaxed)
        return sinceReset ? t &- baseline.load(ordering: .relaxed) : t
    }
}

enum MetricValue {
    case count(UInt64)
    case real(Double)
    case text(String)

    var statText: String {
        switch self {
        case .count(let v): "\(v)"
        case .real(let v): "\(v)"
        case .text(let s): s
        }
    }

    var number: Double? {
        switch self {
        case .count(let v): Double(v)
        case .real(let v): v
        case .text: nil
        }
    }
}

struct Metric: Sendable {
    /// memcached's name in `stats`; nil for a /metrics-only sample.
    let stat: String?
    /// The Prometheus family; nil for a `stats`-only field.
    let family: String?
    let labels: [(String, String)]
    let kind: PrometheusText.Kind
    /// The family's help (the same for every row of a family), or for `stats`-only fields
    /// what the field means here.
    let help: String
    let value: @Sendable (MetricSource) -> MetricValue
    /// When set, the `stats` line is printed only when this holds (memcached prints its TLS
    /// fields only with -Z); /metrics always has the sample.
    var statsWhen: (@Sendable (ServerContext) -> Bool)? = nil

    /// This row, its `stats` line printed only when `condition` holds.
    func inStats(when condition: @escaping @Sendable (ServerContext) -> Bool) -> Metric {
        var m = self
        m.statsWhen = condition
        return m
    }

    /// A counter (only grows; `stats reset` applies to it in `stats`).
    static func counter(_ stat: String?, _ family: String?, _ labels: [(String, String)], _ help: String,
                        _ v: @escaping @Sendable (MetricSource) -> UInt64) -> Metric {
        Metric(stat: stat, family: family, labels: labels, kind: .counter, help: help) { .count(v($0)) }
    }

    static func counter(_ stat: String?, _ family: String?, _ help: String,
                        _ v: @escaping @Sendable (MetricSource) -> UInt64) -> Metric {
        counter(stat, family, [], help, v)
    }

    /// A gauge (a level that goes up and down).
    static func gauge(_ stat: String?, _ family: String?, _ labels: [(String, String)], _ help: String,
                      _ v: @escaping @Sendable (MetricSource) -> Int) -> Metric {
        Metric(stat: stat, family: family, labels: labels, kind: .gauge, help: help) { .count(UInt64(max(0, v($0)))) }
    }

    static func gauge(_ stat: String?, _ family: String?, _ help: String,
                      _ v: @escaping @Sendable (MetricSource) -> Int) -> Metric {
        gauge(stat, family, [], help, v)
    }

    /// A `stats`-only field given as text.
    static func text(_ stat: String, _ help: String, _ v: @escaping @Sendable (MetricSource) -> String) -> Metric {
        Metric(stat: stat, family: nil, labels: [], kind: .gauge, help: help) { .text(v($0)) }
    }

    /// A memcached field with no Larder equivalent: always 0, kept so tools find it.
    static func absent(_ stat: String, _ why: String) -> Metric {
        Metric(stat: stat, family: nil, labels: [], kind: .gauge, help: why) { _ in .count(0) }
    }
}

enum MetricTable {
    /// Families rendered before all others in /metrics.
    static let first = ["larder_deletes_total"]

    static let deletesHelp = "Delete requests by outcome: deleted (hit), not_found (miss), expired (found but already expired; answered NOT_FOUND), bad_request (refused for syntax or key), cas_mismatch (md with a cas that did not match), invalidated (md with I: marked stale, not removed)."
    static let segmentsHelp = "Segment bytes by use: mapped (counted against -m), written (live and dead records), live."
    static let storeErrorsHelp = "Writes refused: too_large (over -I) or out_of_memory."
    static let segmentsEmptiedHelp = "Segments emptied, by cause: evicted, expired (all items past their exptime)."
    static let tlsHelp = "TLS handshakes by result (failed: not a TLS client, refused certificate, timed out)."
    static let noSlabs = "no slabs: every segment has one size, nothing is reassigned"
    static let noLRU = "no LRU lists: eviction is S3-FIFO over segments (docs/STORE.md)"
    static let noCrawler = "no crawler: whole expired segments are emptied (segments_expired)"

    /// `stats` (general), in memcached 1.6.18's order, and /metrics.
    static let general: [Metric] = [
        .text("pid", "process id") { _ in "\(getpid())" },
        .text("uptime", "seconds since start") { "\($0.ctx.store.clock.now() - $0.ctx.startTime)" },
        .text("time", "current Unix time") { "\($0.ctx.store.clock.now())" },
        .text("version", "memcached version Larder speaks, and its own") { _ in larderVersion },
        .text("libevent", "libevent version") { _ in String(cString: event_get_version()) },
        .text("pointer_size", "bits in a pointer") { _ in "\(MemoryLayout<Int>.size * 8)" },
        .text("rusage_user", "user CPU seconds") { _ in StatsReport.rusage().user },
        .text("rusage_system", "system CPU seconds") { _ in StatsReport.rusage().system },
        .gauge("max_connections", nil, "-c") { $0.ctx.config.maxConnections },
        .gauge("curr_connections", "larder_connections", "Open client connections.") {
            $0.ctx.connections.current.load(ordering: .relaxed)
        },
        .counter("total_connections", "larder_connections_total", "Client connections accepted.") {
            $0.resettable($0.ctx.connections.total, $0.ctx.connections.totalBaseline)
        },
        .counter("rejected_connections", "larder_connections_rejected_total", "Connections refused because of the connection limit (-c).") {
            $0.resettable($0.ctx.connections.rejected, $0.ctx.connections.rejectedBaseline)
        },
        .gauge("connection_structures", nil, "connection objects allocated: one per open connection") {
            $0.ctx.connections.current.load(ordering: .relaxed)
        },
        .gauge("client_memory", "larder_client_memory_bytes", "Memory client connections hold: input buffers, queued replies and the values they pin, per-connection state.") {
            $0.ctx.clientMemoryBytes
        },
        .gauge("client_memory_limit", "larder_client_memory_limit_bytes", "The client-memory budget (--client-memory); 0 means no limit.") {
            $0.ctx.config.clientMemoryMB * 1024 * 1024
        },
        .counter("evicted_clients", "larder_clients_evicted_total", "Connections closed because the client-memory budget was reached (those holding the most).") {
            $0.ctx.clientsEvicted
        },
        .counter("output_timeouts", "larder_clients_output_timeout_total", "Connections closed because their replies sat unread at the output limit past --output-timeout.") {
            $0.ctx.outputTimeouts
        },
        .absent("response_obj_oom", "no response objects: replies are written into one buffer per connection (client_memory)"),
        .absent("response_obj_count", "no response objects (see client_memory)"),
        .absent("response_obj_bytes", "no response objects (see client_memory)"),
        .absent("read_buf_oom", "no shared read-buffer pool: each connection's input buffer is charged to client_memory"),
        .absent("read_buf_count", "no shared read-buffer pool (see client_memory)"),
        .absent("read_buf_bytes", "no shared read-buffer pool (see client_memory)"),
        .absent("read_buf_bytes_free", "no shared read-buffer pool (see client_memory)"),
        .gauge("reserved_fds", nil, "descriptors kept outside -c (listeners, metrics, event loops)") {
            Server.reservedDescriptors($0.ctx.config)
        },
        .counter("cmd_get", nil, "keys requested by get, gets, gat, gats") { $0.count(.cmdGet) },
        .counter("cmd_set", nil, "storage requests") { $0.count(.cmdSet) },
        .counter("cmd_flush", nil, "flush_all requests") { $0.count(.cmdFlush) },
        .counter("cmd_touch", nil, "touch, gat and gats keys") { $0.count(.cmdTouch) },
        .counter("cmd_meta", nil, "meta commands (mg ms md ma mn me)") { $0.requests([.mg, .ms, .md, .ma, .mn, .me]) },
        .counter("get_hits", nil, "keys found by get, gets, gat, gats") { $0.count(.getHits) },
        .counter("get_misses", nil, "keys not found") { $0.count(.getMisses) },
        .counter("get_expired", nil, "keys found expired") { $0.count(.getExpired) },
        .absent("get_flushed", "flush_all empties the store at once (or at its delay): no item is found flushed"),
        .counter("delete_misses", nil, "deletes that removed nothing (not_found + expired + cas_mismatch in larder_deletes_total)") {
            $0.count(.deleteMisses, .deleteExpired, .deleteCasMismatch)
        },
        .counter("delete_hits", "larder_deletes_total", [("outcome", "deleted")], deletesHelp) { $0.count(.deleteHits) },
        .counter(nil, "larder_deletes_total", [("outcome", "not_found")], deletesHelp) { $0.count(.deleteMisses) },
        .counter(nil, "larder_deletes_total", [("outcome", "expired")], deletesHelp) { $0.count(.deleteExpired) },
        .counter(nil, "larder_deletes_total", [("outcome", "bad_request")], deletesHelp) { $0.count(.deleteBadRequest) },
        .counter(nil, "larder_deletes_total", [("outcome", "cas_mismatch")], deletesHelp) { $0.count(.deleteCasMismatch) },
        .counter(nil, "larder_deletes_total", [("outcome", "invalidated")], deletesHelp) { $0.count(.deleteInvalidated) },
        .counter("incr_misses", nil, "incr of a missing key") { $0.count(.incrMisses) },
        .counter("incr_hits", nil, "incr of a present key") { $0.count(.incrHits) },
        .counter("decr_misses", nil, "decr of a missing key") { $0.count(.decrMisses) },
        .counter("decr_hits", nil, "decr of a present key") { $0.count(.decrHits) },
        .counter("cas_misses", nil, "cas of a missing key") { $0.count(.casMisses) },
        .counter("cas_hits", nil, "cas that stored") { $0.count(.casHits) },
        .counter("cas_badval", nil, "cas with a stale unique") { $0.count(.casBadval) },
        .counter("touch_hits", nil, "touch, gat, gats keys found") { $0.count(.touchHits, .gatHits) },
        .counter("touch_misses", nil, "touch, gat, gats keys not found") { $0.count(.touchMisses, .gatMisses) },
        .counter("store_too_large", "larder_store_errors_total", [("reason", "too_large")], storeErrorsHelp) { $0.count(.storeTooLarge) },
        .counter("store_no_memory", "larder_store_errors_total", [("reason", "out_of_memory")], storeErrorsHelp) { $0.count(.storeNoMemory) },
        .counter("auth_cmds", nil, "authentication attempts (-Y)") { $0.count(.authCmds) },
        .counter(nil, "larder_auth_total", [("outcome", "ok")], "Authentication attempts (-Y) by outcome.") {
            $0.count(.authCmds) &- $0.count(.authErrors)
        },
        .counter("auth_errors", "larder_auth_total", [("outcome", "failed")], "Authentication attempts (-Y) by outcome.") {
            $0.count(.authErrors)
        },
        .counter(nil, "larder_metrics_auth_failures_total", "Requests to the metrics endpoint refused for missing or wrong credentials (401).") {
            $0.ctx.connections.metricsAuthFailures.load(ordering: .relaxed)
        },
        .counter(nil, "larder_protocol_errors_total", "Requests answered with an error line.") { $0.count(.protocolErrors) },
        .counter("bytes_read", "larder_read_bytes_total", "Bytes read from clients.") { $0.count(.bytesRead) },
        .counter("bytes_written", "larder_written_bytes_total", "Bytes written to clients.") { $0.count(.bytesWritten) },
        .gauge("limit_maxbytes", "larder_limit_bytes", "Memory limit for items and index (-m, or the last cache_memlimit).") {
            $0.ctx.store.memoryLimit
        },
        .gauge("accepting_conns", "larder_accepting", "1 while the cache port accepts connections, 0 while paused for lack of descriptors.") {
            $0.ctx.connections.accepting.load(ordering: .relaxed) ? 1 : 0
        },
        .counter("listen_disabled_num", "larder_listen_disabled_total", "Times accepting paused because the process was out of descriptors (EMFILE/ENFILE), cache and metrics ports.") {
            $0.ctx.connections.listenDisabled.load(ordering: .relaxed)
        },
        .counter("time_in_listen_disabled_us", nil, "microseconds the cache port spent not accepting for lack of descriptors") {
            $0.ctx.connections.listenDisabledMicros.load(ordering: .relaxed)
        },
        .gauge("threads", "larder_threads", "Worker threads.") { $0.ctx.config.threads },
        .counter("ssl_handshake_errors", "larder_tls_handshakes_total", [("result", "failed")], tlsHelp) {
            $0.count(.tlsHandshakeErrors)
        }.inStats(when: { $0.tls != nil }),
        .counter("ssl_handshakes", "larder_tls_handshakes_total", [("result", "ok")], tlsHelp) {
            $0.count(.tlsHandshakes)
        }.inStats(when: { $0.tls != nil }),
        .text("time_since_server_cert_refresh", "seconds since the certificate was (re)loaded") {
            $0.ctx.tls.map { "\($0.secondsSinceLoad)" } ?? "0"
        }.inStats(when: { $0.tls != nil }),
        .absent("conn_yields", "a connection's whole input batch is served per read event, bounded by its input buffer and output limit"),
        .gauge("hash_power_level", nil, "log2 of the index slots over all shards, rounded down") {
            $0.store.indexSlots > 0 ? Int.bitWidth - 1 - $0.store.indexSlots.leadingZeroBitCount : 0
        },
        .gauge("hash_bytes", nil, "bytes of index slots (8 a slot)") { $0.store.indexSlots * 8 },
        .absent("hash_is_expanding", "each shard's index grows in one step under its lock"),
        .absent("slab_reassign_rescues", noSlabs),
        .absent("slab_reassign_chunk_rescues", noSlabs),
        .absent("slab_reassign_evictions_nomem", noSlabs),
        .absent("slab_reassign_inline_reclaim", noSlabs),
        .absent("slab_reassign_busy_items", noSlabs),
        .absent("slab_reassign_busy_deletes", noSlabs),
        .absent("slab_reassign_running", noSlabs),
        .absent("slabs_moved", noSlabs),
        .absent("lru_crawler_running", noCrawler),
        .absent("lru_crawler_starts", noCrawler),
        .absent("lru_maintainer_juggles", noLRU),
        .absent("malloc_fails", "a failed allocation stops the process; segments are mapped up front"),
        .counter("log_worker_dropped", nil, "watch lines dropped when written (a watcher's buffer full or busy)") {
            $0.ctx.watch.linesDropped.load(ordering: .relaxed)
        },
        .counter("log_worker_written", nil, "watch lines written into watchers' buffers") {
            $0.ctx.watch.linesWritten.load(ordering: .relaxed)
        },
        .counter("log_watcher_skipped", nil, "watch lines skipped for watchers not reading fast enough") {
            $0.ctx.watch.linesSkipped.load(ordering: .relaxed)
        },
        .counter("log_watcher_sent", nil, "watch lines queued to watchers' sockets") {
            $0.ctx.watch.linesSent.load(ordering: .relaxed)
        },
        .gauge("log_watchers", nil, "connections in `watch`") { $0.ctx.watch.watcherCount },
        .absent("unexpected_napi_ids", "no NAPI id steering"),
        .absent("round_robin_fallback", "no NAPI id steering: connections are handed out round robin"),
        .gauge("bytes", "larder_item_bytes", "Bytes of live items: their records in segments and their large-value buffers.") { $0.store.itemBytes },
        .gauge("curr_items", "larder_items", "Items currently stored.") { $0.store.currItems },
        .counter("total_items", "larder_items_total", "Items ever stored (including overwrites).") { $0.store.totalItems },
        .gauge("slab_global_page_pool", nil, "empty segments ready for new records") { $0.store.freeSegments },
        .counter("expired_unfetched", "larder_expired_unfetched_total", "Expired items reclaimed that were never read.") { $0.store.expiredUnfetched },
        .counter("evicted_unfetched", "larder_evicted_unfetched_total", "Evicted items that were never read.") { $0.store.evictedUnfetched },
        .absent("evicted_active", "items read since they were written are copied forward, never evicted (copied_forward)"),
        .counter("evictions", "larder_evictions_total", "Items evicted to make room.") { $0.store.evictions },
        .counter("reclaimed", "larder_reclaimed_total", "Expired items removed (lazily, with their whole segment, or met by eviction).") { $0.store.reclaimed },
        .absent("crawler_reclaimed", noCrawler),
        .absent("crawler_items_checked", noCrawler),
        .absent("lrutail_reflocked", noLRU),
        .absent("moves_to_cold", noLRU),
        .absent("moves_to_warm", noLRU),
        .absent("moves_within_lru", noLRU),
        .absent("direct_reclaims", "every eviction happens inline in the write that needs room (segments_evicted)"),
        .absent("lru_bumps_dropped", noLRU),
        // Larder's own.
        .gauge("index_bytes", "larder_index_bytes", "Bytes of the hash indexes and ghost filters.") { $0.store.indexBytes },
        .gauge("stale_slots", "larder_stale_slots", "Weak slots whose target is gone (index entries into emptied segments, connection-registry entries), not yet swept.") {
            $0.ctx.staleSlots($0.store)
        },
        .gauge("memory_used", "larder_memory_used_bytes", "Everything counted against -m: segments, indexes, ghost filters, large values.") { $0.store.usedBytes },
        .gauge("segment_size", "larder_segment_size_bytes", "Size of one segment.") { $0.ctx.store.segmentSize },
        .gauge("segment_bytes", "larder_segment_bytes", [("kind", "mapped")], segmentsHelp) { $0.store.segmentBytes },
        .gauge("segment_bytes_written", "larder_segment_bytes", [("kind", "written")], segmentsHelp) { $0.store.segmentBytesWritten },
        .gauge("segment_bytes_live", "larder_segment_bytes", [("kind", "live")], segmentsHelp) { $0.store.liveSegmentBytes },
        .gauge("large_value_bytes", "larder_large_value_bytes", "Bytes of values kept outside the segments (above min(8 KB, segment/4)).") { $0.store.externalBytes },
        .counter("copied_forward", "larder_copied_forward_total", "Items copied forward by segment eviction or compaction.") { $0.store.copiedForward },
        .counter("segments_evicted", "larder_segments_total", [("cause", "evicted")], segmentsEmptiedHelp) { $0.store.segmentsEvicted },
        .counter("segments_expired", "larder_segments_total", [("cause", "expired")], segmentsEmptiedHelp) { $0.store.segmentsExpired },
        .gauge("restored_items", "larder_restored_items", "Items the last start took over from the memory file (-e).") {
            $0.ctx.store.restoreReport.restoredItems
        },
        // Its /metrics side is larder_restore_info{outcome} (MetricsPage: the label is the value).
        .text("restore_outcome", "what the last start found in the memory file (docs/RESTART.md)") {
            $0.ctx.store.restoreReport.outcome.rawValue
        },
    ]

    /// `stats` lines: every row with a memcached name, in table order.
    static func statsLines(_ ctx: ServerContext) -> [(String, String)] {
        let src = MetricSource(ctx: ctx, store: ctx.store.counters(), sinceReset: true)
        return general.compactMap { m in
            guard let stat = m.stat, m.statsWhen?(ctx) ?? true else { return nil }
            return (stat, m.value(src).statText)
        }
    }

    /// /metrics samples: every row with a family, grouped by family (first appearance
    /// order, `first` ahead), each family's HELP and TYPE once.
    static func render(_ ctx: ServerContext, to p: inout PrometheusText) {
        let src = MetricSource(ctx: ctx, store: ctx.store.counters(), sinceReset: false)
        var order: [String] = first
        var rows: [String: [Metric]] = [:]
        for m in general {
            guard let f = m.family else { continue }
            if rows[f] == nil && !order.contains(f) { order.append(f) }
            rows[f, default: []].append(m)
        }
        for f in order {
            guard let family = rows[f], let head = family.first else { continue }
            p.family(f, head.kind, head.help)
            for m in family { p.sample(f, m.labels, m.value(src).number ?? 0) }
        }
    }
}
