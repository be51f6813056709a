// The commands the parser produces. Keys and data are not copied out of the input: they are
// byte ranges into the buffer that was handed to `Parser.parse`, valid until the caller
// consumes those bytes. This keeps the parser allocation-light and the layer pure.

/// Which storage command a `set`-family request is.
public enum StoreMode: UInt8, Sendable, CaseIterable {
    case set, add, replace, append, prepend, cas

    /// The command family this storage command counts under.
    public var family: CommandFamily {
        switch self {
        case .set: .set
        case .add: .add
        case .replace: .replace
        case .append: .append
        case .prepend: .prepend
        case .cas: .cas
        }
    }

    public var name: String {
        switch self {
        case .set: "set"
        case .add: "add"
        case .replace: "replace"
        case .append: "append"
        case .prepend: "prepend"
        case .cas: "cas"
        }
    }
}

/// A storage request whose data block has fully arrived and ends in `\r\n`.
public struct StoreRequest: Sendable, Equatable {
    public var mode: StoreMode
    public var key: Range<Int>
    public var flags: UInt32
    public var exptime: Int32
    /// The value bytes, without the trailing `\r\n`.
    public var data: Range<Int>
    public var casUnique: UInt64
    public var noreply: Bool
}

/// The `stats` sub-commands Larder answers.
public enum StatsGroup: Sendable, Equatable {
    case general, settings, items, slabs, conns, reset
    case detail(on: Bool)
}

/// The keys of a retrieval command. One key (the common case) is held inline, so a plain
/// `get` allocates nothing; more keys go to an array.
public struct KeyList: Sendable, Equatable, Sequence {
    private var one: Range<Int>?
    private var many: [Range<Int>]

    public init(_ keys: [Range<Int>]) {
        if keys.count == 1 {
            one = keys[0]
            many = []
        } else {
            one = nil
            many = keys
        }
    }

    public init(single: Range<Int>) {
        one = single
        many = []
    }

    public var count: Int { one == nil ? many.count : 1 }

    /// The `i`th key (a multi-get resumed part-way starts from an index, not from the top).
    @inline(__always)
    public subscript(i: Int) -> Range<Int> { one ?? many[i] }

    public struct Iterator: IteratorProtocol {
        var one: Range<Int>?
        var many: IndexingIterator<[Range<Int>]>
        public mutating func next() -> Range<Int>? {
            if let o = one {
                one = nil
                return o
            }
            return many.next()
        }
    }

    public func makeIterator() -> Iterator { Iterator(one: one, many: many.makeIterator()) }
}

/// One parsed request.
public enum Command: Sendable, Equatable {
    /// `get`/`gets` (withCas) and, with `touch`, `gat`/`gats`.
    case get(keys: KeyList, withCas: Bool, touch: Int32?)
    case store(StoreRequest)
    /// A storage command whose announced size is over `-I`; its data block is swallowed.
    /// memcached also unlinks the key when the command was a `set`.
    case storeTooLarge(mode: StoreMode, key: Range<Int>, noreply: Bool)
    case delete(key: Range<Int>, noreply: Bool)
    case arithmetic(incr: Bool, key: Range<Int>, delta: UInt64, noreply: Bool)
    case touch(key: Range<Int>, exptime: Int32, noreply: Bool)
    case flushAll(delay: Int32, noreply: Bool)
    case verbosity(level: UInt32, noreply: Bool)
    case version
    case quit
    case stats(StatsGroup)
    /// A meta command (`mg ms md ma mn me`); see MetaCommand.swift. Indirect: a request with
    /// all its flags is ~150 bytes, and inline it made every Command that size, copied with a
    /// memcpy several times per classic request (callgrind: +100 instructions a get).
    indirect case meta(MetaRequest)
    /// An admin command tools send (`cache_memlimit`, `slabs`, `lru_crawler`, `shutdown`, ...).
    case admin(AdminCommand)
    /// A request refused by the parser. `command` names the command family it was
    /// (for metrics), `noreply` suppresses the reply as memcached does.
    case invalid(ProtocolError, command: CommandFamily, noreply: Bool)
}

