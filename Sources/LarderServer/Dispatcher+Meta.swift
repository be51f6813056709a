// Runs memcached's meta commands (`mg ms md ma mn me`) against the store and writes their
// replies byte for byte as memcached 1.6.18 does: the return code, then the reply flags in
// the order the request gave them, then `Z`, `X`, `W` for mg; `q` suppresses only the
// nominal code of each command (EN for mg; HD for ms and md; HD/VA for ma), never an error.
// Counting follows memcached: mg counts as a get (a touch with T), ms as a set, md as a
// delete, ma as an incr/decr.
import LarderMetrics
import LarderProtocol
import LarderStore

extension Dispatcher {
    func runMeta(_ r: MetaRequest, _ buf: UnsafeRawBufferPointer, _ out: inout OutputQueue) {
        switch r.verb {
        case .noop:
            counters.add(.mn, .ok)
            out.text.append("MN")
            out.text.appendCRLF()
        case .debug: metaDebug(r, buf, &out)
        case .get: metaGet(r, buf, &out)
        case .set: metaSet(r, buf, &out)
        case .delete: metaDelete(r, buf, &out)
        case .arithmetic: metaArithmetic(r, buf, &out)
        }
    }

    // MARK: - Reply pieces

    /// ` k<key>`, base64 with ` b` after it when the key is binary.
    private func appendKey(_ key: UnsafeRawBufferPointer, binary: Bool, to o: ByteSink) {
        o.append(" k")
        if binary {
            base64Encode(key, to: o)
            o.append(" b")
        } else {
            o.append(key)
        }
    }

    /// ` t<remaining>` (memcached prints -1 for no exptime, else the unsigned difference).
    private func appendTTL(_ exptime: Int64, now: Int64, to o: ByteSink) {
        o.append(" t")
        if exptime == 0 {
            o.append("-1")
        } else {
            o.appendDecimal(UInt64(UInt32(truncatingIfNeeded: exptime - now)))
        }
    }

    /// The opaque and key flags of a reply that has no item (EN, NF, EX, NS).
    private func appendOpaqueAndKey(_ r: MetaRequest, _ buf: UnsafeRawBufferPointer, to o: ByteSink) {
        for t in r.flagTokens {
            switch buf[t.lowerBound] {
            case UInt8(ascii: "O"):
                o.append(0x20)
                o.append(UnsafeRawBufferPointer(rebasing: buf[t]))
            case UInt8(ascii: "k"):
                r.withKey(buf) { appendKey($0, binary: r.flags.base64, to: o) }
            default: break
            }
        }
    }

    // MARK: - mg

    private func metaGet(_ r: MetaRequest, _ buf: UnsafeRawBufferPointer, _ out: inout OutputQueue) {
        let f = r.flags
        var options = MetaGetOptions(noUpdate: f.noUpdate)
        if f.vivify { options.vivifyTTL = f.vivifyTTL }
        if f.hasTTL { options.touchTTL = f.ttl }
        if f.recache {
            options.recacheTTL = f.recacheTTL
            var sawT = false
            for t in r.flagTokens {
                let c = buf[t.lowerBound]
                if c == UInt8(ascii: "T") { sawT = true }
                if c == UInt8(ascii: "R") { options.recacheAfterTouch = sawT; break }
            }
        }
        let now = store.clock.now()
        var fetchedSize = 0
        let status: ReadStatus = r.withKey(buf) { key in
            let st = store.metaGet(key, options: options) { item, state in
                fetchedSize = item.valueCount
                let o = out.text
                if f.wantsValue {
                    o.append("VA ")
                    o.appendDecimal(UInt64(item.valueCount))
                } else {
                    o.append("HD")
                }
                var exptime = state.created ? 0 : state.exptimeBefore
                for t in r.flagTokens {
                    switch buf[t.lowerBound] {
                    case UInt8(ascii: "T"): exptime = state.touchDeadline
                    case UInt8(ascii: "N"): if state.created { exptime = state.vivifyDeadline }
                    case UInt8(ascii: "s"):
                        o.append(" s")
                        o.appendDecimal(UInt64(item.valueCount))
                    case UInt8(ascii: "t"): appendTTL(exptime, now: now, to: o)
                    case UInt8(ascii: "c"):
                        o.append(" c")
                        o.appendDecimal(item.cas)
                    case UInt8(ascii: "f"):
                        o.append(" f")
                        o.appendDecimal(UInt64(item.flags))
                    case UInt8(ascii: "l"):
                        o.append(" l")
                        o.appendDecimal(UInt64(max(0, state.lastAccessAge)))
                    case UInt8(ascii: "h"):
                        o.append(state.fetchedBefore ? " h1" : " h0")
                    case UInt8(ascii: "O"):
                        o.append(0x20)
                        o.append(UnsafeRawBufferPointer(rebasing: buf[t]))
                    case UInt8(ascii: "k"):
                        appendKey(key, binary: state.binaryKey, to: o)
                    default: break
                    }
                }
                if state.tokenSentBefore { o.append(" Z") }
                if state.stale { o.append(" X") }
                if state.won { o.append(" W") }
                o.appendCRLF()
                if f.wantsValue { out.appendData(of: item) }
            }
            if watch.wants(.fetchers) { watch.fetch(key, found: st == .hit, size: fetchedSize, fd: fd) }
            return st
        }
        let touched = f.hasTTL
        counters.add(touched ? .cmdTouch : .cmdGet)
        switch status {
        case .hit:
            counters.add(touched ? .touchHits : .getHits)
            counters.add(.mg, .hit)
        case .miss, .expired:
            counters.add(touched ? .touchMisses : .getMisses)
            if status == .expired && !touched { counters.add(.getExpired) }
            counters.add(.mg, .miss)
            if !f.quiet {
                out.text.append("EN")
                appendOpaqueAndKey(r, buf, to: out.text)
                out.text.appendCRLF()
            }
        }
    }

