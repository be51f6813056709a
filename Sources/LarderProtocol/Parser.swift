// Incremental parser for the memcached text protocol. It is handed the connection's unread
// bytes, returns at most one request (or asks for more bytes), and never touches a socket.
// Tokenising, token counts per command, number parsing and the order of checks follow
// memcached 1.6 so that every malformed request gets the reply memcached gives, and the bytes
// after it are treated as memcached treats them (see docs/PROTOCOL.md).

#if canImport(Glibc)
import Glibc
#endif

/// What one call to `Parser.parse` found at the start of the buffer.
public enum ParseResult: Sendable, Equatable {
    /// A complete request that used `consumed` bytes.
    case command(Command, consumed: Int)
    /// Not enough bytes yet; call again when more arrive.
    case needMore
    /// `count` bytes were discarded (the data block of a refused storage command).
    case skipped(count: Int)
    /// The input cannot be recovered from (a line with no end past the line limit, or an
    /// HTTP request); memcached closes the connection without a reply.
    case close
}

/// Per-connection parser state. A value type; one lives in each connection.
public struct Parser: Sendable {
    public var limits: ProtocolLimits
    /// Bytes of a refused data block still to discard.
    var swallowRemaining = 0
    /// Bytes already searched for a newline without finding one (avoids rescanning a growing
    /// line from the start on every read).
    private var scannedWithoutNewline = 0
    /// Total bytes needed before the pending request can complete (line + data + `\r\n`).
    var pendingNeed = 0

    /// Token ranges of the current line, reused between calls.
    var tokens: [Range<Int>] = []

    public init(limits: ProtocolLimits = ProtocolLimits()) {
        self.limits = limits
        tokens.reserveCapacity(ProtocolLimits.maxTokens)
    }

    /// How many bytes the parser knows it needs before it can make progress (0 if unknown).
    /// The connection uses it to size its read buffer once for a large value.
    public var bytesWanted: Int { pendingNeed }

