// Executes parsed commands against the store and encodes the replies into a connection's
// output queue, counting every outcome in the worker's counter block. It sees no socket; the
// connection calls it once per parsed request, in order.
import LarderProtocol
import LarderStore
#if canImport(Glibc)
import Glibc
#endif

struct Dispatcher {
    let context: ServerContext
    let counters: CounterBlock
    var store: Store { context.store }

    enum Next { case proceed, close }

    /// Runs `cmd`, whose ranges point into `buf`, appending its reply to `out`.
    func execute(_ cmd: Command, in buf: UnsafeRawBufferPointer, out: inout OutputQueue) -> Next {
        switch cmd {
        case .get(let keys, let withCas, let touch):
            for k in keys {
                let key = UnsafeRawBufferPointer(rebasing: buf[k])
                let lookup: Lookup
                if let exptime = touch {
                    lookup = store.getAndTouch(key, exptime: exptime)
                    counters.add(.cmdTouch)
                } else {
                    lookup = store.get(key)
                    counters.add(.cmdGet)
                }
                switch lookup {
                case .hit(let item):
                    counters.add(touch == nil ? .getHits : .touchHits)
                    ReplyEncoder.appendValueHeader(key: key, flags: item.flags, length: item.valueCount,
                                                   cas: withCas ? item.cas : nil, to: &out.text)
                    out.appendData(of: item)
                case .miss:
                    counters.add(touch == nil ? .getMisses : .touchMisses)
                case .expired:
                    counters.add(touch == nil ? .getMisses : .touchMisses)
                    if touch == nil { counters.add(.getExpired) }
                }
            }
            reply(.end, &out)

        case .store(let req):
            counters.add(.cmdSet)
            let outcome = store.store(operation(req.mode), key: UnsafeRawBufferPointer(rebasing: buf[req.key]),
                                      flags: req.flags, exptime: req.exptime,
                                      value: UnsafeRawBufferPointer(rebasing: buf[req.data]),
                                      casUnique: req.casUnique)
            countStore(req.mode, outcome)
            let r: Reply
            switch outcome {
            case .stored: r = .stored
            case .notStored: r = .notStored
            case .exists: r = .exists
            case .notFound: r = .notFound
            case .outOfMemory: r = .outOfMemory
            }
            if !req.noreply { reply(r, &out) }

        case .storeTooLarge(let mode, let key, let noreply):
            counters.add(.storeTooLarge)
            if mode == .set { _ = store.delete(UnsafeRawBufferPointer(rebasing: buf[key])) }
            if !noreply { reply(.tooLarge, &out) }

        case .delete(let key, let noreply):
            let deleted = store.delete(UnsafeRawBufferPointer(rebasing: buf[key]))
            counters.add(deleted ? .deleteHits : .deleteMisses)
            if !noreply { reply(deleted ? .deleted : .notFound, &out) }

        case .arithmetic(let incr, let key, let delta, let noreply):
            let r = store.arithmetic(UnsafeRawBufferPointer(rebasing: buf[key]), incr: incr, delta: delta)
            let reply: Reply
            switch r {
            case .value(let v):
                counters.add(incr ? .incrHits : .decrHits)
                reply = .number(v)
            case .notFound:
                counters.add(incr ? .incrMisses : .decrMisses)
                reply = .notFound
            case .nonNumeric:
                counters.add(.protocolErrors)
                reply = .nonNumeric
            case .outOfMemory:
                counters.add(.storeNoMemory)
                reply = .outOfMemory
            }
            if !noreply { self.reply(reply, &out) }

        case .touch(let key, let exptime, let noreply):
            counters.add(.cmdTouch)
            let ok = store.touch(UnsafeRawBufferPointer(rebasing: buf[key]), exptime: exptime)
            counters.add(ok ? .touchHits : .touchMisses)
            if !noreply { reply(ok ? .touched : .notFound, &out) }

        case .flushAll(let delay, let noreply):
            counters.add(.cmdFlush)
            store.flushAll(delay: delay)
            if !noreply { reply(.ok, &out) }

        case .verbosity(let level, let noreply):
            context.verbosity.store(Int(min(level, 2)), ordering: .relaxed)
            if !noreply { reply(.ok, &out) }

        case .version:
            ReplyEncoder.appendVersion(larderVersion, to: &out.text)

        case .quit:
            return .close

        case .stats(let group):
            StatsReport.render(group, context: context, to: &out.text)

        case .invalid(let error, let family, let noreply):
            counters.add(.protocolErrors)
            if family == .delete { counters.add(.deleteBadRequest) }
            if !noreply { reply(.error(error), &out) }
        }
        return .proceed
    }

    @inline(__always)
    private func reply(_ r: Reply, _ out: inout OutputQueue) {
        ReplyEncoder.append(r, to: &out.text)
    }

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

    private func countStore(_ mode: StoreMode, _ outcome: StoreOutcome) {
        if outcome == .outOfMemory { counters.add(.storeNoMemory); return }
        switch (mode, outcome) {
        case (.cas, .stored): counters.add(.casHits)
        case (.cas, .exists): counters.add(.casBadval)
        case (.cas, .notFound): counters.add(.casMisses)
        case (.set, .stored): counters.add(.setStored)
        case (.set, _): counters.add(.setNotStored)
        case (.add, .stored): counters.add(.addStored)
        case (.add, _): counters.add(.addNotStored)
        case (.replace, .stored): counters.add(.replaceStored)
        case (.replace, _): counters.add(.replaceNotStored)
        case (.append, .stored): counters.add(.appendStored)
        case (.append, _): counters.add(.appendNotStored)
        case (.prepend, .stored): counters.add(.prependStored)
        case (.prepend, _): counters.add(.prependNotStored)
        default: break
        }
    }
}
