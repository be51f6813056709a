// The optional guard of the metrics endpoint, as Prometheus' own web.config.file guards its
// endpoints: a bearer token (`--metrics-token-file`; Prometheus scrapes with `authorization:
// credentials_file:`) and/or HTTP basic auth (`--metrics-auth-file`, `user:bcrypt-hash`
// lines as in web.config.file's basic_auth_users and htpasswd -B; Prometheus scrapes with
// `basic_auth:`). With both, either credential is accepted. Hashes only: a plain password in
// the file is refused, so the file is no more sensitive than /etc/shadow. bcrypt is verified by
// libxcrypt's crypt_r. A verified password is remembered per user (on the metrics thread
// only), so a scrape every 15 s costs one constant-time compare instead of a bcrypt run; a
// wrong one always costs a bcrypt run, and an unknown user costs one too (against another
// user's hash), so timing does not tell which users exist.
import CCrypt
import LarderProtocol
#if canImport(Glibc)
import Glibc
#endif

/// Credentials the metrics endpoint requires; immutable, replaced whole on SIGHUP.
struct MetricsGuard: Sendable {
    /// The bearer token, if `--metrics-token-file` is set.
    let token: [UInt8]?
    /// bcrypt hashes by user, if `--metrics-auth-file` is set.
    let users: [[UInt8]: [UInt8]]?
    /// Distinguishes one loaded set of credentials from the next (the verified-password
    /// cache is dropped when it changes).
    let generation: UInt64

    static let maxTokenBytes = 4096
    /// bcrypt cost factors above this are refused: each step doubles the time of a check
    /// (measured on the 2-core test machine: cost 10 about 0.2 s, 14 about 2.5 s), and every
    /// failed attempt pays it on the metrics thread.
    static let maxCost = 12

    /// The challenge of a 401, one per configured scheme.
    var challenges: [String] {
        (users != nil ? ["Basic realm=\"larder\", charset=\"UTF-8\""] : []) + (token != nil ? ["Bearer realm=\"larder\""] : [])
    }

    /// Reads the configured files; nil if neither is set.
    static func load(tokenFile: String?, authFile: String?) throws(ConfigError) -> MetricsGuard? {
        if tokenFile == nil && authFile == nil { return nil }
        var token: [UInt8]?
        if let tokenFile {
            let raw = try SecretFile.read(tokenFile, setting: "metrics-token-file", flag: "--metrics-token-file")
            do {
                token = try parseToken(raw)
            } catch {
                throw ConfigError(setting: "metrics-token-file", source: "--metrics-token-file \(tokenFile)", message: error.message)
            }
        }
        var users: [[UInt8]: [UInt8]]?
        if let authFile {
            let raw = try SecretFile.read(authFile, setting: "metrics-auth-file", flag: "--metrics-auth-file")
            do {
                users = try parseUsers(raw)
            } catch {
                throw ConfigError(setting: "metrics-auth-file", source: "--metrics-auth-file \(authFile)", message: error.message)
            }
        }
        return MetricsGuard(token: token, users: users, generation: nextGeneration())
    }

    private static let generations = Mutex()
    // nonisolated(unsafe): only read or written inside generations.withLock.
    nonisolated(unsafe) private static var lastGeneration: UInt64 = 0
    private static func nextGeneration() -> UInt64 {
        generations.withLock { lastGeneration += 1; return lastGeneration }
    }

    /// A token file: the token, surrounding whitespace dropped (as Prometheus reads
    /// `credentials_file`).
    static func parseToken(_ raw: [UInt8]) throws(AuthFileError) -> [UInt8] {
        var s = raw[...]
        while let f = s.first, isSpace(f) { s = s.dropFirst() }
        while let l = s.last, isSpace(l) { s = s.dropLast() }
        if s.isEmpty { throw AuthFileError("is empty; expected the bearer token") }
        if s.count > maxTokenBytes { throw AuthFileError("holds more than \(maxTokenBytes) bytes; expected one bearer token") }
        if s.contains(where: { isSpace($0) || $0 < 0x20 || $0 == 0x7F }) {
            throw AuthFileError("holds whitespace or control bytes inside the token; expected one bearer token")
        }
        return Array(s)
    }

    /// A basic-auth file: `user:hash` lines, hashes bcrypt (`$2a$`, `$2b$` or `$2y$`).
    static func parseUsers(_ raw: [UInt8]) throws(AuthFileError) -> [[UInt8]: [UInt8]] {
        var users: [[UInt8]: [UInt8]] = [:]
        for (number, line) in SecretFile.lines(raw) {
            func bad(_ why: String) -> AuthFileError { AuthFileError("line \(number) \(why)") }
            if line.isEmpty { throw bad("is empty; every line must be user:bcrypt-hash") }
            guard let colon = line.firstIndex(of: UInt8(ascii: ":")), colon > line.startIndex else {
                throw bad("is not user:bcrypt-hash")
            }
            let user = Array(line[..<colon]), hash = Array(line[(colon + 1)...])
            guard let cost = bcryptCost(hash) else {
                throw bad("does not hold a bcrypt hash ($2b$..., 60 characters; make one with htpasswd -nbB user password)")
            }
            if cost > maxCost { throw bad("has a bcrypt cost of \(cost); at most \(maxCost) (each failed request pays it)") }
            if users[user] != nil { throw bad("repeats a user name") }
            users[user] = hash
        }
        if users.isEmpty { throw AuthFileError("has no user:bcrypt-hash line") }
        return users
    }

