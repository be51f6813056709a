// The meta commands of memcached 1.6.18 (`mg ms md ma mn me`): what a parsed meta request
// carries, and the parser's part of reading one. The checks run in memcached's order
// (token count, key length, number of flags, then each flag: duplicates, unknown flags, bad
// numbers, base64 keys), so a malformed request gets memcached's error string; errors are
// never suppressed by `q`. An `ms` whose line parsed far enough to know the value length has
// its data block swallowed after an error, as memcached does. Reply flags are written in
// request order by the server, so the flag tokens are kept in order.

/// Which meta command.
public enum MetaVerb: UInt8, Sendable, Equatable {
    case get, set, delete, arithmetic, noop, debug

    public var family: CommandFamily {
        switch self {
        case .get: .mg
        case .set: .ms
        case .delete: .md
        case .arithmetic: .ma
        case .noop: .mn
        case .debug: .me
        }
    }
}

/// The flags of a meta request, parsed. Presence of any flag letter is in `seen`.
public struct MetaFlags: Sendable, Equatable {
    /// One bit per flag byte below 128 (memcached's `seen[]`).
    public var seenLow: UInt64 = 0
    public var seenHigh: UInt64 = 0
    /// `T`: new exptime (memcached's exptime rules).
    public var ttl: Int32 = 0
    /// `N`: vivify on miss, with this exptime.
    public var vivifyTTL: Int32 = 0
    /// `R`: win a recache token when the remaining TTL is below this.
    public var recacheTTL: Int32 = 0
    /// `F`: client flags (ms).
    public var clientFlags: UInt32 = 0
    /// `C`: compare cas.
    public var cas: UInt64 = 0
    /// `M`: mode byte, 0 when absent.
    public var mode: UInt8 = 0
    /// `D`: delta (ma), default 1.
    public var delta: UInt64 = 1
    /// `J`: initial value on vivify (ma).
    public var initial: UInt64 = 0

    public init() {}

    @inline(__always)
    public func has(_ c: UInt8) -> Bool {
        c < 64 ? seenLow & (1 << UInt64(c)) != 0 : c < 128 ? seenHigh & (1 << UInt64(c - 64)) != 0 : false
    }

    @inline(__always)
    mutating func mark(_ c: UInt8) {
        if c < 64 { seenLow |= 1 << UInt64(c) } else { seenHigh |= 1 << UInt64(c - 64) }
    }

    public var quiet: Bool { has(UInt8(ascii: "q")) }
    public var base64: Bool { has(UInt8(ascii: "b")) }
    public var wantsValue: Bool { has(UInt8(ascii: "v")) }
    public var hasCas: Bool { has(UInt8(ascii: "C")) }
    public var invalidate: Bool { has(UInt8(ascii: "I")) }
    public var hasTTL: Bool { has(UInt8(ascii: "T")) }
    public var vivify: Bool { has(UInt8(ascii: "N")) }
    public var recache: Bool { has(UInt8(ascii: "R")) }
    public var noUpdate: Bool { has(UInt8(ascii: "u")) }
}

/// A parsed meta request. Ranges point into the buffer handed to `Parser.parse`.
public struct MetaRequest: Sendable, Equatable {
    public var verb: MetaVerb
    /// The key token as sent (base64 text when `b` is given).
    public var keyToken: Range<Int>
    /// The decoded key when `b` was given.
    public var decodedKey: [UInt8]?
    /// Flag tokens in request order (the reply lists its flags in this order).
    public var flagTokens: [Range<Int>]
    public var flags: MetaFlags
    /// ms: the value bytes (without `\r\n`).
    public var data: Range<Int>
    /// ms: the item would be over `-I`; the data block is being swallowed.
    public var tooLarge: Bool

    /// Calls `body` with the key bytes (decoded if `b` was given).
    @inline(__always)
    public func withKey<T>(_ buf: UnsafeRawBufferPointer, _ body: (UnsafeRawBufferPointer) throws -> T) rethrows -> T {
        if let k = decodedKey { return try k.withUnsafeBytes(body) }
        return try body(UnsafeRawBufferPointer(rebasing: buf[keyToken]))
    }
}

