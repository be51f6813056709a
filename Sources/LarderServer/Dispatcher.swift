// Executes parsed commands against the store and encodes the replies into a connection's
// output queue, counting every outcome (memcached's stats and the metrics' command/status
// table) and timing each command. It sees no socket; the connection calls it once per parsed
// request, in order.
import LarderMetrics
import LarderProtocol
import LarderStore
#if canImport(Glibc)
import Glibc
#endif

struct Dispatcher {
    let context: ServerContext
    let counters: CounterBlock
    /// Time each command for the latency histograms (off when metrics are disabled).
    let timed: Bool
    /// The connection's socket (`watch` hands a duplicate of it to the watch thread; log
    /// lines name it as memcached's `cfd`); -1 when there is none.
    let fd: Int32

    var store: Store { context.store }
    var watch: WatchHub { context.watch }

    init(context: ServerContext, counters: CounterBlock, timed: Bool, fd: Int32 = -1) {
        self.context = context
        self.counters = counters
        self.timed = timed
        self.fd = fd
    }

    enum Next: Equatable {
        case proceed, close
        /// A multi-get stopped before key `nextKey` because its replies reached the
        /// per-connection output limit; `resumeGet` continues it once the client has read.
        case paused(nextKey: Int)
        /// The connection's socket now belongs to someone else (a `watch` took a duplicate):
        /// close the descriptor without shutting the socket down.
        case handedOff
    }

    /// Continues a multi-get paused by `.paused(nextKey:)`; `buf` is the same request bytes.
    func resumeGet(_ cmd: Command, in buf: UnsafeRawBufferPointer, from: Int, out: inout OutputQueue) -> Next {
        guard case .get(let keys, let withCas, let touch) = cmd else { return .proceed }
        return runGet(keys, withCas, touch, buf, &out, from: from)
    }

    /// Looks up keys `from...` of a get, appending a VALUE block per hit and END after the last
    /// key. Stops early (no END yet) when the queued replies pass the connection's output limit
    /// and keys remain, so a multi-get never pins more than about the limit plus one item.
    private func runGet(_ keys: KeyList, _ withCas: Bool, _ touch: Int32?, _ buf: UnsafeRawBufferPointer,
                        _ out: inout OutputQueue, from: Int) -> Next {
        let family: CommandFamily = touch == nil ? (withCas ? .gets : .get) : (withCas ? .gats : .gat)
        let n = keys.count
        var i = from
        while i < n {
            let key = UnsafeRawBufferPointer(rebasing: buf[keys[i]])
            i += 1
            let status: ReadStatus
            var fetchedSize = 0
            // The reply is written inside the read callback, under the shard's read lock: a
            // value in a segment is copied into the output there. (Closure literals, not a
            // local function passed as a value: that boxed `fetchedSize` on the heap, one
            // allocation per key.)
            if let exptime = touch {
                status = store.readAndTouch(key, exptime: exptime) { item in
                    fetchedSize = Dispatcher.appendValue(item, key: key, withCas: withCas, to: &out)
                }
                counters.add(.cmdTouch)
            } else {
                status = store.read(key) { item in
                    fetchedSize = Dispatcher.appendValue(item, key: key, withCas: withCas, to: &out)
                }
                counters.add(.cmdGet)
            }
            if watch.wants(.fetchers) { watch.fetch(key, found: status == .hit, size: fetchedSize, fd: fd) }
            switch status {
            case .hit:
                counters.add(touch == nil ? .getHits : .gatHits)
                counters.add(family, .hit)
                if i < n && out.queuedBytes > Connection.outputHighWater { return .paused(nextKey: i) }
            case .miss:
                counters.add(touch == nil ? .getMisses : .gatMisses)
                counters.add(family, .miss)
            case .expired:
                counters.add(touch == nil ? .getMisses : .gatMisses)
                counters.add(family, .miss)
                if touch == nil { counters.add(.getExpired) }
            }
        }
        reply(.end, &out)
        return .proceed
    }