    // MARK: - ms

    private func metaSet(_ r: MetaRequest, _ buf: UnsafeRawBufferPointer, _ out: inout OutputQueue) {
        let f = r.flags
        counters.add(.cmdSet)
        if r.tooLarge {
            counters.add(.storeTooLarge)
            counters.add(.ms, .error)
            r.withKey(buf) { store.metaUnlink($0) }
            ReplyEncoder.append(.tooLarge, to: out.text)
            return
        }
        var mode: MetaStoreMode
        switch f.mode {
        case UInt8(ascii: "E"): mode = .add
        case UInt8(ascii: "A"): mode = .append
        case UInt8(ascii: "P"): mode = .prepend
        case UInt8(ascii: "R"): mode = .replace
        default: mode = .set
        }
        // memcached upgrades set and replace to cas when a cas is given.
        if f.hasCas && (mode == .set || mode == .replace) { mode = .cas }
        let result = r.withKey(buf) { key in
            let res = store.metaStore(mode, key: key, flags: f.clientFlags, exptime: f.hasTTL ? f.ttl : 0,
                                      value: UnsafeRawBufferPointer(rebasing: buf[r.data]), cas: f.cas,
                                      invalidate: f.invalidate, binaryKey: f.base64)
            if watch.wants(.mutations) {
                watch.store(key, status: storeStatus(res.outcome), command: metaCommand(mode), ttl: f.hasTTL ? f.ttl : 0,
                            size: r.data.count, fd: fd)
            }
            return res
        }
        let o = out.text
        switch result.outcome {
        case .stored:
            counters.add(.ms, .stored)
            if mode == .cas { counters.add(.casHits) }
            if f.quiet { return }
            o.append("HD")
        case .notStored:
            counters.add(.ms, .notStored)
            o.append("NS")
        case .exists:
            counters.add(.ms, .badval)
            if mode == .cas { counters.add(.casBadval) }
            o.append("EX")
        case .notFound:
            counters.add(.ms, .miss)
            counters.add(.casMisses)
            o.append("NF")
        case .outOfMemory:
            counters.add(.storeNoMemory)
            counters.add(.ms, .error)
            ReplyEncoder.append(.outOfMemory, to: o)
            return
        }
        for t in r.flagTokens {
            switch buf[t.lowerBound] {
            case UInt8(ascii: "O"):
                o.append(0x20)
                o.append(UnsafeRawBufferPointer(rebasing: buf[t]))
            case UInt8(ascii: "k"):
                r.withKey(buf) { appendKey($0, binary: f.base64, to: o) }
            case UInt8(ascii: "c"):
                o.append(" c")
                o.appendDecimal(result.cas)
            default: break
            }
        }
        o.appendCRLF()
    }

    private func metaCommand(_ m: MetaStoreMode) -> StaticString {
        switch m {
        case .set: "set"
        case .add: "add"
        case .replace: "replace"
        case .append: "append"
        case .prepend: "prepend"
        case .cas: "cas"
        }
    }

    // MARK: - md

    private func metaDelete(_ r: MetaRequest, _ buf: UnsafeRawBufferPointer, _ out: inout OutputQueue) {
        let f = r.flags
        let outcome = r.withKey(buf) { key in
            let o = store.metaDelete(key, cas: f.hasCas ? f.cas : nil, invalidate: f.invalidate, ttl: f.hasTTL ? f.ttl : nil)
            if watch.wants(.deletions) {
                let word: StaticString
                switch o {
                case .deleted: word = "deleted"
                case .notFound: word = "not_found"
                case .exists: word = "cas_mismatch"
                case .invalidated: word = "invalidated"
                }
                watch.delete(key, outcome: word, command: "md", fd: fd)
            }
            return o
        }
        let o = out.text
        switch outcome {
        case .deleted, .invalidated:
            if outcome == .deleted {
                counters.add(.deleteHits)
            } else {
                counters.add(.deleteInvalidated)
            }
            counters.add(.md, .hit)
            if f.quiet { return }
            o.append("HD")
        case .notFound:
            counters.add(.deleteMisses)
            counters.add(.md, .miss)
            o.append("NF")
        case .exists:
            counters.add(.deleteCasMismatch)
            counters.add(.md, .badval)
            o.append("EX")
        }
        appendOpaqueAndKey(r, buf, to: o)
        o.appendCRLF()
    }