extension Parser {
    /// memcached's MFLAG_MAX_OPT_LENGTH: more tokens than this (terminal one included) are refused.
    static let metaMaxTokens = 20
    /// memcached's MFLAG_MAX_OPAQUE_LENGTH: an `O` token (the `O` included) may be this long.
    static let metaMaxOpaque = 32

    mutating func parseMeta(_ buf: UnsafeRawBufferPointer, ntokens: Int, lineConsumed: Int) -> ParseResult {
        let verb: MetaVerb
        switch buf[tokens[0].lowerBound + 1] {
        case UInt8(ascii: "g"): verb = .get
        case UInt8(ascii: "s"): verb = .set
        case UInt8(ascii: "d"): verb = .delete
        case UInt8(ascii: "a"): verb = .arithmetic
        case UInt8(ascii: "n"): verb = .noop
        case UInt8(ascii: "e"): verb = .debug
        default:
            pendingNeed = 0
            return .command(.invalid(.unknownCommand, command: .unknown, noreply: false), consumed: lineConsumed)
        }
        let family = verb.family
        func fail(_ e: ProtocolError, swallow: Int = 0) -> ParseResult {
            pendingNeed = 0
            swallowRemaining = swallow
            return .command(.invalid(e, command: family, noreply: false), consumed: lineConsumed)
        }
        func request(_ flagStart: Int) -> MetaRequest {
            MetaRequest(verb: verb, keyToken: tokens.count > 1 ? tokens[1] : 0..<0, decodedKey: nil,
                        flagTokens: tokens.count > flagStart ? Array(tokens[flagStart...]) : [],
                        flags: MetaFlags(), data: 0..<0, tooLarge: false)
        }
        if verb == .noop {
            pendingNeed = 0
            return .command(.meta(request(2)), consumed: lineConsumed)
        }
        if verb == .debug {
            // memcached's `me` has its own, simpler checks.
            if ntokens < 3 || tokens[1].count > ProtocolLimits.maxKeyLength { return fail(.badCommandLineFormat) }
            var r = request(2)
            r.flagTokens = []
            if ntokens >= 4 && equals(buf, tokens[2], "b") {
                guard let k = base64Decode(slice(buf, tokens[1])) else { return fail(.badCommandLineFormat) }
                r.decodedKey = k
                r.flags.mark(UInt8(ascii: "b"))
            }
            pendingNeed = 0
            return .command(.meta(r), consumed: lineConsumed)
        }
        if ntokens < 3 { return fail(.unknownCommand) }
        if tokens[1].count > ProtocolLimits.maxKeyLength { return fail(.badCommandLineFormat) }

        if verb == .set {
            if ntokens == 3 { return fail(.badCommandLineFormat) }
            if ntokens > Parser.metaMaxTokens { return fail(.metaFlagsTooLong) }
            guard let v = memcachedParseInt32(slice(buf, tokens[2])), v >= 0, v <= Int32.max - 2 else {
                return fail(.badCommandLineFormat)
            }
            let vlen = Int(v)
            var r = request(3)
            if let e = preparse(buf, from: 3, into: &r, defaultError: .badCommandLineFormat) {
                return fail(e, swallow: vlen + 2)
            }
            var deferred: ProtocolError? = nil
            for t in r.flagTokens where buf[t.lowerBound] == UInt8(ascii: "O") && t.count > Parser.metaMaxOpaque {
                deferred = .metaOpaqueTooLong
            }
            switch r.flags.mode {
            case 0, UInt8(ascii: "E"), UInt8(ascii: "A"), UInt8(ascii: "P"), UInt8(ascii: "R"), UInt8(ascii: "S"): break
            default: return fail(.metaSetMode, swallow: vlen + 2)
            }
            if let e = deferred { return fail(e, swallow: vlen + 2) }
            let keyCount = r.decodedKey?.count ?? r.keyToken.count
            if ProtocolLimits.itemTotalSize(keyLength: keyCount, flags: r.flags.clientFlags, valueLength: vlen) > limits.maxItemSize {
                pendingNeed = 0
                swallowRemaining = vlen + 2
                r.tooLarge = true
                return .command(.meta(r), consumed: lineConsumed)
            }
            let total = lineConsumed + vlen + 2
            if buf.count < total {
                pendingNeed = total
                return .needMore
            }
            pendingNeed = 0
            if buf[lineConsumed + vlen] != 0x0D || buf[lineConsumed + vlen + 1] != 0x0A {
                return .command(.invalid(.badDataChunk, command: family, noreply: false), consumed: total)
            }
            r.data = lineConsumed..<(lineConsumed + vlen)
            return .command(.meta(r), consumed: total)
        }

        if ntokens > Parser.metaMaxTokens { return fail(verb == .get ? .metaGetFlagsTooLong : .metaFlagsTooLong) }
        var r = request(2)
        if let e = preparse(buf, from: 2, into: &r, defaultError: .badCommandLineFormat) {
            return fail(verb == .get ? e : .metaInvalidOrDuplicate)
        }
        if verb == .arithmetic {
            switch r.flags.mode {
            case 0, UInt8(ascii: "I"), UInt8(ascii: "+"), UInt8(ascii: "D"), UInt8(ascii: "-"): break
            default: return fail(.metaArithmeticMode)
            }
        }
        // memcached checks the opaque's length while writing the reply; checking it here
        // answers the same error (see docs/PROTOCOL.md for the one side effect that differs).
        for t in r.flagTokens where buf[t.lowerBound] == UInt8(ascii: "O") && t.count > Parser.metaMaxOpaque {
            return fail(.metaOpaqueTooLong)
        }
        pendingNeed = 0
        return .command(.meta(r), consumed: lineConsumed)
    }

