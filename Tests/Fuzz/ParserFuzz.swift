// libFuzzer target for the protocol parser (built by scripts/fuzz together with the
// LarderProtocol sources). For every input it checks, beyond "no crash":
// - each parse makes progress and never claims more bytes than it was given;
// - every key and data range of a command lies inside the bytes the command consumed;
// - feeding the same bytes one at a time yields the same commands as feeding them whole;
// - every reply the commands lead to can be encoded.

@_cdecl("LLVMFuzzerTestOneInput")
public func larderParserFuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let input = UnsafeRawBufferPointer(start: data, count: size)
    let limits = ProtocolLimits(maxItemSize: 2048, maxMultigetLine: 8192)
    let whole = fuzzParse([input], limits: limits)
    if size <= 512 {
        var pieces: [UnsafeRawBufferPointer] = []
        for i in 0..<size { pieces.append(UnsafeRawBufferPointer(rebasing: input[i..<(i + 1)])) }
        let single = fuzzParse(pieces, limits: limits)
        if single != whole {
            fatalError("byte-at-a-time parse differs: \(single) vs \(whole)")
        }
    }
    return 0
}

/// Parses the chunks as a connection would; returns a description of each outcome.
func fuzzParse(_ chunks: [UnsafeRawBufferPointer], limits: ProtocolLimits) -> [String] {
    var parser = Parser(limits: limits)
    var buffer: [UInt8] = []
    var out: [String] = []
    let sink = ByteSink(capacity: 256)
    for chunk in chunks {
        buffer.append(contentsOf: chunk)
        var progress = true
        while progress && !buffer.isEmpty {
            progress = false
            let result = buffer.withUnsafeBytes { parser.parse($0) }
            switch result {
            case .command(let c, let consumed):
                precondition(consumed > 0 && consumed <= buffer.count, "bad consumed \(consumed)")
                buffer.withUnsafeBytes { b in
                    out.append(describe(c, b, consumed: consumed))
                    encodeSomething(c, sink)
                }
                buffer.removeFirst(consumed)
                progress = true
            case .skipped(let n):
                precondition(n > 0 && n <= buffer.count, "bad skip \(n)")
                out.append("skip")
                buffer.removeFirst(n)
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

func describe(_ c: Command, _ b: UnsafeRawBufferPointer, consumed: Int) -> String {
    func check(_ r: Range<Int>) -> String {
        precondition(r.lowerBound >= 0 && r.upperBound <= consumed, "range \(r) outside \(consumed)")
        return String(decoding: b[r], as: UTF8.self)
    }
    switch c {
    case .get(let keys, let cas, let touch): return "get \(cas) \(String(describing: touch)) " + keys.map(check).joined(separator: ",")
    case .store(let r):
        precondition(r.key.count <= ProtocolLimits.maxKeyLength)
        return "store \(r.mode) \(check(r.key)) \(r.flags) \(r.exptime) \(check(r.data).count) \(r.casUnique) \(r.noreply)"
    case .storeTooLarge(let m, let k, let nr): return "toolarge \(m) \(check(k)) \(nr)"
    case .delete(let k, let nr): return "delete \(check(k)) \(nr)"
    case .arithmetic(let i, let k, let d, let nr): return "arith \(i) \(check(k)) \(d) \(nr)"
    case .touch(let k, let e, let nr): return "touch \(check(k)) \(e) \(nr)"
    default: return "\(c)"
    }
}

func encodeSomething(_ c: Command, _ sink: ByteSink) {
    sink.reset()
    switch c {
    case .invalid(let e, _, _): ReplyEncoder.append(.error(e), to: sink)
    case .arithmetic(_, _, let d, _): ReplyEncoder.append(.number(d), to: sink)
    default: ReplyEncoder.append(.stored, to: sink)
    }
}
