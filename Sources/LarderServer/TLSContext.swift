// The server's OpenSSL context: built from the TLS settings at start (every file checked, a
// bad one refused naming its setting), and rebuilt by `refresh_certs` or SIGHUP. A reload
// swaps the context new connections are made from; a connection keeps the context it started
// with (OpenSSL counts its references), so nothing open is dropped.
import COpenSSL
#if canImport(Glibc)
import Glibc
#endif

final class TLSContext: @unchecked Sendable {
    // @unchecked Sendable: `current` is read and replaced only under `lock`; an SSL_CTX is
    // safe to use from several threads once configured (OpenSSL locks its shared parts), and
    // it is never changed after `build` returns.
    let settings: TLSSettings
    private let lock = Mutex()
    nonisolated(unsafe) private var current: OpaquePointer
    /// When the certificate was last (re)loaded (CLOCK_REALTIME seconds); read and written
    /// under `lock` after init, like `current`.
    nonisolated(unsafe) private var loadedAt: Int
    /// What OpenSSL holds per TLS connection, charged to the client-memory budget. Measured:
    /// an idle TLS connection costs 23.5 KB of RSS more than a plain one (500 of each,
    /// release build). While a record is being read or written its ~17 KB buffer comes on
    /// top; SSL_MODE_RELEASE_BUFFERS frees both buffers as soon as they are empty. 40 KB
    /// covers the idle state plus one buffer in use, and keeps an idle TLS connection
    /// (with its 16 KB input buffer and 3 KB of state) under ClientMemory.protectedBytes.
    static let perConnectionBytes = 40 * 1024

    init(_ settings: TLSSettings) throws(ConfigError) {
        self.settings = settings
        current = try TLSContext.build(settings)
        loadedAt = time(nil)
    }

    deinit { SSL_CTX_free(current) }

    /// A new server-side SSL object for an accepted connection, from the current context.
    func newSession() -> OpaquePointer? {
        lock.withLock { SSL_new(current) }
    }

    /// Re-reads the certificate, key and CA files; on any error keeps the old context and
    /// returns the error.
    func reload() -> ConfigError? {
        do {
            let fresh = try TLSContext.build(settings)
            let old = lock.withLock { () -> OpaquePointer in
                let o = current
                current = fresh
                loadedAt = time(nil)
                return o
            }
            SSL_CTX_free(old)  // connections made from it hold their own references
            return nil
        } catch {
            return error
        }
    }

    var secondsSinceLoad: Int { time(nil) - lock.withLock { loadedAt } }

    private static func fail(_ setting: String, _ message: String) -> ConfigError {
        ConfigError(setting: setting, source: "TLS configuration", message: message)
    }

    /// The last OpenSSL error, for messages.
    static func opensslError() -> String {
        var buf = [CChar](repeating: 0, count: 256)
        larder_ssl_error_text(&buf, buf.count)
        let s = buf.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        return s.isEmpty ? "unknown OpenSSL error" : s
    }

    /// Checks that `path` is a readable regular file; for a private key also that neither
    /// group nor others may read it.
    private static func checkFile(_ path: String, setting: String, isKey: Bool) throws(ConfigError) {
        var st = stat()
        guard stat(path, &st) == 0 else {
            throw fail(setting, "\(path): \(String(cString: strerror(errno)))")
        }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw fail(setting, "\(path) is not a regular file") }
        guard access(path, R_OK) == 0 else {
            throw fail(setting, "\(path) is not readable by this user (\(String(cString: strerror(errno))))")
        }
        if isKey && st.st_mode & 0o044 != 0 {
            let mode = String(st.st_mode & 0o777, radix: 8)
            throw fail(setting, "private key \(path) is readable by group or others (mode \(mode)); "
                + "make it readable by its owner only: chmod 600 \(path)")
        }
    }

    /// A configured SSL_CTX, or an error naming the setting at fault.
    static func build(_ s: TLSSettings) throws(ConfigError) -> OpaquePointer {
        guard let chain = s.chainCert else { throw fail("ssl_chain_cert", "not set (-o ssl_chain_cert=<file>)") }
        let key = s.key ?? chain
        let keySetting = s.key == nil ? "ssl_chain_cert" : "ssl_key"
        try checkFile(chain, setting: "ssl_chain_cert", isKey: s.key == nil)
        if s.key != nil { try checkFile(key, setting: "ssl_key", isKey: true) }
        if let ca = s.caCert { try checkFile(ca, setting: "ssl_ca_cert", isKey: false) }
        ERR_clear_error()
        guard let ctx = SSL_CTX_new(TLS_server_method()) else { throw fail("enable-ssl", "SSL_CTX_new: \(opensslError())") }
        var ok = false
        defer { if !ok { SSL_CTX_free(ctx) } }
        guard SSL_CTX_use_certificate_chain_file(ctx, chain) == 1 else {
            throw fail("ssl_chain_cert", "\(chain): not a PEM certificate chain (\(opensslError()))")
        }
        guard SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) == 1 else {
            let why = opensslError()
            if why.hasSuffix(":key values mismatch") { throw fail(keySetting, "\(key) does not match the certificate in \(chain)") }
            throw fail(keySetting, "\(key): not a PEM private key (\(why))")
        }
        guard SSL_CTX_check_private_key(ctx) == 1 else {
            throw fail(keySetting, "\(key) does not match the certificate in \(chain)")
        }
        let version = s.minVersion == .tls13 ? larder_ssl_version_tls13() : larder_ssl_version_tls12()
        guard larder_ssl_ctx_set_min_proto(ctx, version) == 1 else {
            throw fail("ssl_min_version", "\(s.minVersion.rawValue) not supported by this OpenSSL")
        }
        if let c = s.ciphers, SSL_CTX_set_cipher_list(ctx, c) != 1 {
            throw fail("ssl_ciphers", "'\(c)' selects no cipher OpenSSL knows (\(opensslError()))")
        }
        if let ca = s.caCert {
            guard SSL_CTX_load_verify_locations(ctx, ca, nil) == 1 else {
                throw fail("ssl_ca_cert", "\(ca): not a PEM CA certificate (\(opensslError()))")
            }
            guard let names = SSL_load_client_CA_file(ca) else {
                throw fail("ssl_ca_cert", "\(ca): no CA names in it (\(opensslError()))")
            }
            SSL_CTX_set_client_CA_list(ctx, names)
        }
        var mode: Int32 = SSL_VERIFY_NONE
        switch s.verifyMode {
        case 1: mode = SSL_VERIFY_PEER
        case 2: mode = SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT
        case 3: mode = SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT | SSL_VERIFY_CLIENT_ONCE
        default: break
        }
        SSL_CTX_set_verify(ctx, mode, nil)
        // Partial writes: SSL_write returns after each record, so the output queue advances by
        // what went out; a retry may pass a moved buffer (the reply text may have grown).
        // Release buffers: the 17 KB record buffers are freed whenever they are empty.
        _ = larder_ssl_ctx_set_mode(ctx, larder_mode_partial_write() | larder_mode_release_buffers())
        // No renegotiation (a client-triggered CPU cost), no compression (CRIME).
        _ = larder_ssl_ctx_set_options(ctx, larder_op_no_renegotiation())
        _ = larder_ssl_ctx_sess_off(ctx)
        // Read ahead: one read() takes every record the socket has (not a header, then a
        // body, per record); the connection drains them while SSL_has_pending says so.
        _ = larder_ssl_ctx_read_ahead(ctx)
        ok = true
        return ctx
    }
}
