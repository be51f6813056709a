// The `-Y` auth file: `user:password` lines, memcached's format, read into a dictionary so a
// file of 10,000 users is looked up as fast as one of 8 (memcached keeps only the first 8
// entries and silently ignores the rest; Larder keeps them all). Where memcached 1.6.18
// refuses the file (a blank line, a comment, a line without ':'), so does Larder; where
// memcached starts with entries that can never authenticate (an empty file or a directory, an
// empty user or password, a space in one, which its `user password` block cannot carry) or
// misreads them (lines over 254 bytes), Larder refuses the file and names the line. Messages
// never quote the file. Passwords are compared in constant time.

/// The users of an auth file.
struct AuthUsers: Sendable {
    /// Passwords by user name; a user listed twice may use either password (as memcached).
    private let passwords: [[UInt8]: [[UInt8]]]
    /// Entries read (lines).
    let count: Int
    /// The longest entry memcached reads correctly: fgets into 256 bytes, newline and NUL.
    static let maxLineBytes = 254

    /// Parses an auth file's bytes; a message naming the line says what is wrong.
    static func parse(_ bytes: [UInt8]) throws(AuthFileError) -> AuthUsers {
        var table: [[UInt8]: [[UInt8]]] = [:]
        var count = 0
        if bytes.contains(0) { throw AuthFileError("contains a NUL byte; expected text lines user:password") }
        for (number, line) in SecretFile.lines(bytes) {
            func bad(_ why: String) -> AuthFileError { AuthFileError("line \(number) \(why)") }
            if line.isEmpty { throw bad("is empty; every line must be user:password (memcached refuses blank lines too)") }
            if line.count > maxLineBytes { throw bad("is longer than \(maxLineBytes) bytes (memcached misreads such lines)") }
            guard let colon = line.firstIndex(of: UInt8(ascii: ":")) else {
                throw bad("has no ':'; every line must be user:password (no comments; memcached refuses this file too)")
            }
            let user = Array(line[..<colon]), password = Array(line[(colon + 1)...])
            if user.isEmpty || password.isEmpty {
                throw bad("has an empty user name or password, which can never authenticate")
            }
            if user.contains(0x20) || password.contains(0x20) {
                throw bad("has a space in the user name or password, which the 'user password' auth request cannot carry")
            }
            table[user, default: []].append(password)
            count += 1
        }
        if count == 0 { throw AuthFileError("has no user:password line; nobody could authenticate") }
        return AuthUsers(passwords: table, count: count)
    }

    /// True if `user` is listed with `password`. Every password of the user is compared, in
    /// time that depends on the lengths only; an unknown user costs a comparison too.
    func check(user: UnsafeRawBufferPointer, password: UnsafeRawBufferPointer) -> Bool {
        let candidates = passwords[Array(user)] ?? []
        var ok = false
        for p in candidates {
            // Every candidate is compared: the comparison runs before `ok` is looked at.
            let equal = p.withUnsafeBytes { constantTimeEquals($0, password) }
            ok = ok || equal
        }
        if candidates.isEmpty { _ = constantTimeEquals(password, password) }
        return ok
    }

    /// Reads and parses the file at `path` (the `auth-file` setting, `-Y`).
    static func load(_ path: String) throws(ConfigError) -> AuthUsers {
        let bytes = try SecretFile.read(path, setting: "auth-file", flag: "-Y")
        do {
            return try parse(bytes)
        } catch {
            throw ConfigError(setting: "auth-file", source: "-Y \(path)", message: error.message)
        }
    }
}

/// What is wrong with an auth file (without its contents).
struct AuthFileError: Error, Equatable {
    let message: String
    init(_ message: String) { self.message = message }
}