/// Command families, for counters and latency histograms.
public enum CommandFamily: String, Sendable, CaseIterable {
    case get, gets, gat, gats, set, add, replace, append, prepend, cas
    case delete, incr, decr, touch, flush_all, verbosity, version, quit, stats, unknown
    case mg, ms, md, ma, mn, me, admin

    /// Position in `allCases`, without building the array (used on the hot path).
    @inline(__always)
    public var ordinal: Int {
        switch self {
        case .get: 0
        case .gets: 1
        case .gat: 2
        case .gats: 3
        case .set: 4
        case .add: 5
        case .replace: 6
        case .append: 7
        case .prepend: 8
        case .cas: 9
        case .delete: 10
        case .incr: 11
        case .decr: 12
        case .touch: 13
        case .flush_all: 14
        case .verbosity: 15
        case .version: 16
        case .quit: 17
        case .stats: 18
        case .unknown: 19
        case .mg: 20
        case .ms: 21
        case .md: 22
        case .ma: 23
        case .mn: 24
        case .me: 25
        case .admin: 26
        }
    }
}

/// Errors the protocol layer reports to a client. `ReplyEncoder.errorLine` maps each to the
/// exact string memcached sends.
public enum ProtocolError: Error, Sendable, Equatable {
    /// `ERROR`: unknown command or wrong number of tokens.
    case unknownCommand
    /// `CLIENT_ERROR bad command line format`
    case badCommandLineFormat
    /// `CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]`
    case deleteUsage
    /// `CLIENT_ERROR bad data chunk`
    case badDataChunk
    /// `CLIENT_ERROR invalid numeric delta argument`
    case invalidDelta
    /// `CLIENT_ERROR invalid exptime argument`
    case invalidExptime
    /// `CLIENT_ERROR usage: stats detail on|off|dump`
    case statsDetailUsage
    /// `ERROR: shutdown not enabled`
    case shutdownDisabled
    // Meta commands (memcached 1.6.18's strings, see MetaCommand.swift).
    /// `CLIENT_ERROR duplicate flag`
    case metaDuplicateFlag
    /// `CLIENT_ERROR invalid flag`
    case metaInvalidFlag
    /// `CLIENT_ERROR bad token in command line format`
    case metaBadToken
    /// `CLIENT_ERROR error decoding key`
    case metaKeyDecode
    /// `CLIENT_ERROR incorrect length for M token`
    case metaModeLength
    /// `CLIENT_ERROR invalid numeric initial value`
    case metaInitial
    /// `CLIENT_ERROR invalid numeric delta value`
    case metaDelta
    /// `CLIENT_ERROR invalid or duplicate flag` (md, ma)
    case metaInvalidOrDuplicate
    /// `CLIENT_ERROR opaque token too long`
    case metaOpaqueTooLong
    /// `CLIENT_ERROR options flags are too long` (mg)
    case metaGetFlagsTooLong
    /// `CLIENT_ERROR options flags too long` (ms, md, ma)
    case metaFlagsTooLong
    /// `CLIENT_ERROR invalid mode for ms M token`
    case metaSetMode
    /// `CLIENT_ERROR invalid mode for ma M token`
    case metaArithmeticMode
    /// `CLIENT_ERROR invalid shutdown mode`
    case shutdownMode
    /// `CLIENT_ERROR sleep must be one second or less`
    case crawlerSleep
    /// `CLIENT_ERROR bad command line` (stats cachedump with too few tokens)
    case cachedumpUsage
    /// `CLIENT_ERROR Illegal slab id`
    case illegalSlabId
    // ASCII authentication (`-Y`, see AuthParser.swift).
    /// `CLIENT_ERROR unauthenticated`: any request before the connection has authenticated.
    case unauthenticated
    /// `CLIENT_ERROR authentication failure`: no such user, or the wrong password.
    case authenticationFailure
    /// `CLIENT_ERROR bad authentication token format`: the data block is not `user password`.
    case authTokenFormat
    /// `CLIENT_ERROR bad command line termination`: the auth data block does not end in `\r\n`.
    case authTermination
}
