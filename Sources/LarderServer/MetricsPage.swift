// Renders /metrics: sums the workers' counters and histograms, reads the store's counters
// (one shard lock at a time) and the process's own figures, and writes the Prometheus text
// format. Every known label combination is present from the start, at 0.
import LarderMetrics
import LarderProtocol
import LarderStore
#if canImport(Glibc)
import Glibc
#endif

enum MetricsPage {
    static func render(_ ctx: ServerContext) -> String {
        var p = PrometheusText()
        let blocks = ctx.workerCounters
        func sum(_ c: Counter) -> UInt64 { blocks.reduce(0) { $0 &+ $1.get(c) } }
        func sum(_ f: CommandFamily, _ s: CommandStatus) -> UInt64 { blocks.reduce(0) { $0 &+ $1.get(f, s) } }

        p.family("larder_deletes_total", .counter, "Delete requests by outcome: deleted (hit), not_found (miss), expired (found but already expired; answered NOT_FOUND), bad_request (refused for syntax or key), cas_mismatch (md with a cas that did not match), invalidated (md with I: marked stale, not removed).")
        p.sample("larder_deletes_total", [("outcome", "deleted")], sum(.deleteHits))
        p.sample("larder_deletes_total", [("outcome", "not_found")], sum(.deleteMisses))
        p.sample("larder_deletes_total", [("outcome", "expired")], sum(.deleteExpired))
        p.sample("larder_deletes_total", [("outcome", "bad_request")], sum(.deleteBadRequest))
        p.sample("larder_deletes_total", [("outcome", "cas_mismatch")], sum(.deleteCasMismatch))
        p.sample("larder_deletes_total", [("outcome", "invalidated")], sum(.deleteInvalidated))

        p.family("larder_commands_total", .counter, "Requests by command and outcome (get keys count one each).")
        for f in CommandFamily.allCases {
            for s in CommandStatus.exported(for: f) {
                p.sample("larder_commands_total", [("command", f.rawValue), ("status", s.label)], sum(f, s))
            }
        }

        p.family("larder_command_duration_seconds", .histogram, "Time from a request being parsed to its reply being queued, by command group.")
        for g in LatencyGroup.allCases {
            var buckets = [UInt64](repeating: 0, count: LatencyHistogram.bounds.count + 1)
            var total = 0.0
            for b in blocks {
                let snap = b.latency[g.rawValue].snapshot()
                for i in buckets.indices { buckets[i] &+= snap.buckets[i] }
                total += snap.sumSeconds
            }
            p.histogram("larder_command_duration_seconds", [("command", g.label)], bounds: LatencyHistogram.bounds,
                        buckets: buckets, sum: total)
        }

        let c = ctx.store.counters()
        p.family("larder_items", .gauge, "Items currently stored.")
        p.sample("larder_items", [], Double(c.currItems))
        p.family("larder_items_total", .counter, "Items ever stored (including overwrites).")
        p.sample("larder_items_total", [], c.totalItems)
        p.family("larder_item_bytes", .gauge, "Bytes of live items: their records in segments and their large-value buffers.")
        p.sample("larder_item_bytes", [], Double(c.itemBytes))
        p.family("larder_index_bytes", .gauge, "Bytes of the hash indexes and ghost filters.")
        p.sample("larder_index_bytes", [], Double(c.indexBytes))
        p.family("larder_memory_used_bytes", .gauge, "Everything counted against -m: segments, indexes, ghost filters, large values.")
        p.sample("larder_memory_used_bytes", [], Double(c.usedBytes))
        p.family("larder_segment_bytes", .gauge, "Segment bytes by use: mapped (counted against -m), written (live and dead records), live.")
        p.sample("larder_segment_bytes", [("kind", "mapped")], Double(c.segmentBytes))
        p.sample("larder_segment_bytes", [("kind", "written")], Double(c.segmentBytesWritten))
        p.sample("larder_segment_bytes", [("kind", "live")], Double(c.liveSegmentBytes))
        p.family("larder_copied_forward_total", .counter, "Items copied forward by segment eviction or compaction.")
        p.sample("larder_copied_forward_total", [], c.copiedForward)
        p.family("larder_segments_total", .counter, "Segments emptied, by cause: evicted, expired (all items past their exptime).")
        p.sample("larder_segments_total", [("cause", "evicted")], c.segmentsEvicted)
        p.sample("larder_segments_total", [("cause", "expired")], c.segmentsExpired)
        let r = ctx.store.restoreReport
        p.family("larder_restored_items", .gauge, "Items the last start took over from the memory file (-e).")
        p.sample("larder_restored_items", [], Double(r.restoredItems))
        p.family("larder_restore_info", .gauge, "1 for what the last start found in the memory file: restored, clean_start (no -e), no_file (created), incompatible_settings or corrupt (started empty).")
        p.sample("larder_restore_info", [("outcome", r.outcome.rawValue)], 1.0)
        p.family("larder_limit_bytes", .gauge, "Memory limit for items and index (-m, or the last cache_memlimit).")
        p.sample("larder_limit_bytes", [], Double(ctx.store.memoryLimit))
        p.family("larder_evictions_total", .counter, "Items evicted to make room.")
        p.sample("larder_evictions_total", [], c.evictions)
        p.family("larder_evicted_unfetched_total", .counter, "Evicted items that were never read.")
        p.sample("larder_evicted_unfetched_total", [], c.evictedUnfetched)
        p.family("larder_expired_unfetched_total", .counter, "Expired items reclaimed that were never read.")
        p.sample("larder_expired_unfetched_total", [], c.expiredUnfetched)
        p.family("larder_reclaimed_total", .counter, "Expired items removed (lazily, with their whole segment, or met by eviction).")
        p.sample("larder_reclaimed_total", [], c.reclaimed)
        p.family("larder_stale_slots", .gauge, "Weak slots whose target is gone (index entries into emptied segments, connection-registry entries), not yet swept.")
        p.sample("larder_stale_slots", [], Double(ctx.staleSlots(c)))
        p.family("larder_store_errors_total", .counter, "Writes refused: too_large (over -I) or out_of_memory.")
        p.sample("larder_store_errors_total", [("reason", "too_large")], sum(.storeTooLarge))
        p.sample("larder_store_errors_total", [("reason", "out_of_memory")], sum(.storeNoMemory))
        p.family("larder_protocol_errors_total", .counter, "Requests answered with an error line.")
        p.sample("larder_protocol_errors_total", [], sum(.protocolErrors))

        let conns = ctx.connections
        p.family("larder_connections", .gauge, "Open client connections.")
        p.sample("larder_connections", [], Double(conns.current.load(ordering: .relaxed)))
        p.family("larder_connections_total", .counter, "Client connections accepted.")
        p.sample("larder_connections_total", [], conns.total.load(ordering: .relaxed))
        p.family("larder_connections_rejected_total", .counter, "Connections refused because of the connection limit (-c).")
        p.sample("larder_connections_rejected_total", [], conns.rejected.load(ordering: .relaxed))
        p.family("larder_listen_disabled_total", .counter, "Times accepting paused because the process was out of descriptors (EMFILE/ENFILE), cache and metrics ports.")
        p.sample("larder_listen_disabled_total", [], conns.listenDisabled.load(ordering: .relaxed))
        p.family("larder_accepting", .gauge, "1 while the cache port accepts connections, 0 while paused for lack of descriptors.")
        p.sample("larder_accepting", [], conns.accepting.load(ordering: .relaxed) ? 1.0 : 0.0)
        p.family("larder_client_memory_bytes", .gauge, "Memory client connections hold: input buffers, queued replies and the values they pin, per-connection state.")
        p.sample("larder_client_memory_bytes", [], Double(ctx.clientMemoryBytes))
        p.family("larder_client_memory_limit_bytes", .gauge, "The client-memory budget (--client-memory); 0 means no limit.")
        p.sample("larder_client_memory_limit_bytes", [], Double(ctx.config.clientMemoryMB * 1024 * 1024))
        p.family("larder_clients_evicted_total", .counter, "Connections closed because the client-memory budget was reached (those holding the most).")
        p.sample("larder_clients_evicted_total", [], ctx.clientsEvicted)
        p.family("larder_clients_output_timeout_total", .counter, "Connections closed because their replies sat unread at the output limit past --output-timeout.")
        p.sample("larder_clients_output_timeout_total", [], ctx.outputTimeouts)
        p.family("larder_read_bytes_total", .counter, "Bytes read from clients.")
        p.sample("larder_read_bytes_total", [], sum(.bytesRead))
        p.family("larder_written_bytes_total", .counter, "Bytes written to clients.")
        p.sample("larder_written_bytes_total", [], sum(.bytesWritten))
        p.family("larder_threads", .gauge, "Worker threads.")
        p.sample("larder_threads", [], Double(ctx.config.threads))

        processMetrics(&p, ctx)
        return p.text
    }

