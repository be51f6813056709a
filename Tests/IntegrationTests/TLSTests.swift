// TLS connections against the real binary, driven with `openssl s_client` (several at once
// over two workers, a certificate reload among them) beside a plain client and broken TLS
// clients, so that scripts/sanitize runs the TLS paths under TSan and ASan. The Python suite
// (tests/python/test_tls.py) covers the behaviour in detail.
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// A CA and a localhost server certificate made with the openssl command in a fresh directory.
private struct TestCerts {
    let dir: String

    init() throws {
        dir = NSTemporaryDirectory() + "larder-tls-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o755])
        try run(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
                 "-days", "2", "-subj", "/CN=test ca"])
        try run(["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
                 "-subj", "/CN=localhost"])
        try "subjectAltName=DNS:localhost,IP:127.0.0.1\n".write(toFile: dir + "/san.ext", atomically: true, encoding: .utf8)
        try run(["x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", "server.crt", "-days", "2", "-extfile", "san.ext"])
        chmod(dir + "/server.key", 0o600)
        // Larder re-reads them as nobody (-u) when the tests run as root.
        if getuid() == 0 { for f in ["server.crt", "server.key"] { chown(dir + "/" + f, 65534, UInt32.max) } }
    }

    private func run(_ args: [String]) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
        p.arguments = args
        p.currentDirectoryURL = URL(fileURLWithPath: dir)
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else { throw TLSTestError.openssl(args.joined(separator: " ")) }
    }

    var serverArgs: [String] {
        ["-Z", "-o", "ssl_chain_cert=\(dir)/server.crt,ssl_key=\(dir)/server.key,ssl_handshake_timeout=2"]
    }

    func remove() { try? FileManager.default.removeItem(atPath: dir) }
}

private enum TLSTestError: Error { case openssl(String) }

/// Runs `openssl s_client` with `input` (ending in quit) and returns its stdout.
private func sClient(port: Int, ca: String, input: String) throws -> String {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
    p.arguments = ["s_client", "-quiet", "-connect", "127.0.0.1:\(port)", "-CAfile", ca, "-verify_return_error"]
    let inPipe = Pipe(), outPipe = Pipe()
    p.standardInput = inPipe
    p.standardOutput = outPipe
    p.standardError = FileHandle.nullDevice
    try p.run()
    inPipe.fileHandleForWriting.write(Data(input.utf8))
    // s_client exits on the server's close after quit; the pipe stays open until then.
    let out = outPipe.fileHandleForReading.readDataToEndOfFile()
    inPipe.fileHandleForWriting.closeFile()
    p.waitUntilExit()
    return String(decoding: out, as: UTF8.self)
}

@Suite("TLS", .serialized)
struct TLSTests {
    @Test("s_client sessions in parallel, a reload among them, beside plain and broken clients")
    func sessions() throws {
        let certs = try TestCerts()
        defer { certs.remove() }
        let plainPort = freePort()
        let s = try ServerProcess.larder(["-t", "2", "-l", "127.0.0.1,notls:127.0.0.1:\(plainPort)"] + certs.serverArgs)
        defer { s.stop() }
        let ca = certs.dir + "/ca.crt"
        // Broken clients first: plain text on the TLS port, garbage, a handshake left halfway.
        let plainOnTLS = try TestClient(port: s.port)
        try plainOnTLS.send("get a\r\n")
        #expect(try plainOnTLS.readToEOF(timeout: 10).isEmpty)
        let garbage = try TestClient(port: s.port)
        try garbage.send(Array(repeating: 0x41, count: 2000))
        let stalled = try TestClient(port: s.port)
        try stalled.send([0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        // Eight TLS sessions at once, each pipelining its own keys; one also reloads.
        let results = ResultBox()
        DispatchQueue.concurrentPerform(iterations: 8) { i in
            var input = ""
            for k in 0..<50 { input += "set k\(i)-\(k) 0 0 \(k + 1)\r\n\(String(repeating: "v", count: k + 1))\r\n" }
            for k in 0..<50 { input += "get k\(i)-\(k)\r\n" }
            if i == 3 { input += "refresh_certs\r\n" }
            input += "quit\r\n"
            results.append(Array(((try? sClient(port: s.port, ca: ca, input: input)) ?? "session \(i) failed").utf8))
        }
        let outputs = results.all.map(\.text)
        #expect(outputs.count == 8)
        for i in 0..<8 {
            let out = outputs.first { $0.hasPrefix("STORED") && $0.contains("VALUE k\(i)-0 ") } ?? "no output for session \(i)"
            #expect(out.components(separatedBy: "STORED\r\n").count == 51, "session \(i): \(out.prefix(200))")
            #expect(out.contains("VALUE k\(i)-49 0 50\r\n\(String(repeating: "v", count: 50))\r\nEND\r\n"))
            if i == 3 { #expect(out.hasSuffix("OK\r\n")) }
        }
        // The plain listener serves the same store.
        let plain = try TestClient(port: plainPort)
        #expect(try plain.request("get k0-0\r\n", until: "END\r\n") == "VALUE k0-0 0 1\r\nv\r\nEND\r\n")
        // The stalled handshake is closed by the timeout (2 s); garbage was refused at once.
        #expect(try stalled.readToEOF(timeout: 10).isEmpty)
        _ = try? garbage.readToEOF(timeout: 10)
        let st = try stats(port: plainPort)
        #expect(Int(st["ssl_handshake_errors"] ?? "0")! >= 3)
        #expect(Int(st["ssl_handshakes"] ?? "0")! >= 8)
    }
}
