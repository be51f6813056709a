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

/// "VALUE " as a little-endian word, written with one store.
private let valuePrefix: UInt64 = 0x20_45_55_4C_41_56  // V A L U E space

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
        case .metaDuplicateFlag: "CLIENT_ERROR duplicate flag"
        case .metaInvalidFlag: "CLIENT_ERROR invalid flag"
        case .metaBadToken: "CLIENT_ERROR bad token in command line format"
        case .metaKeyDecode: "CLIENT_ERROR error decoding key"
        case .metaModeLength: "CLIENT_ERROR incorrect length for M token"
        case .metaInitial: "CLIENT_ERROR invalid numeric initial value"
        case .metaDelta: "CLIENT_ERROR invalid numeric delta value"
        case .metaInvalidOrDuplicate: "CLIENT_ERROR invalid or duplicate flag"
        case .metaOpaqueTooLong: "CLIENT_ERROR opaque token too long"
        case .metaGetFlagsTooLong: "CLIENT_ERROR options flags are too long"
        case .metaFlagsTooLong: "CLIENT_ERROR options flags too long"
        case .metaSetMode: "CLIENT_ERROR invalid mode for ms M token"
        case .metaArithmeticMode: "CLIENT_ERROR invalid mode for ma M token"
        case .shutdownMode: "CLIENT_ERROR invalid shutdown mode"
        case .crawlerSleep: "CLIENT_ERROR sleep must be one second or less"
        case .cachedumpUsage: "CLIENT_ERROR bad command line"
        case .illegalSlabId: "CLIENT_ERROR Illegal slab id"
        case .unauthenticated: "CLIENT_ERROR unauthenticated"
        case .authenticationFailure: "CLIENT_ERROR authentication failure"
        case .authTokenFormat: "CLIENT_ERROR bad authentication token format"
        case .authTermination: "CLIENT_ERROR bad command line termination"
        }
    }

    /// Appends `r` and its `\r\n`.
    @inline(__always)
    public static func append(_ r: Reply, to out: ByteSink) {
        if case .number(let n) = r {
            out.appendDecimal(n)
        } else if let s = line(r) {
            out.append(s)
        }
        out.appendCRLF()
    }

    /// Appends `VALUE <key> <flags> <bytes>[ <cas>]\r\n`; the data block follows separately.
    @inline(__always)
    public static func appendValueHeader(key: UnsafeRawBufferPointer, flags: UInt32, length: Int,
                                         cas: UInt64?, to out: ByteSink) {
        out.reserve(key.count + 72)
        out.appendUnchecked(valuePrefix, 6)  // "VALUE "
        out.append(key)
        out.appendUnchecked(0x20, 1)
        out.appendDecimal(UInt64(flags))
        out.appendUnchecked(0x20, 1)
        out.appendDecimal(UInt64(length))
        if let cas {
            out.appendUnchecked(0x20, 1)
            out.appendDecimal(cas)
        }
        out.appendUnchecked(0x0A0D, 2)
    }

    /// Appends `STAT <name> <value>\r\n`.
    public static func appendStat(_ name: String, _ value: String, to out: ByteSink) {
        out.append("STAT ")
        out.append(name)
        out.append(0x20)
        out.append(value)
        out.appendCRLF()
    }

    /// Appends `VERSION <v>\r\n`.
    public static func appendVersion(_ v: String, to out: ByteSink) {
        out.append("VERSION ")
        out.append(v)
        out.appendCRLF()
    }
}
