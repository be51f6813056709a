// libFuzzer target for the protocol parser (built by scripts/fuzz together with the
// LarderProtocol sources). For every input it checks, beyond "no crash":
// - each parse makes progress and never claims more bytes than it was given;
// - every key and data range of a command lies inside the bytes the command consumed;
// - feeding the same bytes one at a time yields the same commands as feeding them whole;
// - every reply the commands lead to can be encoded;
// - the authentication reader (-Y) makes progress, keeps credentials inside the block it
//   consumed, and answers the same fed whole or one byte at a time.

@_cdecl("LLVMFuzzerTestOneInput")
public func larderParserFuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let input = UnsafeRawBufferPointer(start: data, count: size)
    let limits = ProtocolLimits(maxItemSize: 2048, maxMultigetLine: 8192)
    let whole = fuzzParse([input], limits: limits)
    if size <= 96 {
        var pieces: [UnsafeRawBufferPointer] = []
        for i in 0..<size { pieces.append(UnsafeRawBufferPointer(rebasing: input[i..<(i + 1)])) }
        // Swallowed data comes out in as many skips as there were reads; compare the rest.
        let single = fuzzParse(pieces, limits: limits).filter { $0 != "skip" }
        if single != whole.filter({ $0 != "skip" }) {
            fatalError("byte-at-a-time parse differs: \(single) vs \(whole)")
        }
    }
    // The authentication reader (-Y) gets the same input: same checks.
    let authWhole = fuzzAuth([input])
    if size <= 96 {
        let pieces = (0..<size).map { UnsafeRawBufferPointer(rebasing: input[$0..<($0 + 1)]) }
        let single = fuzzAuth(pieces)
        if single != authWhole { fatalError("byte-at-a-time auth parse differs: \(single) vs \(authWhole)") }
    }
    return 0
}

/// Runs the authentication reader over the chunks as a connection would (a good credential
/// is "u p"); returns what happened at each step with an effect.
func fuzzAuth(_ chunks: [UnsafeRawBufferPointer]) -> [String] {
    var parser: AuthParser? = AuthParser()
    var buffer: [UInt8] = []
    var out: [String] = []
    for chunk in chunks {
        buffer.append(contentsOf: chunk)
        while let p = parser, !buffer.isEmpty {
            var reader = p
            let step = buffer.withUnsafeBytes { reader.parse($0) }
            parser = reader
            func take(_ n: Int) {
                precondition(n > 0 && n <= buffer.count, "bad consumed \(n)")
                buffer.removeFirst(n)
            }
            switch step {
            case .needMore:
                break
            case .line(let n):
                take(n)
                continue
            case .refuse(let e, let n):
                out.append("refuse \(e)")
                take(n)
                continue
            case .credentials(let u, let pw, let n):
                precondition(u.upperBound <= n && pw.upperBound <= n && !u.isEmpty && !pw.isEmpty, "credentials outside the block")
                let ok = Array(buffer[u]) == [0x75] && Array(buffer[pw]) == [0x70]
                out.append(ok ? "stored" : "failure")
                take(n)
                if ok { parser = nil }
                continue
            case .close:
                out.append("close")
                parser = nil
            }
            break
        }
        if parser == nil { break }
    }
    return out
}

/// Parses the chunks as a connection would; returns a description of each outcome.
func fuzzParse(_ chunks: [UnsafeRawBufferPointer], limits: ProtocolLimits) -> [String] {
    var parser = Parser(limits: limits)
    // Unread bytes are buffer[start...]; consumed bytes are dropped only when a chunk arrives.
    var buffer: [UInt8] = []
    var start = 0
    var out: [String] = []
    let sink = ByteSink(capacity: 256)
    for chunk in chunks {
        if start > 0 {
            buffer.removeFirst(start)
            start = 0
        }
        buffer.append(contentsOf: chunk)
        var progress = true
        while progress && start < buffer.count {
            progress = false
            let avail = buffer.count - start
            let result = buffer.withUnsafeBytes { parser.parse(UnsafeRawBufferPointer(rebasing: $0[start...])) }
            switch result {
            case .command(let c, let consumed):
                precondition(consumed > 0 && consumed <= avail, "bad consumed \(consumed)")
                buffer.withUnsafeBytes { all in
                    let b = UnsafeRawBufferPointer(rebasing: all[start...])
                    out.append(describe(c, b, consumed: consumed))
                    encodeSomething(c, sink)
                }
                start += consumed
                progress = true
            case .skipped(let n):
                precondition(n > 0 && n <= avail, "bad skip \(n)")
                out.append("skip")
                start += n
                progress = true
            case .needMore:
                break
            case .close:
                out.append("close")
                return out
            }
        }
    }
    return out
}

