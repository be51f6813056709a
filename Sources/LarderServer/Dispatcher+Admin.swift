// Runs the admin commands memcached tools send, with memcached 1.6.18's replies. Larder has
// no slab classes: its items are one pseudo class, 1 (the same one `stats items` reports), so
// `stats cachedump 1 N` lists items, other classes list none, and `slabs reassign` answers
// as memcached does for a class with no spare pages. `slabs automove` is accepted and does
// nothing (segments are not per class). README.md describes each command.
import LarderMetrics
import LarderProtocol
import LarderStore
#if canImport(Glibc)
import Glibc
#endif

extension Dispatcher {
    /// The highest slab class id memcached 1.6.18 has with its default settings (`-n 48 -f
    /// 1.25 -I 1m`); `slabs reassign` calls classes above it bad, as memcached does.
    static let largestSlabClass: Int32 = 39

    func runAdmin(_ a: AdminCommand, _ out: inout OutputQueue) -> Next {
        let o = out.text
        func line(_ s: StaticString, noreply: Bool = false) {
            counters.add(.admin, .ok)
            if noreply { return }
            o.append(s)
            o.appendCRLF()
        }
        switch a {
        case .cacheMemlimit(let mb, let noreply):
            if mb < 8 {
                line("MEMLIMIT_TOO_SMALL cannot set maxbytes to less than 8m", noreply: noreply)
            } else if mb > 1_000_000_000 {
                line("MEMLIMIT_ADJUST_FAILED input value is megabytes not bytes", noreply: noreply)
            } else if store.setMemoryLimit(Int(mb) * 1024 * 1024) {
                line("OK", noreply: noreply)
            } else {
                line("MEMLIMIT_ADJUST_FAILED out of bounds or unable to adjust", noreply: noreply)
            }
        case .slabsAutomove(_, let noreply), .slabsAutomoveRatio(let noreply):
            line("OK", noreply: noreply)
        case .slabsReassign(let src, let dst):
            let bad = { (c: Int32) in c < 0 || c > Dispatcher.largestSlabClass }
            if src == dst {
                line("SAME src and dst class are identical")
            } else if bad(src) || bad(dst) {
                // (-1, "any source", finds no class with spare pages either)
                line("BADCLASS invalid src or dst class id")
            } else {
                line("NOSPARE source class has no spare pages")
            }
        case .cachedump(let cls, let limit):
            counters.add(.stats, .ok)
            if cls == 1 {
                // memcached caps the dump at 2 MB of text.
                var bytes = 0
                store.dumpItems(limit: Int(limit)) { item in
                    let start = o.count
                    o.append("ITEM ")
                    item.key.withUnsafeBytes { o.append($0) }
                    o.append(" [")
                    o.appendDecimal(UInt64(item.valueCount))
                    o.append(" b; ")
                    o.appendDecimal(UInt64(max(0, item.exptime)))
                    o.append(" s]")
                    o.appendCRLF()
                    bytes += o.count - start
                    return bytes < 2 * 1024 * 1024 - 512
                }
            }
            o.append("END")
            o.appendCRLF()
        case .metadump:
            counters.add(.admin, .ok)
            let now = store.clock.now()
            store.dumpItems { item in
                o.append("key=")
                uriEncode(item.key, to: o)
                o.append(" exp=")
                o.append(item.exptime == 0 ? "-1" : String(item.exptime))
                o.append(" la=")
                o.appendDecimal(UInt64(max(0, now - item.accessAge)))
                o.append(" cas=")
                o.appendDecimal(item.cas)
                o.append(item.fetched ? " fetch=yes" : " fetch=no")
                o.append(" cls=1 size=")
                o.appendDecimal(UInt64(item.size))
                o.append(0x0A)
                // Keep the reply buffer bounded: hand what is written so far to the queue.
                if o.count > 1 << 20 { out.commitText() }
                return true
            }
            o.append("END")
            o.appendCRLF()
        case .lruCrawlerOK:
            line("OK")
        case .shutdown(let graceful):
            guard context.config.enableShutdown else {
                counters.add(.admin, .error)
                o.append("ERROR: shutdown not enabled")
                o.appendCRLF()
                return .proceed
            }
            guard graceful != nil else {
                counters.add(.admin, .error)
                ReplyEncoder.append(.error(.shutdownMode), to: o)
                return .proceed
            }
            // memcached closes the connection without a reply and stops the process; Larder's
            // stop is its graceful SIGTERM path (queued replies are sent, then exit 0).
            counters.add(.admin, .ok)
            kill(getpid(), SIGTERM)
            return .close
        case .refreshCerts(let noreply):
            // memcached's replies: OK, or a line starting "Error" (not an ERROR keyword).
            guard let tls = context.tls else {
                counters.add(.admin, .error)
                o.append("Error TLS not enabled")
                o.appendCRLF()
                return .proceed
            }
            if let error = tls.reload() {
                counters.add(.admin, .error)
                o.append("Error loading the certificates: \(error)")
                o.appendCRLF()
            } else {
                line("OK", noreply: noreply)
            }
        case .watch(let classes):
            // As memcached: the watch must be the first thing in its batch (replies queued
            // before it would interleave with the log lines).
            if out.queuedBytes > 0 || fd < 0 {
                counters.add(.admin, .error)
                o.append("ERROR cannot pipeline other commands before watch")
                o.appendCRLF()
                return .proceed
            }
            if tls {
                counters.add(.admin, .error)
                o.append("ERROR watch is not available over TLS; use a notls: listener")
                o.appendCRLF()
                return .proceed
            }
            // The watch thread takes a duplicate of the socket; the connection then closes its
            // own descriptor (the socket stays open through the duplicate) and forgets it.
            let d = dup(fd)
            guard d >= 0 else {
                counters.add(.admin, .error)
                o.append("WATCHER_FAILED failed to add log watcher")
                o.appendCRLF()
                return .proceed
            }
            counters.add(.admin, .ok)
            watch.add(fd: d, classes: classes)
            return .handedOff
        }
        return .proceed
    }
}

/// memcached's `uriencode` for metadump keys: bytes outside `A-Za-z0-9-_.~` as `%XX`.
func uriEncode(_ key: [UInt8], to o: ByteSink) {
    let hex: [UInt8] = Array("0123456789ABCDEF".utf8)
    for b in key {
        switch b {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
             UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."),
             UInt8(ascii: "~"):
            o.append(b)
        default:
            o.append(UInt8(ascii: "%"))
            o.append(hex[Int(b >> 4)])
            o.append(hex[Int(b & 15)])
        }
    }
}
