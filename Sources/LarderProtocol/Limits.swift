// Protocol limits shared by the parser, the server and the tests, with memcached's values.

/// Limits the parser enforces. Defaults are memcached 1.6's.
public struct ProtocolLimits: Sendable, Equatable {
    /// Longest key memcached accepts (KEY_MAX_LENGTH).
    public static let maxKeyLength = 250
    /// A buffered line with no newline past this many bytes closes the connection unless it is
    /// a `get`/`gets` (memcached's rule for junk input).
    public static let maxLineLength = 2048
    /// More tokens than this on one line are split (memcached's MAX_TOKENS, terminal included).
    public static let maxTokens = 24

    /// Largest item (`-I`), counted the way memcached counts it: see `itemTotalSize`.
    public var maxItemSize: Int
    /// Longest multi-get line accepted before the connection is closed. memcached lets these
    /// grow without bound; Larder caps them so one client cannot make it buffer gigabytes.
    public var maxMultigetLine: Int

    public init(maxItemSize: Int = 1024 * 1024, maxMultigetLine: Int? = nil) {
        self.maxItemSize = maxItemSize
        self.maxMultigetLine = maxMultigetLine ?? max(1024 * 1024, maxItemSize)
    }

    /// memcached's accounting of an item's size against `-I`: its 48-byte header, the 8-byte
    /// cas, the key and its terminator, 4 bytes of flags when they are not 0, and the value
    /// with its `\r\n`. Using the same sum makes the too-large boundary match byte for byte.
    public static func itemTotalSize(keyLength: Int, flags: UInt32, valueLength: Int) -> Int {
        48 + 8 + keyLength + 1 + (flags == 0 ? 0 : 4) + valueLength + 2
    }
}