    /// Appends one VALUE reply (header, data block) for a found item; returns the value's size.
    @inline(__always)
    private static func appendValue(_ item: borrowing FoundItem, key: UnsafeRawBufferPointer, withCas: Bool,
                                    to out: inout OutputQueue) -> Int {
        ReplyEncoder.appendValueHeader(key: key, flags: item.flags, length: item.valueCount,
                                       cas: withCas ? item.cas : nil, to: out.text)
        out.appendData(of: item)
        return item.valueCount
    }

    /// Runs `cmd`, whose ranges point into `buf`, appending its reply to `out`. Also returns
    /// the command's latency group, computed where the command is matched anyway.
    @inline(__always)
    func execute(_ cmd: Command, in buf: UnsafeRawBufferPointer, out: inout OutputQueue) -> (Next, LatencyGroup) {
        let g = group(cmd)
        return (run(cmd, buf, &out), g)
    }

    private func run(_ cmd: Command, _ buf: UnsafeRawBufferPointer, _ out: inout OutputQueue) -> Next {
        switch cmd {
        case .get(let keys, let withCas, let touch):
            return runGet(keys, withCas, touch, buf, &out, from: 0)

        case .store(let req):
            counters.add(.cmdSet)
            let outcome = store.store(operation(req.mode), key: UnsafeRawBufferPointer(rebasing: buf[req.key]),
                                      flags: req.flags, exptime: req.exptime,
                                      value: UnsafeRawBufferPointer(rebasing: buf[req.data]),
                                      casUnique: req.casUnique)
            let family = req.mode.family
            let r: Reply
            switch outcome {
            case .stored:
                r = .stored
                counters.add(family, req.mode == .cas ? .hit : .stored)
                if req.mode == .cas { counters.add(.casHits) }
            case .notStored:
                r = .notStored
                counters.add(family, .notStored)
            case .exists:
                r = .exists
                counters.add(.casBadval)
                counters.add(family, .badval)
            case .notFound:
                r = .notFound
                counters.add(.casMisses)
                counters.add(family, .miss)
            case .outOfMemory:
                r = .outOfMemory
                counters.add(.storeNoMemory)
                counters.add(family, .error)
                // A set that could not be stored has already unlinked the old value in the
                // store (memcached's rule), so the client never reads what it tried to replace.
            }
            if watch.wants(.mutations) {
                watch.store(UnsafeRawBufferPointer(rebasing: buf[req.key]), status: storeStatus(outcome),
                            command: storeCommand(req.mode), ttl: req.exptime, size: req.data.count, fd: fd)
            }
            if !req.noreply { reply(r, &out) }

        case .storeTooLarge(let mode, let key, let noreply):
            counters.add(.storeTooLarge)
            if watch.wants(.mutations) {
                watch.store(UnsafeRawBufferPointer(rebasing: buf[key]), status: "too_large", command: storeCommand(mode),
                            ttl: 0, size: 0, fd: fd)
            }
            counters.add(mode.family, .error)
            if mode == .set { _ = store.delete(UnsafeRawBufferPointer(rebasing: buf[key])) }
            if !noreply { reply(.tooLarge, &out) }

        case .delete(let key, let noreply):
            let outcome = store.delete(UnsafeRawBufferPointer(rebasing: buf[key]))
            switch outcome {
            case .deleted:
                counters.add(.deleteHits)
                counters.add(.delete, .hit)
            case .notFound:
                counters.add(.deleteMisses)
                counters.add(.delete, .miss)
            case .expired:
                counters.add(.deleteExpired)
                counters.add(.delete, .miss)
            }
            if watch.wants(.deletions) {
                watch.delete(UnsafeRawBufferPointer(rebasing: buf[key]),
                             outcome: outcome == .deleted ? "deleted" : outcome == .expired ? "expired" : "not_found",
                             command: "delete", fd: fd)
            }
            if !noreply { reply(outcome == .deleted ? .deleted : .notFound, &out) }

        case .arithmetic(let incr, let key, let delta, let noreply):
            let r = store.arithmetic(UnsafeRawBufferPointer(rebasing: buf[key]), incr: incr, delta: delta)
            let family: CommandFamily = incr ? .incr : .decr
            let reply: Reply
            switch r {
            case .value(let v):
                counters.add(incr ? .incrHits : .decrHits)
                counters.add(family, .hit)
                reply = .number(v)
            case .notFound:
                counters.add(incr ? .incrMisses : .decrMisses)
                counters.add(family, .miss)
                reply = .notFound
            case .nonNumeric:
                counters.add(.protocolErrors)
                counters.add(family, .error)
                reply = .nonNumeric
            case .outOfMemory:
                counters.add(.storeNoMemory)
                counters.add(family, .error)
                reply = .outOfMemory
            }
            if !noreply { self.reply(reply, &out) }

        case .touch(let key, let exptime, let noreply):
            counters.add(.cmdTouch)
            let ok = store.touch(UnsafeRawBufferPointer(rebasing: buf[key]), exptime: exptime)
            counters.add(ok ? .touchHits : .touchMisses)
            counters.add(.touch, ok ? .hit : .miss)
            if !noreply { reply(ok ? .touched : .notFound, &out) }

        case .flushAll(let delay, let noreply):
            counters.add(.cmdFlush)
            counters.add(.flush_all, .ok)
            store.flushAll(delay: delay)
            if !noreply { reply(.ok, &out) }

        case .verbosity(let level, let noreply):
            counters.add(.verbosity, .ok)
            context.verbosity.store(Int(min(level, 2)), ordering: .relaxed)
            if !noreply { reply(.ok, &out) }

        case .version:
            counters.add(.version, .ok)
            ReplyEncoder.appendVersion(larderVersion, to: out.text)

        case .quit:
            counters.add(.quit, .ok)
            return .close

        case .stats(let group):
            counters.add(.stats, .ok)
            StatsReport.render(group, context: context, to: out.text)

        case .meta(let r):
            runMeta(r, buf, &out)

        case .admin(let a):
            return runAdmin(a, &out)

        case .invalid(let error, let family, let noreply):
            counters.add(.protocolErrors)
            counters.add(family, .error)
            if family == .delete || family == .md { counters.add(.deleteBadRequest) }
            if !noreply { reply(.error(error), &out) }
        }
        return .proceed
    }