/// A cheap fingerprint of a command and the bytes it refers to (checked to lie in range).
func describe(_ c: Command, _ b: UnsafeRawBufferPointer, consumed: Int) -> String {
    var h: UInt64 = 1469598103934665603
    func mix(_ v: UInt64) { h = (h ^ v) &* 1099511628211 }
    func bytes(_ r: Range<Int>) {
        precondition(r.lowerBound >= 0 && r.upperBound <= consumed, "range outside the request")
        mix(UInt64(r.count))
        for i in r { mix(UInt64(b[i])) }
    }
    switch c {
    case .get(let keys, let cas, let touch):
        mix(1); mix(cas ? 1 : 0); mix(UInt64(bitPattern: Int64(touch ?? -99)))
        for k in keys { precondition(k.count <= ProtocolLimits.maxKeyLength); bytes(k) }
    case .store(let r):
        precondition(r.key.count <= ProtocolLimits.maxKeyLength)
        mix(2); mix(UInt64(r.mode.rawValue)); bytes(r.key); bytes(r.data)
        mix(UInt64(r.flags)); mix(UInt64(bitPattern: Int64(r.exptime))); mix(r.casUnique); mix(r.noreply ? 1 : 0)
    case .storeTooLarge(let m, let k, let nr): mix(3); mix(UInt64(m.rawValue)); bytes(k); mix(nr ? 1 : 0)
    case .delete(let k, let nr): mix(4); bytes(k); mix(nr ? 1 : 0)
    case .arithmetic(let i, let k, let d, let nr): mix(5); mix(i ? 1 : 0); bytes(k); mix(d); mix(nr ? 1 : 0)
    case .touch(let k, let e, let nr): mix(6); bytes(k); mix(UInt64(bitPattern: Int64(e))); mix(nr ? 1 : 0)
    case .flushAll(let d, let nr): mix(7); mix(UInt64(bitPattern: Int64(d))); mix(nr ? 1 : 0)
    case .verbosity(let l, let nr): mix(8); mix(UInt64(l)); mix(nr ? 1 : 0)
    case .version: mix(9)
    case .quit: mix(10)
    case .stats: mix(11)
    case .invalid(let e, let f, let nr): mix(12); mix(UInt64(f.ordinal)); mix(nr ? 1 : 0)
        mix(UInt64(ReplyEncoder.errorLine(e).utf8CodeUnitCount))
    case .meta(let r):
        precondition(r.keyToken.count <= ProtocolLimits.maxKeyLength)
        mix(13); mix(UInt64(r.verb.rawValue)); bytes(r.keyToken); bytes(r.data)
        for t in r.flagTokens { bytes(t) }
        mix(r.flags.seenLow); mix(r.flags.seenHigh); mix(r.tooLarge ? 1 : 0)
        for k in r.decodedKey ?? [] { mix(UInt64(k)) }
    case .admin(let a): mix(14); mix(UInt64(String(describing: a).utf8.count))
    }
    return String(h, radix: 16)
}

func encodeSomething(_ c: Command, _ sink: ByteSink) {
    sink.reset()
    switch c {
    case .invalid(let e, _, _): ReplyEncoder.append(.error(e), to: sink)
    case .arithmetic(_, _, let d, _): ReplyEncoder.append(.number(d), to: sink)
    default: ReplyEncoder.append(.stored, to: sink)
    }
}