    /// memcached's `_meta_flag_preparse`: returns the error to answer, or nil. A duplicate or
    /// unknown flag stops at once; other errors are remembered (the last one wins) and the
    /// scan goes on.
    private func preparse(_ buf: UnsafeRawBufferPointer, from: Int, into r: inout MetaRequest,
                          defaultError: ProtocolError) -> ProtocolError? {
        var error: ProtocolError? = nil
        var errorText = defaultError
        var i = from
        while i < tokens.count {
            let t = tokens[i]
            let o = buf[t.lowerBound]
            if o >= 127 || r.flags.has(o) { return .metaDuplicateFlag }
            r.flags.mark(o)
            let arg = UnsafeRawBufferPointer(rebasing: buf[(t.lowerBound + 1)..<t.upperBound])
            switch o {
            case UInt8(ascii: "b"):
                if let k = base64Decode(slice(buf, r.keyToken)) {
                    r.decodedKey = k
                } else {
                    errorText = .metaKeyDecode
                    error = errorText
                    r.decodedKey = []
                }
            case UInt8(ascii: "N"), UInt8(ascii: "T"), UInt8(ascii: "R"):
                if let v = memcachedParseInt32(arg) {
                    if o == UInt8(ascii: "N") { r.flags.vivifyTTL = v }
                    else if o == UInt8(ascii: "T") { r.flags.ttl = v }
                    else { r.flags.recacheTTL = v }
                } else {
                    errorText = .metaBadToken
                    error = errorText
                }
            case UInt8(ascii: "l"), UInt8(ascii: "O"), UInt8(ascii: "P"), UInt8(ascii: "L"), UInt8(ascii: "k"),
                 UInt8(ascii: "s"), UInt8(ascii: "t"), UInt8(ascii: "c"), UInt8(ascii: "f"), UInt8(ascii: "v"),
                 UInt8(ascii: "h"), UInt8(ascii: "u"), UInt8(ascii: "q"), UInt8(ascii: "I"):
                break
            case UInt8(ascii: "F"):
                // memcached sets the error without a message of its own here.
                if let f = memcachedParseUInt32(arg) { r.flags.clientFlags = f } else { error = errorText }
            case UInt8(ascii: "C"):
                if let c = memcachedParseUInt64(arg) { r.flags.cas = c } else {
                    errorText = .metaBadToken
                    error = errorText
                }
            case UInt8(ascii: "M"):
                if t.count != 2 {
                    errorText = .metaModeLength
                    error = errorText
                } else {
                    r.flags.mode = buf[t.lowerBound + 1]
                }
            case UInt8(ascii: "J"):
                if let v = memcachedParseUInt64(arg) { r.flags.initial = v } else {
                    errorText = .metaInitial
                    error = errorText
                }
            case UInt8(ascii: "D"):
                if let v = memcachedParseUInt64(arg) { r.flags.delta = v } else {
                    errorText = .metaDelta
                    error = errorText
                }
            default:
                return .metaInvalidFlag
            }
            i += 1
        }
        return error == nil ? nil : errorText
    }
}

