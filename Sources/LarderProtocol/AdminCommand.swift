// The admin commands memcached tools send (`cache_memlimit`, `slabs automove|reassign`,
// `stats cachedump`, `lru_crawler ...`, `shutdown`, `watch`), parsed with memcached 1.6.18's
// token-count rules and number checks so that a malformed one gets memcached's reply.

/// What `watch` may stream (memcached's log classes Larder produces).
public struct WatchClasses: OptionSet, Sendable, Equatable {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    public static let fetchers = WatchClasses(rawValue: 1)
    public static let mutations = WatchClasses(rawValue: 2)
    public static let evictions = WatchClasses(rawValue: 4)
    public static let deletions = WatchClasses(rawValue: 8)
}

public enum AdminCommand: Sendable, Equatable {
    /// `cache_memlimit <MB> [noreply]`; the number parsed as memcached's `safe_strtoul`.
    case cacheMemlimit(megabytes: UInt32, noreply: Bool)
    /// `slabs automove 0|1|2` (`level` unchecked here) or `slabs automove ratio <r>`.
    case slabsAutomove(level: UInt32, noreply: Bool)
    case slabsAutomoveRatio(noreply: Bool)
    /// `slabs reassign <src> <dst>`.
    case slabsReassign(source: Int32, destination: Int32)
    /// `stats cachedump <class> <limit>`.
    case cachedump(slabClass: UInt32, limit: UInt32)
    /// `lru_crawler metadump <all|hash|classes>`.
    case metadump
    /// Other `lru_crawler` forms memcached answers with OK (crawl, tocrawl, sleep, enable, disable).
    case lruCrawlerOK
    /// `shutdown [graceful]`; `graceful` nil for a mode memcached does not know (the server
    /// answers "not enabled" before it looks at the mode, as memcached does).
    case shutdown(graceful: Bool?)
    /// `watch [classes...]`.
    case watch(WatchClasses)
    /// `refresh_certs [noreply]`: reload the TLS certificate, key and CA files (memcached
    /// ignores any other token, as this does).
    case refreshCerts(noreply: Bool)
}

extension Parser {
    /// Admin commands; nil when the line is not one (the caller goes on matching).
    func parseAdmin(_ buf: UnsafeRawBufferPointer, ntokens: Int) -> Command? {
        let cmd = tokens[0]
        func err(_ e: ProtocolError, noreply: Bool = false) -> Command { .invalid(e, command: .admin, noreply: noreply) }
        func noreplyAt() -> Bool {
            let i = ntokens - 2
            return i >= 0 && i < tokens.count && equals(buf, tokens[i], "noreply")
        }
        if equals(buf, cmd, "cache_memlimit") {
            guard ntokens == 3 || ntokens == 4 else { return err(.unknownCommand) }
            let nr = noreplyAt()
            guard let mb = memcachedParseUInt32(slice(buf, tokens[1])) else { return err(.unknownCommand, noreply: nr) }
            return .admin(.cacheMemlimit(megabytes: mb, noreply: nr))
        }
        if equals(buf, cmd, "slabs") {
            if ntokens == 5 && equals(buf, tokens[1], "reassign") {
                guard let s = memcachedParseInt32(slice(buf, tokens[2])),
                      let d = memcachedParseInt32(slice(buf, tokens[3])) else { return err(.badCommandLineFormat) }
                return .admin(.slabsReassign(source: s, destination: d))
            }
            if ntokens >= 4 && equals(buf, tokens[1], "automove") {
                let nr = noreplyAt()
                if equals(buf, tokens[2], "ratio") {
                    guard ntokens >= 5, parseCDouble(slice(buf, tokens[3])) else { return err(.unknownCommand, noreply: nr) }
                    return .admin(.slabsAutomoveRatio(noreply: nr))
                }
                guard let level = memcachedParseUInt32(slice(buf, tokens[2])) else {
                    return err(.badCommandLineFormat, noreply: nr)
                }
                if level > 2 { return err(.unknownCommand, noreply: nr) }
                return .admin(.slabsAutomove(level: level, noreply: nr))
            }
            return err(.unknownCommand)
        }
        if equals(buf, cmd, "lru_crawler") {
            if ntokens == 4 && equals(buf, tokens[1], "metadump") { return .admin(.metadump) }
            if ntokens == 4 && equals(buf, tokens[1], "crawl") { return .admin(.lruCrawlerOK) }
            if ntokens == 4 && (equals(buf, tokens[1], "tocrawl") || equals(buf, tokens[1], "sleep")) {
                guard let v = memcachedParseUInt32(slice(buf, tokens[2])) else { return err(.badCommandLineFormat) }
                if equals(buf, tokens[1], "sleep") && v > 1_000_000 { return err(.crawlerSleep) }
                return .admin(.lruCrawlerOK)
            }
            if ntokens == 3 && (equals(buf, tokens[1], "enable") || equals(buf, tokens[1], "disable")) {
                return .admin(.lruCrawlerOK)
            }
            return err(.unknownCommand)
        }
        if equals(buf, cmd, "shutdown") {
            if ntokens == 2 { return .admin(.shutdown(graceful: false)) }
            if ntokens == 3 && equals(buf, tokens[1], "graceful") { return .admin(.shutdown(graceful: true)) }
            return .admin(.shutdown(graceful: nil))
        }
        if equals(buf, cmd, "refresh_certs") {
            return .admin(.refreshCerts(noreply: noreplyAt()))
        }
        if equals(buf, cmd, "watch") {
            var classes: WatchClasses = []
            if ntokens > 2 {
                for t in tokens[1...] {
                    if equals(buf, t, "fetchers") { classes.insert(.fetchers) }
                    else if equals(buf, t, "mutations") { classes.insert(.mutations) }
                    else if equals(buf, t, "evictions") { classes.insert(.evictions) }
                    else if equals(buf, t, "deletions") { classes.insert(.deletions) }
                    else if equals(buf, t, "rawcmds") || equals(buf, t, "sysevents") || equals(buf, t, "connevents")
                                || equals(buf, t, "proxyreqs") || equals(buf, t, "proxyevents")
                                || equals(buf, t, "proxyuser") {
                        continue  // memcached's other classes: accepted, nothing to stream in Larder
                    } else {
                        return err(.unknownCommand)
                    }
                }
            } else {
                classes = .fetchers
            }
            return .admin(.watch(classes))
        }
        return nil
    }

    /// `stats cachedump <class> <limit>` (ntokens counts the terminal token).
    func parseCachedump(_ buf: UnsafeRawBufferPointer, ntokens: Int) -> Command {
        if ntokens < 5 { return .invalid(.cachedumpUsage, command: .stats, noreply: false) }
        guard let id = memcachedParseUInt32(slice(buf, tokens[2])), let limit = memcachedParseUInt32(slice(buf, tokens[3])) else {
            return .invalid(.badCommandLineFormat, command: .stats, noreply: false)
        }
        // memcached's MAX_NUMBER_OF_SLAB_CLASSES
        if id >= 64 { return .invalid(.illegalSlabId, command: .stats, noreply: false) }
        return .admin(.cachedump(slabClass: id, limit: limit))
    }
}

/// C's `strtod` acceptance as memcached's `safe_strtod` uses it: a number that consumes the
/// token (leading spaces allowed). Larder only needs to know whether it parses.
func parseCDouble(_ b: UnsafeRawBufferPointer) -> Bool {
    let s = String(decoding: b, as: UTF8.self)
    let trimmed = s.drop { $0 == " " || ($0 >= "\t" && $0 <= "\r") }
    return !trimmed.isEmpty && Double(trimmed) != nil
}