    @inline(__always)
    private func reply(_ r: Reply, _ out: inout OutputQueue) {
        ReplyEncoder.append(r, to: out.text)
    }

    @inline(__always)
    func group(_ cmd: borrowing Command) -> LatencyGroup {
        switch cmd {
        case .get: .get
        case .store, .storeTooLarge: .set
        case .delete: .delete
        case .arithmetic: .incrDecr
        case .meta(let r):
            switch r.verb {
            case .get: .get
            case .set: .set
            case .delete: .delete
            case .arithmetic: .incrDecr
            case .noop, .debug: .other
            }
        case .invalid(_, let f, _):
            switch f {
            case .get, .gets, .gat, .gats, .mg: .get
            case .set, .add, .replace, .append, .prepend, .cas, .ms: .set
            case .delete, .md: .delete
            case .incr, .decr, .ma: .incrDecr
            default: .other
            }
        default: .other
        }
    }


    /// memcached's `status=` word of a store log line.
    func storeStatus(_ o: StoreOutcome) -> StaticString {
        switch o {
        case .stored: "stored"
        case .notStored: "not_stored"
        case .exists: "exists"
        case .notFound: "not_found"
        case .outOfMemory: "no_memory"
        }
    }

    /// memcached's `cmd=` word of a store log line.
    func storeCommand(_ m: StoreMode) -> StaticString {
        switch m {
        case .set: "set"
        case .add: "add"
        case .replace: "replace"
        case .append: "append"
        case .prepend: "prepend"
        case .cas: "cas"
        }
    }

    /// The store's operation for a protocol storage mode (the store does not depend on the
    /// protocol module, so the two enums are mapped case by case).
    @inline(__always)
    private func operation(_ m: StoreMode) -> StoreOperation {
        switch m {
        case .set: .set
        case .add: .add
        case .replace: .replace
        case .append: .append
        case .prepend: .prepend
        case .cas: .cas
        }
    }
}

@inline(__always) func monotonicNanos() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
}