// MARK: - Base64 (memcached's binary keys)

private let base64Alphabet: [UInt8] = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

@inline(__always)
private func base64Value(_ c: UInt8) -> UInt8? {
    switch c {
    case UInt8(ascii: "A")...UInt8(ascii: "Z"): c - UInt8(ascii: "A")
    case UInt8(ascii: "a")...UInt8(ascii: "z"): c - UInt8(ascii: "a") + 26
    case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0") + 52
    case UInt8(ascii: "+"): 62
    case UInt8(ascii: "/"): 63
    default: nil
    }
}

/// Base64 decoding as memcached's meta keys get it (the classic decoder memcached ships):
/// bytes outside the alphabet are skipped, the rest must come in groups of four, `=` counts
/// as a zero digit and as padding, and the first group holding padding ends the input (one
/// or two `=` drop one or two bytes; three or more are an error). nil on an error or an empty
/// result (memcached's "returns 0").
public func base64Decode(_ s: UnsafeRawBufferPointer) -> [UInt8]? {
    var digits = 0
    for c in s where c == UInt8(ascii: "=") || base64Value(c) != nil { digits += 1 }
    guard digits > 0, digits % 4 == 0 else { return nil }
    var out: [UInt8] = []
    out.reserveCapacity(digits / 4 * 3)
    var block: UInt32 = 0
    var n = 0
    var pad = 0
    for c in s {
        let d: UInt8
        if c == UInt8(ascii: "=") {
            d = 0
            pad += 1
        } else if let v = base64Value(c) {
            d = v
        } else {
            continue
        }
        block = (block << 6) | UInt32(d)
        n += 1
        if n == 4 {
            out.append(UInt8(truncatingIfNeeded: block >> 16))
            out.append(UInt8(truncatingIfNeeded: block >> 8))
            out.append(UInt8(truncatingIfNeeded: block))
            n = 0
            block = 0
            if pad > 0 {
                guard pad <= 2 else { return nil }
                out.removeLast(pad)
                break
            }
        }
    }
    return out.isEmpty ? nil : out
}

/// Appends the base64 encoding (with padding) of `data` to `out`.
public func base64Encode(_ data: UnsafeRawBufferPointer, to out: ByteSink) {
    var i = 0
    while i < data.count {
        let n = min(3, data.count - i)
        var v: UInt32 = UInt32(data[i]) << 16
        if n > 1 { v |= UInt32(data[i + 1]) << 8 }
        if n > 2 { v |= UInt32(data[i + 2]) }
        out.append(base64Alphabet[Int((v >> 18) & 63)])
        out.append(base64Alphabet[Int((v >> 12) & 63)])
        out.append(n > 1 ? base64Alphabet[Int((v >> 6) & 63)] : UInt8(ascii: "="))
        out.append(n > 2 ? base64Alphabet[Int(v & 63)] : UInt8(ascii: "="))
        i += 3
    }
}