    /// Parses one request from the start of `buf`.
    public mutating func parse(_ buf: UnsafeRawBufferPointer) -> ParseResult {
        if swallowRemaining > 0 {
            if buf.isEmpty { return .needMore }
            let n = min(swallowRemaining, buf.count)
            swallowRemaining -= n
            return .skipped(count: n)
        }
        if buf.isEmpty { return .needMore }
        if pendingNeed > 0 && buf.count < pendingNeed { return .needMore }

        // Find the end of the line, resuming where the last search stopped.
        let searchFrom = min(scannedWithoutNewline, buf.count)
        var newline = -1
        if let base = buf.baseAddress {
            let rest = buf.count - searchFrom
            if rest > 0, let p = memchr(base + searchFrom, 0x0A, rest) {
                newline = UnsafeRawPointer(p) - base
            }
        }
        if newline < 0 {
            scannedWithoutNewline = buf.count
            if buf.count > ProtocolLimits.maxLineLength {
                var i = 0
                while i < buf.count && buf[i] == 0x20 { i += 1 }
                let isMultiget = startsWith(buf, at: i, "get ") || startsWith(buf, at: i, "gets ")
                if i > 100 || !isMultiget || buf.count > limits.maxMultigetLine {
                    return .close
                }
            }
            return .needMore
        }
        scannedWithoutNewline = 0
        let lineConsumed = newline + 1
        var lineEnd = newline
        if newline > 1 && buf[newline - 1] == 0x0D { lineEnd = newline - 1 }
        // memcached treats the line as a C string: a NUL byte ends it.
        if let base = buf.baseAddress, lineEnd > 0, let z = memchr(base, 0, lineEnd) {
            lineEnd = UnsafeRawPointer(z) - base
        }

        var rest = tokenize(buf, from: 0, to: lineEnd)
        let ntokens = tokens.count + 1  // memcached counts a terminal token
        if tokens.isEmpty || tokens[0].count < 2 {
            return .command(.invalid(.unknownCommand, command: .unknown, noreply: false), consumed: lineConsumed)
        }
        let cmd = tokens[0]
        let first = buf[cmd.lowerBound]
        // Meta commands are all two bytes long and start with `m` (memcached checks this first).
        if first == UInt8(ascii: "m") && cmd.count == 2 {
            return parseMeta(buf, ntokens: ntokens, lineConsumed: lineConsumed)
        }

        func done(_ c: Command) -> ParseResult {
            pendingNeed = 0
            return .command(c, consumed: lineConsumed)
        }
        func error(_ e: ProtocolError, _ family: CommandFamily, noreply: Bool = false) -> ParseResult {
            done(.invalid(e, command: family, noreply: noreply))
        }

        if first == UInt8(ascii: "c") || first == UInt8(ascii: "s") || first == UInt8(ascii: "l")
            || first == UInt8(ascii: "w") || first == UInt8(ascii: "r"), let admin = parseAdmin(buf, ntokens: ntokens) {
            return done(admin)
        }

        switch first {
        case UInt8(ascii: "g"):
            let family: CommandFamily
            if equals(buf, cmd, "get") { family = .get }
            else if equals(buf, cmd, "gets") { family = .gets }
            else if equals(buf, cmd, "gat") { family = .gat }
            else if equals(buf, cmd, "gats") { family = .gats }
            else { return error(.unknownCommand, .unknown) }
            if ntokens < 3 { return error(.unknownCommand, family) }
            var touch: Int32? = nil
            var firstKey = 1
            if family == .gat || family == .gats {
                guard let e = memcachedParseInt32(slice(buf, tokens[1])) else {
                    return error(.invalidExptime, family)
                }
                touch = e
                firstKey = 2
            }
            let withCas = family == .gets || family == .gats
            if rest == nil && tokens.count == firstKey + 1 {
                // One key: no array.
                if tokens[firstKey].count > ProtocolLimits.maxKeyLength { return error(.badCommandLineFormat, family) }
                return done(.get(keys: KeyList(single: tokens[firstKey]), withCas: withCas, touch: touch))
            }
            var keys = Array(tokens[firstKey...])
            // Lines with more than MAX_TOKENS tokens continue to be tokenized in batches.
            while let r = rest {
                rest = tokenize(buf, from: r, to: lineEnd)
                keys.append(contentsOf: tokens)
            }
            for k in keys where k.count > ProtocolLimits.maxKeyLength {
                return error(.badCommandLineFormat, family)
            }
            return done(.get(keys: KeyList(keys), withCas: withCas, touch: touch))

        case UInt8(ascii: "s"):
            if equals(buf, cmd, "set") {
                guard ntokens == 6 || ntokens == 7 else { return error(.unknownCommand, .set) }
                return parseStorage(buf, mode: .set, ntokens: ntokens, lineConsumed: lineConsumed)
            }
            if equals(buf, cmd, "stats") { return parseStats(buf, ntokens: ntokens, done: done, error: error) }
            return error(.unknownCommand, .unknown)

        case UInt8(ascii: "a"):
            let mode: StoreMode
            if equals(buf, cmd, "add") { mode = .add }
            else if equals(buf, cmd, "append") { mode = .append }
            else { return error(.unknownCommand, .unknown) }
            guard ntokens == 6 || ntokens == 7 else { return error(.unknownCommand, mode.family) }
            return parseStorage(buf, mode: mode, ntokens: ntokens, lineConsumed: lineConsumed)

        case UInt8(ascii: "c"):
            guard equals(buf, cmd, "cas") else { return error(.unknownCommand, .unknown) }
            guard ntokens == 7 || ntokens == 8 else { return error(.unknownCommand, .cas) }
            return parseStorage(buf, mode: .cas, ntokens: ntokens, lineConsumed: lineConsumed)

        case UInt8(ascii: "i"), UInt8(ascii: "d"):
            if equals(buf, cmd, "incr") || equals(buf, cmd, "decr") {
                let incr = first == UInt8(ascii: "i")
                let fam: CommandFamily = incr ? .incr : .decr
                guard ntokens == 4 || ntokens == 5 else { return error(.unknownCommand, fam) }
                let noreply = isNoreply(buf, ntokens: ntokens)
                if tokens[1].count > ProtocolLimits.maxKeyLength {
                    return error(.badCommandLineFormat, fam, noreply: noreply)
                }
                guard let delta = memcachedParseUInt64(slice(buf, tokens[2])) else {
                    return error(.invalidDelta, fam, noreply: noreply)
                }
                return done(.arithmetic(incr: incr, key: tokens[1], delta: delta, noreply: noreply))
            }
            if equals(buf, cmd, "delete") {
                guard ntokens >= 3 && ntokens <= 5 else { return error(.unknownCommand, .delete) }
                var noreply = false
                if ntokens > 3 {
                    let holdIsZero = equals(buf, tokens[2], "0")
                    noreply = isNoreply(buf, ntokens: ntokens)
                    let valid = (ntokens == 4 && (holdIsZero || noreply)) || (ntokens == 5 && holdIsZero && noreply)
                    if !valid { return error(.deleteUsage, .delete, noreply: noreply) }
                }
                if tokens[1].count > ProtocolLimits.maxKeyLength {
                    return error(.badCommandLineFormat, .delete, noreply: noreply)
                }
                return done(.delete(key: tokens[1], noreply: noreply))
            }
            return error(.unknownCommand, .unknown)

        case UInt8(ascii: "t"):
            guard equals(buf, cmd, "touch") else { return error(.unknownCommand, .unknown) }
            guard ntokens == 4 || ntokens == 5 else { return error(.unknownCommand, .touch) }
            let noreply = isNoreply(buf, ntokens: ntokens)
            if tokens[1].count > ProtocolLimits.maxKeyLength {
                return error(.badCommandLineFormat, .touch, noreply: noreply)
            }
            guard let e = memcachedParseInt32(slice(buf, tokens[2])) else {
                return error(.invalidExptime, .touch, noreply: noreply)
            }
            return done(.touch(key: tokens[1], exptime: e, noreply: noreply))

        default:
            if equals(buf, cmd, "replace") || equals(buf, cmd, "prepend") {
                let mode: StoreMode = first == UInt8(ascii: "r") ? .replace : .prepend
                guard ntokens == 6 || ntokens == 7 else { return error(.unknownCommand, mode.family) }
                return parseStorage(buf, mode: mode, ntokens: ntokens, lineConsumed: lineConsumed)
            }
            if equals(buf, cmd, "bget") {
                // An ancient alias memcached still answers as `get`.
                if ntokens < 3 { return error(.unknownCommand, .get) }
                var keys = Array(tokens[1...])
                while let r = rest {
                    rest = tokenize(buf, from: r, to: lineEnd)
                    keys.append(contentsOf: tokens)
                }
                for k in keys where k.count > ProtocolLimits.maxKeyLength {
                    return error(.badCommandLineFormat, .get)
                }
                return done(.get(keys: KeyList(keys), withCas: false, touch: nil))
            }
            if equals(buf, cmd, "flush_all") {
                guard ntokens >= 2 && ntokens <= 4 else { return error(.unknownCommand, .flush_all) }
                let noreply = isNoreply(buf, ntokens: ntokens)
                var delay: Int32 = 0
                if ntokens != (noreply ? 3 : 2) {
                    guard let d = memcachedParseInt32(slice(buf, tokens[1])) else {
                        return error(.invalidExptime, .flush_all, noreply: noreply)
                    }
                    delay = d
                }
                return done(.flushAll(delay: delay, noreply: noreply))
            }
            if equals(buf, cmd, "version") { return done(.version) }
            if equals(buf, cmd, "quit") { return done(.quit) }
            if equals(buf, cmd, "verbosity") {
                guard ntokens == 3 || ntokens == 4 else { return error(.unknownCommand, .verbosity) }
                let noreply = isNoreply(buf, ntokens: ntokens)
                guard let level = memcachedParseUInt32(slice(buf, tokens[1])) else {
                    return error(.badCommandLineFormat, .verbosity, noreply: noreply)
                }
                return done(.verbosity(level: level, noreply: noreply))
            }
            // memcached drops a connection that speaks HTTP to it.
            if let last = tokens.last, startsWith(buf, at: last.lowerBound, "HTTP/") {
                pendingNeed = 0
                return .close
            }
            return error(.unknownCommand, .unknown)
        }
    }

