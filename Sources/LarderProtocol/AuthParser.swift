// memcached's ASCII authentication (`-Y`), the part that reads bytes. Until a connection has
// authenticated, memcached 1.6.18 does not run its command parser at all: it reads one line,
// and only `set <key> <flags> <exptime> <bytes>` (key, flags and exptime ignored, `noreply`
// too) is taken, as the announcement of a data block `user password\r\n`; every other line is
// answered `CLIENT_ERROR unauthenticated` (`version`, `quit` and the meta commands included).
// This parser reproduces that reader step by step: the same tokenizer (spaces only, a line
// read as a C string up to a NUL, `\r` left on the last token), the same number parsing
// (`safe_strtoul` into 32 bits: `4294967296` is 0), the same limits (a line with no newline
// past 2048 bytes closes the connection; a block that cannot fit memcached's 16 KB read
// buffer closes it too) and the same three error replies. It never touches a socket and never
// sees a password beyond handing back where it is in the buffer. docs/AUTH.md has the
// behaviours measured against memcached.

#if canImport(Glibc)
import Glibc
#endif

/// What one call to `AuthParser.parse` found at the start of the buffer.
public enum AuthStep: Sendable, Equatable {
    /// Not enough bytes yet.
    case needMore
    /// An authentication line was read (`consumed` bytes); its data block comes next.
    case line(consumed: Int)
    /// Answer this error and drop `consumed` bytes; the connection stays unauthenticated.
    case refuse(ProtocolError, consumed: Int)
    /// A complete `user password` block: check these credentials (ranges into the buffer).
    case credentials(user: Range<Int>, password: Range<Int>, consumed: Int)
    /// Close the connection without a reply (no newline within the line limit, or a block
    /// larger than memcached could ever buffer).
    case close
}

/// Per-connection state of the authentication reader; one lives in each connection that has
/// not authenticated yet.
public struct AuthParser: Sendable {
    /// Length of the announced data block with its `\r\n` (memcached's `rlbytes`), or nil
    /// while a request line is awaited.
    private var pendingBlock: Int?

    /// The largest data block, `\r\n` included: memcached reads the block into its 16 KB
    /// connection buffer and closes the connection when a block cannot fit (a read of 0
    /// bytes into a full buffer counts as end of input), so `set a 0 0 16382` is the largest
    /// that can succeed. Larder closes as soon as a larger block is announced.
    public static let maxBlock = 16 * 1024

    public init() {}

    /// Bytes the reader needs before it can make progress (the pending block), 0 if unknown.
    public var bytesWanted: Int { pendingBlock ?? 0 }

    public mutating func parse(_ buf: UnsafeRawBufferPointer) -> AuthStep {
        if let need = pendingBlock {
            if buf.count < need { return .needMore }
            pendingBlock = nil
            return block(buf, need)
        }
        // memcached: "impossible for the auth command to be this short".
        guard buf.count >= 2, let base = buf.baseAddress else { return .needMore }
        guard let p = memchr(base, 0x0A, buf.count) else {
            return buf.count > ProtocolLimits.maxLineLength ? .close : .needMore
        }
        let newline = UnsafeRawPointer(p) - base
        let consumed = newline + 1
        var end = newline
        if newline > 0, let z = memchr(base, 0, newline) { end = UnsafeRawPointer(z) - base }
        // Only the first five tokens matter; memcached's limit of 23 never cuts before them.
        var tokens: [Range<Int>] = []
        tokens.reserveCapacity(5)
        splitOnSpaces(buf, 0..<end, max: 5, into: &tokens)
        guard tokens.count == 5, equals(buf, tokens[0], "set"),
              let size = memcachedParseUInt32(slice(buf, tokens[4])) else {
            return .refuse(.unauthenticated, consumed: consumed)
        }
        // memcached computes `size + 2` in 32 bits: 4294967294 and 4294967295 wrap to 0 and 1,
        // and such a "block" never ends in \r\n.
        let blockLength = Int(size &+ 2)
        if blockLength > AuthParser.maxBlock { return .close }
        if blockLength == 0 { return .refuse(.authTermination, consumed: consumed) }
        pendingBlock = blockLength
        return .line(consumed: consumed)
    }

    /// A complete data block of `length` bytes (its `\r\n` included) at the start of `buf`.
    private func block(_ buf: UnsafeRawBufferPointer, _ length: Int) -> AuthStep {
        guard length >= 2, buf[length - 2] == 0x0D, buf[length - 1] == 0x0A else {
            return .refuse(.authTermination, consumed: length)
        }
        // The block is read as a C string: a NUL ends it.
        var end = length - 2
        if end > 0, let base = buf.baseAddress, let z = memchr(base, 0, end) { end = UnsafeRawPointer(z) - base }
        var tokens: [Range<Int>] = []
        tokens.reserveCapacity(2)
        splitOnSpaces(buf, 0..<end, max: 2, into: &tokens)
        guard tokens.count == 2 else { return .refuse(.authTokenFormat, consumed: length) }
        return .credentials(user: tokens[0], password: tokens[1], consumed: length)
    }
}

/// Appends the ranges of the first `max` space-separated tokens of `buf[range]` (memcached's
/// tokenizer: only ' ' separates; runs of spaces and leading spaces make no empty tokens).
private func splitOnSpaces(_ buf: UnsafeRawBufferPointer, _ range: Range<Int>, max: Int, into tokens: inout [Range<Int>]) {
    var s = range.lowerBound
    var i = range.lowerBound
    while i < range.upperBound && tokens.count < max {
        if buf[i] == 0x20 {
            if s != i { tokens.append(s..<i) }
            s = i + 1
        }
        i += 1
    }
    if tokens.count < max && s != i { tokens.append(s..<i) }
}