    // MARK: - ma

    private func metaArithmetic(_ r: MetaRequest, _ buf: UnsafeRawBufferPointer, _ out: inout OutputQueue) {
        let f = r.flags
        let incr = !(f.mode == UInt8(ascii: "D") || f.mode == UInt8(ascii: "-"))
        var touchAfterVivify = false
        var sawN = false
        for t in r.flagTokens {
            let c = buf[t.lowerBound]
            if c == UInt8(ascii: "N") { sawN = true }
            if c == UInt8(ascii: "T") { touchAfterVivify = sawN }
        }
        let outcome = r.withKey(buf) { key in
            store.metaArithmetic(key, incr: incr, delta: f.delta, cas: f.cas, initial: f.initial,
                                 vivifyTTL: f.vivify ? f.vivifyTTL : nil, touchTTL: f.hasTTL ? f.ttl : nil,
                                 touchAfterVivify: touchAfterVivify)
        }
        let o = out.text
        switch outcome {
        case .value(let v, let cas, let before, let touchDeadline, let vivifyDeadline, let created):
            if !created { counters.add(incr ? .incrHits : .decrHits) }
            counters.add(.ma, .hit)
            // memcached suppresses only the reply to an update; a vivified item is answered.
            if f.quiet && !created { return }
            var digits: [UInt8] = []
            var x = v
            repeat {
                digits.append(0x30 + UInt8(x % 10))
                x /= 10
            } while x > 0
            digits.reverse()
            if f.wantsValue {
                o.append("VA ")
                o.appendDecimal(UInt64(digits.count))
            } else {
                o.append("HD")
            }
            let now = store.clock.now()
            var exptime = before
            for t in r.flagTokens {
                switch buf[t.lowerBound] {
                case UInt8(ascii: "c"):
                    o.append(" c")
                    o.appendDecimal(cas)
                case UInt8(ascii: "t"): appendTTL(exptime, now: now, to: o)
                case UInt8(ascii: "T"): exptime = touchDeadline
                case UInt8(ascii: "N"): if created { exptime = vivifyDeadline }
                case UInt8(ascii: "O"):
                    o.append(0x20)
                    o.append(UnsafeRawBufferPointer(rebasing: buf[t]))
                case UInt8(ascii: "k"):
                    r.withKey(buf) { appendKey($0, binary: f.base64, to: o) }
                default: break
                }
            }
            o.appendCRLF()
            if f.wantsValue {
                digits.withUnsafeBytes { o.append($0) }
                o.appendCRLF()
            }
        case .notFound:
            counters.add(incr ? .incrMisses : .decrMisses)
            counters.add(.ma, .miss)
            o.append("NF")
            appendOpaqueAndKey(r, buf, to: o)
            o.appendCRLF()
        case .exists:
            counters.add(.ma, .badval)
            o.append("EX")
            appendOpaqueAndKey(r, buf, to: o)
            o.appendCRLF()
        case .nonNumeric:
            counters.add(.protocolErrors)
            counters.add(.ma, .error)
            ReplyEncoder.append(.nonNumeric, to: o)
        case .outOfMemory:
            counters.add(.storeNoMemory)
            counters.add(.ma, .error)
            o.append("SERVER_ERROR out of memory")
            o.appendCRLF()
        }
    }

    // MARK: - me

    private func metaDebug(_ r: MetaRequest, _ buf: UnsafeRawBufferPointer, _ out: inout OutputQueue) {
        counters.add(.me, .ok)
        let o = out.text
        let now = store.clock.now()
        r.withKey(buf) { key in
            guard let info = store.metaDebug(key) else {
                o.append("EN")
                o.appendCRLF()
                return
            }
            o.append("ME ")
            if info.binaryKey { base64Encode(key, to: o) } else { o.append(key) }
            o.append(" exp=")
            o.append(info.exptime == 0 ? "-1" : String(Int32(truncatingIfNeeded: now - info.exptime)))
            o.append(" la=")
            o.appendDecimal(UInt64(max(0, info.lastAccessAge)))
            o.append(" cas=")
            o.appendDecimal(info.cas)
            o.append(info.fetched ? " fetch=yes" : " fetch=no")
            o.append(" cls=1 size=")
            o.appendDecimal(UInt64(info.size))
            o.appendCRLF()
        }
    }
}
