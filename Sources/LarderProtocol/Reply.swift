// Encodes replies into bytes, exactly as memcached 1.6 writes them. Pure: the network layer
// hands in a byte array and gets the reply appended. All error strings live here, in
// `errorLine`, the one place a protocol error becomes CLIENT_ERROR/SERVER_ERROR/ERROR text.

/// Fixed-form replies.
public enum Reply: Sendable, Equatable {
    case stored, notStored, exists, notFound, deleted, touched, end, ok, reset
    case error(ProtocolError)
    case tooLarge
    case outOfMemory
    case nonNumeric
    case number(UInt64)
}

public enum ReplyEncoder {
    /// The text of a reply line, without `\r\n`.
    public static func line(_ r: Reply) -> StaticString? {
        switch r {
        case .stored: "STORED"
        case .notStored: "NOT_STORED"
        case .exists: "EXISTS"
        case .notFound: "NOT_FOUND"
        case .deleted: "DELETED"
        case .touched: "TOUCHED"
        case .end: "END"
        case .ok: "OK"
        case .reset: "RESET"
        case .error(let e): errorLine(e)
        case .tooLarge: "SERVER_ERROR object too large for cache"
        case .outOfMemory: "SERVER_ERROR out of memory storing object"
        case .nonNumeric: "CLIENT_ERROR cannot increment or decrement non-numeric value"
        case .number: nil
        }
    }

    /// The one mapping from protocol errors to the strings memcached sends.
    public static func errorLine(_ e: ProtocolError) -> StaticString {
        switch e {
        case .unknownCommand: "ERROR"
        case .badCommandLineFormat: "CLIENT_ERROR bad command line format"
        case .deleteUsage: "CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]"
        case .badDataChunk: "CLIENT_ERROR bad data chunk"
        case .invalidDelta: "CLIENT_ERROR invalid numeric delta argument"
        case .invalidExptime: "CLIENT_ERROR invalid exptime argument"
        case .statsDetailUsage: "CLIENT_ERROR usage: stats detail on|off|dump"
        case .shutdownDisabled: "ERROR: shutdown not enabled"
        }
    }

    /// Appends `r` and its `\r\n`.
    @inline(__always)
    public static func append(_ r: Reply, to out: inout [UInt8]) {
        if case .number(let n) = r {
            appendDecimal(n, to: &out)
        } else if let s = line(r) {
            appendStatic(s, to: &out)
        }
        out.append(0x0D)
        out.append(0x0A)
    }

    /// Appends `VALUE <key> <flags> <bytes>[ <cas>]\r\n`; the data block follows separately.
    @inline(__always)
    public static func appendValueHeader(key: UnsafeRawBufferPointer, flags: UInt32, length: Int,
                                         cas: UInt64?, to out: inout [UInt8]) {
        appendStatic("VALUE ", to: &out)
        out.append(contentsOf: key)
        out.append(0x20)
        appendDecimal(UInt64(flags), to: &out)
        out.append(0x20)
        appendDecimal(UInt64(length), to: &out)
        if let cas {
            out.append(0x20)
            appendDecimal(cas, to: &out)
        }
        out.append(0x0D)
        out.append(0x0A)
    }

    /// Appends `STAT <name> <value>\r\n`.
    public static func appendStat(_ name: String, _ value: String, to out: inout [UInt8]) {
        appendStatic("STAT ", to: &out)
        out.append(contentsOf: name.utf8)
        out.append(0x20)
        out.append(contentsOf: value.utf8)
        out.append(0x0D)
        out.append(0x0A)
    }

    /// Appends `VERSION <v>\r\n`.
    public static func appendVersion(_ v: String, to out: inout [UInt8]) {
        appendStatic("VERSION ", to: &out)
        out.append(contentsOf: v.utf8)
        out.append(0x0D)
        out.append(0x0A)
    }

    @inline(__always)
    public static func appendStatic(_ s: StaticString, to out: inout [UInt8]) {
        out.append(contentsOf: UnsafeBufferPointer(start: s.utf8Start, count: s.utf8CodeUnitCount))
    }

    /// Appends the decimal digits of `v` without allocating.
    @inline(__always)
    public static func appendDecimal(_ v: UInt64, to out: inout [UInt8]) {
        if v < 10 {
            out.append(0x30 &+ UInt8(v))
            return
        }
        var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)  // 24 bytes of scratch, enough for 20 digits
        var n = 0
        var x = v
        withUnsafeMutableBytes(of: &digits) { scratch in
            while x > 0 {
                scratch[23 - n] = 0x30 &+ UInt8(x % 10)
                x /= 10
                n += 1
            }
            out.append(contentsOf: UnsafeRawBufferPointer(rebasing: scratch[(24 - n)...]))
        }
    }

    /// The decimal text of `v` (used for incr/decr values stored in items).
    public static func decimal(_ v: UInt64) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(20)
        appendDecimal(v, to: &out)
        return out
    }
}
