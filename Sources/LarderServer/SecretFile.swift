// Reading the files that hold secrets: the `-Y` auth file and the metrics endpoint's token
// and basic-auth files. One policy for all of them: a regular file (a symlink to one is fine,
// as Kubernetes mounts secrets), of bounded size, not readable or writable by other users
// (memcached does not check; Larder refuses, as it refuses private keys readable by others,
// and says how to fix the mode), read whole. Errors name the setting and the file and never
// quote the contents.
#if canImport(Glibc)
import Glibc
#endif

enum SecretFile {
    /// Largest secret file read: 10,000 users of an auth file take about 300 KB.
    static let maxBytes = 4 * 1024 * 1024

    /// The bytes of the file at `path`, or a `ConfigError` naming `setting` (as written
    /// in `flag`, e.g. "-Y") that says what is wrong.
    static func read(_ path: String, setting: String, flag: String) throws(ConfigError) -> [UInt8] {
        func fail(_ message: String) -> ConfigError {
            ConfigError(setting: setting, source: "\(flag) \(path)", message: message)
        }
        if path.isEmpty { throw fail("no file given") }
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        if fd < 0 {
            let e = errno
            var hint = ""
            if e == EACCES {
                // Read after privileges are dropped (as memcached does), so the -u user needs it.
                let name = getpwuid(geteuid()).map { String(cString: $0.pointee.pw_name) } ?? "uid \(geteuid())"
                hint = " (Larder reads it as user \(name), after dropping privileges: make that user its owner, e.g. chown \(name) \(path); chmod 600 \(path))"
            }
            throw fail("cannot open the file: \(String(cString: strerror(e)))\(hint)")
        }
        defer { _ = close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw fail("cannot stat the file: \(String(cString: strerror(errno)))") }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw fail("not a regular file") }
        if st.st_mode & (S_IROTH | S_IWOTH) != 0 {
            let mode = "0" + String(st.st_mode & 0o777, radix: 8)
            throw fail("the file holds secrets but other users may read or write it (mode \(mode)); fix with: chmod o-rwx \(path)")
        }
        guard st.st_size <= maxBytes else { throw fail("larger than \(maxBytes >> 20) MB; not a credentials file") }
        var bytes = [UInt8](repeating: 0, count: Int(st.st_size))
        var got = 0
        while got < bytes.count {
            let n = bytes.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress! + got, $0.count - got) }
            if n < 0 && errno == EINTR { continue }
            if n < 0 { throw fail("cannot read the file: \(String(cString: strerror(errno)))") }
            if n == 0 { break }
            got += n
        }
        bytes.removeSubrange(got...)
        return bytes
    }

    /// The lines of `bytes` (split on `\n`, a trailing `\r` dropped), numbered from 1; a
    /// final newline does not start another line.
    static func lines(_ bytes: [UInt8]) -> [(number: Int, bytes: ArraySlice<UInt8>)] {
        var out: [(Int, ArraySlice<UInt8>)] = []
        var start = 0
        var number = 1
        while start < bytes.count {
            let nl = bytes[start...].firstIndex(of: 0x0A) ?? bytes.count
            var line = bytes[start..<nl]
            if line.last == 0x0D { line = line.dropLast() }
            out.append((number, line))
            number += 1
            start = nl + 1
        }
        return out
    }
}

/// Compares a secret in time that depends only on the two lengths, never on where the bytes
/// first differ: every byte up to the longer length is read and folded into one difference.
@inline(never)
func constantTimeEquals(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> Bool {
    let n = max(a.count, b.count)
    var diff = UInt(bitPattern: a.count ^ b.count)
    var i = 0
    while i < n {
        // Past the end of the shorter one, compare against 0 (the lengths already differ).
        let x = i < a.count ? a[i] : 0
        let y = i < b.count ? b[i] : 0
        diff |= UInt(x ^ y)
        i += 1
    }
    return diff == 0
}

/// A value read from secret files that SIGHUP may replace while other threads read it.
final class Reloadable<Value: Sendable>: @unchecked Sendable {
    // @unchecked Sendable: `value` is only read or written under `lock`.
    private let lock = Mutex()
    private var value: Value
    init(_ value: Value) { self.value = value }
    var current: Value { lock.withLock { value } }
    func replace(_ v: Value) { lock.withLock { value = v } }
}
