// `--auth user:password`: memcached's ASCII authentication (-Y) on a freshly connected
// socket, before the load starts: a `set` whose data is `user password`, answered `STORED`.
#if canImport(Glibc)
import Glibc
#endif

/// Authenticates the connection (its socket still blocking; TLS or not) with `credentials`
/// ("user:password").
func authenticate(_ c: BenchConnection, _ credentials: String) throws {
    guard let colon = credentials.firstIndex(of: ":") else { throw BenchError(description: "--auth must be user:password") }
    let data = credentials[..<colon] + " " + credentials[credentials.index(after: colon)...]
    let request = Array("set auth 0 0 \(data.utf8.count)\r\n\(data)\r\n".utf8)
    var sent = 0
    while sent < request.count {
        let n = request[sent...].withUnsafeBytes { c.send($0.baseAddress!, $0.count) }
        if n <= 0 { throw BenchError(description: "authentication: send failed (errno \(errno))") }
        sent += n
    }
    var reply: [UInt8] = []
    var byte: UInt8 = 0
    while reply.last != 0x0A && reply.count < 256 {
        guard c.recv(&byte, 1) == 1 else { throw BenchError(description: "authentication: the server closed the connection") }
        reply.append(byte)
    }
    let line = String(decoding: reply, as: UTF8.self)
    guard line == "STORED\r\n" else { throw BenchError(description: "authentication refused: \(line.debugDescription)") }
}