    /// The cost of a well-formed bcrypt hash (`$2b$10$` + 53 characters of salt and hash).
    static func bcryptCost(_ h: [UInt8]) -> Int? {
        guard h.count == 60, h[0] == UInt8(ascii: "$"), h[1] == UInt8(ascii: "2"),
              [UInt8(ascii: "a"), UInt8(ascii: "b"), UInt8(ascii: "y")].contains(h[2]),
              h[3] == UInt8(ascii: "$"), h[6] == UInt8(ascii: "$") else { return nil }
        let d1 = Int(h[4]) - 0x30, d2 = Int(h[5]) - 0x30
        guard (0...9).contains(d1), (0...9).contains(d2) else { return nil }
        let alphabet = Set("./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789".utf8)
        guard h[7...].allSatisfy({ alphabet.contains($0) }) else { return nil }
        let cost = d1 * 10 + d2
        return (4...31).contains(cost) ? cost : nil
    }

    private static func isSpace(_ b: UInt8) -> Bool { b == 0x20 || (b >= 0x09 && b <= 0x0D) }
}

/// What an Authorization header asks for.
enum MetricsCredential: Equatable {
    case bearer([UInt8])
    case basic(user: [UInt8], password: [UInt8])

    /// Parses `Bearer <token>` or `Basic <base64(user:password)>` (scheme case-insensitive).
    init?(header: String) {
        let parts = header.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: true)
        guard parts.count == 2 else { return nil }
        let value = Array(parts[1].utf8).drop(while: { $0 == 0x20 })
        switch parts[0].lowercased() {
        case "bearer":
            self = .bearer(Array(value))
        case "basic":
            let encoded = Array(value)
            guard let decoded = encoded.withUnsafeBytes({ base64Decode($0) }),
                  let colon = decoded.firstIndex(of: UInt8(ascii: ":")) else { return nil }
            self = .basic(user: Array(decoded[..<colon]), password: Array(decoded[(colon + 1)...]))
        default:
            return nil
        }
    }
}

/// Checks requests against a `MetricsGuard`, remembering verified basic-auth passwords.
/// Used on the metrics thread only.
final class MetricsGate {
    private var verified: [[UInt8]: [UInt8]] = [:]
    private var generation: UInt64 = 0
    /// bcrypt runs allowed per second (wrong passwords must not keep a core busy).
    static let bcryptPerSecond = 2
    private var bcryptSecond: UInt64 = 0
    private var bcryptRuns = 0
    /// crypt_r's scratch area (about 32 KB), allocated once; `initialized` must start at 0.
    private let scratch: UnsafeMutablePointer<crypt_data>

    /// The current second (injectable for tests).
    private let second: () -> UInt64

    init(second: @escaping () -> UInt64 = { monotonicNanos() / 1_000_000_000 }) {
        self.second = second
        scratch = .allocate(capacity: 1)
        memset(scratch, 0, MemoryLayout<crypt_data>.size)
    }

    deinit { scratch.deallocate() }

    /// True if `header` (the request's Authorization, if any) satisfies `g`.
    func allows(_ header: String?, _ g: MetricsGuard) -> Bool {
        if g.generation != generation {
            verified.removeAll()
            generation = g.generation
        }
        guard let header, let credential = MetricsCredential(header: header) else { return false }
        switch credential {
        case .bearer(let presented):
            guard let token = g.token else { return false }
            return presented.withUnsafeBytes { p in token.withUnsafeBytes { constantTimeEquals(p, $0) } }
        case .basic(let user, let password):
            guard let users = g.users, let anyHash = users.first?.value else { return false }
            if let known = verified[user],
               known.withUnsafeBytes({ k in password.withUnsafeBytes { constantTimeEquals(k, $0) } }) {
                return true
            }
            // A bcrypt run costs up to ~0.8 s of a core: at most `bcryptPerSecond` a second,
            // whoever asks; past that, refused without hashing (a verified password is
            // remembered above, so a scraper that logged in once is not slowed).
            let now = second()
            if now != bcryptSecond { (bcryptSecond, bcryptRuns) = (now, 0) }
            guard bcryptRuns < MetricsGate.bcryptPerSecond else { return false }
            bcryptRuns += 1
            // An unknown user is checked against some other hash, so it costs the same time.
            let hash = users[user]
            let ok = bcryptMatches(password, hash ?? anyHash) && hash != nil
            if ok { verified[user] = password }
            return ok
        }
    }

    /// crypt_r(password, hash) == hash, compared in constant time.
    func bcryptMatches(_ password: [UInt8], _ hash: [UInt8]) -> Bool {
        // A NUL inside the password would end it early for crypt: such a password never matches.
        if password.contains(0) { return false }
        let phrase = password + [0], setting = hash + [0]
        let result: [UInt8]? = phrase.withUnsafeBufferPointer { p in
            setting.withUnsafeBufferPointer { s in
                p.withMemoryRebound(to: CChar.self) { pc in
                    s.withMemoryRebound(to: CChar.self) { sc in
                        guard let r = crypt_r(pc.baseAddress, sc.baseAddress, scratch) else { return nil }
                        return Array(UnsafeRawBufferPointer(start: r, count: strlen(r)))
                    }
                }
            }
        }
        guard let result, result.first != UInt8(ascii: "*") else { return false }
        return result.withUnsafeBytes { r in hash.withUnsafeBytes { constantTimeEquals(r, $0) } }
    }
}