    // MARK: - Storage commands

    private mutating func parseStorage(_ buf: UnsafeRawBufferPointer, mode: StoreMode, ntokens: Int,
                                       lineConsumed: Int) -> ParseResult {
        let fam = mode.family
        let noreply = isNoreply(buf, ntokens: ntokens)
        func fail(_ e: ProtocolError) -> ParseResult {
            pendingNeed = 0
            return .command(.invalid(e, command: fam, noreply: noreply), consumed: lineConsumed)
        }
        let key = tokens[1]
        if key.count > ProtocolLimits.maxKeyLength { return fail(.badCommandLineFormat) }
        guard let flags = memcachedParseUInt32(slice(buf, tokens[2])),
              let exptime = memcachedParseInt32(slice(buf, tokens[3])),
              let vlen32 = memcachedParseInt32(slice(buf, tokens[4])) else {
            return fail(.badCommandLineFormat)
        }
        var casUnique: UInt64 = 0
        if mode == .cas {
            guard let c = memcachedParseUInt64(slice(buf, tokens[5])) else { return fail(.badCommandLineFormat) }
            casUnique = c
        }
        if vlen32 < 0 || vlen32 > Int32.max - 2 { return fail(.badCommandLineFormat) }
        let vlen = Int(vlen32)
        if ProtocolLimits.itemTotalSize(keyLength: key.count, flags: flags, valueLength: vlen) > limits.maxItemSize {
            pendingNeed = 0
            swallowRemaining = vlen + 2
            return .command(.storeTooLarge(mode: mode, key: key, noreply: noreply), consumed: lineConsumed)
        }
        let total = lineConsumed + vlen + 2
        if buf.count < total {
            pendingNeed = total
            return .needMore
        }
        pendingNeed = 0
        if buf[lineConsumed + vlen] != 0x0D || buf[lineConsumed + vlen + 1] != 0x0A {
            return .command(.invalid(.badDataChunk, command: fam, noreply: noreply), consumed: total)
        }
        let req = StoreRequest(mode: mode, key: key, flags: flags, exptime: exptime,
                               data: lineConsumed..<(lineConsumed + vlen), casUnique: casUnique, noreply: noreply)
        return .command(.store(req), consumed: total)
    }