    static func processMetrics(_ p: inout PrometheusText, _ ctx: ServerContext) {
        var ru = rusage()
        getrusage(Int32(RUSAGE_SELF.rawValue), &ru)
        let cpu = Double(ru.ru_utime.tv_sec) + Double(ru.ru_utime.tv_usec) / 1e6
            + Double(ru.ru_stime.tv_sec) + Double(ru.ru_stime.tv_usec) / 1e6
        p.family("process_cpu_seconds_total", .counter, "Total user and system CPU time spent in seconds.")
        p.sample("process_cpu_seconds_total", [], cpu)
        let page = Double(sysconf(Int32(_SC_PAGESIZE)))
        var vsize = 0.0, rss = 0.0
        if let statm = readTextFile("/proc/self/statm") {
            let f = statm.split(separator: " ")
            if f.count >= 2 { vsize = (Double(f[0]) ?? 0) * page; rss = (Double(f[1]) ?? 0) * page }
        }
        p.family("process_resident_memory_bytes", .gauge, "Resident memory size in bytes.")
        p.sample("process_resident_memory_bytes", [], rss)
        p.family("process_virtual_memory_bytes", .gauge, "Virtual memory size in bytes.")
        p.sample("process_virtual_memory_bytes", [], vsize)
        var fds = 0
        if let d = opendir("/proc/self/fd") {
            while let e = readdir(d) {
                if e.pointee.d_name.0 != 0x2E { fds += 1 }  // skip . and ..
            }
            closedir(d)
            fds -= 1  // the descriptor opendir itself holds
        }
        p.family("process_open_fds", .gauge, "Number of open file descriptors.")
        p.sample("process_open_fds", [], Double(fds))
        var lim = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &lim)
        p.family("process_max_fds", .gauge, "Maximum number of open file descriptors.")
        p.sample("process_max_fds", [], Double(lim.rlim_cur))
        p.family("process_start_time_seconds", .gauge, "Start time of the process since unix epoch in seconds.")
        p.sample("process_start_time_seconds", [], Double(ctx.startTime))
    }
}