    private func parseStats(_ buf: UnsafeRawBufferPointer, ntokens: Int,
                            done: (Command) -> ParseResult,
                            error: (ProtocolError, CommandFamily, Bool) -> ParseResult) -> ParseResult {
        if ntokens == 2 { return done(.stats(.general)) }
        let sub = tokens[1]
        if equals(buf, sub, "reset") { return done(.stats(.reset)) }
        if equals(buf, sub, "settings") { return done(.stats(.settings)) }
        if equals(buf, sub, "items") { return done(.stats(.items)) }
        if equals(buf, sub, "slabs") { return done(.stats(.slabs)) }
        if equals(buf, sub, "conns") { return done(.stats(.conns)) }
        if equals(buf, sub, "cachedump") { return done(parseCachedump(buf, ntokens: ntokens)) }
        if equals(buf, sub, "detail") {
            if ntokens >= 4 && equals(buf, tokens[2], "on") { return done(.stats(.detail(on: true))) }
            if ntokens >= 4 && equals(buf, tokens[2], "off") { return done(.stats(.detail(on: false))) }
            return error(.statsDetailUsage, .stats, false)
        }
        return error(.unknownCommand, .stats, false)
    }

    // MARK: - Tokens

    /// Splits `buf[from..<to]` on spaces into `tokens`, at most MAX_TOKENS - 1 of them (as
    /// memcached does). Returns where the untokenized rest starts, or nil if the line is done.
    mutating func tokenize(_ buf: UnsafeRawBufferPointer, from: Int, to end: Int) -> Int? {
        tokens.removeAll(keepingCapacity: true)
        guard let base = buf.baseAddress?.assumingMemoryBound(to: UInt8.self), from < end else { return nil }
        // One scan over the line with raw pointer reads (no bounds checks per byte); tokens
        // are appended to the reused array (its capacity was reserved once).
        var s = from
        var i = from
        while i < end {
            if base[i] == 0x20 {
                if s != i {
                    tokens.append(s..<i)
                    if tokens.count == ProtocolLimits.maxTokens - 1 {
                        i += 1
                        return i < end ? i : nil
                    }
                }
                s = i + 1
            }
            i += 1
        }
        if s != i { tokens.append(s..<i) }
        return nil
    }

    private func isNoreply(_ buf: UnsafeRawBufferPointer, ntokens: Int) -> Bool {
        // memcached looks at the last real token (ntokens - 2 counting the terminal one).
        let idx = ntokens - 2
        return idx >= 0 && idx < tokens.count && equals(buf, tokens[idx], "noreply")
    }

}

// MARK: - Byte helpers

@inline(__always)
func slice(_ buf: UnsafeRawBufferPointer, _ r: Range<Int>) -> UnsafeRawBufferPointer {
    UnsafeRawBufferPointer(rebasing: buf[r])
}

@inline(__always)
func equals(_ buf: UnsafeRawBufferPointer, _ r: Range<Int>, _ s: StaticString) -> Bool {
    guard r.count == s.utf8CodeUnitCount else { return false }
    let p = s.utf8Start
    var i = 0
    while i < r.count {
        if buf[r.lowerBound + i] != p[i] { return false }
        i += 1
    }
    return true
}

@inline(__always)
func startsWith(_ buf: UnsafeRawBufferPointer, at: Int, _ s: StaticString) -> Bool {
    let n = s.utf8CodeUnitCount
    guard at + n <= buf.count else { return false }
    return equals(buf, at..<(at + n), s)
}
