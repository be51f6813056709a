// One connection's TLS session: the OpenSSL SSL object over the connection's socket, driven
// without blocking from the worker's event loop. Each call says what OpenSSL is waiting for
// (WANT_READ: the socket must become readable; WANT_WRITE: writable), and the connection
// arms that libevent event. Owned by one connection, on one worker thread.
import COpenSSL
#if canImport(Glibc)
import Glibc
#endif

final class TLSStream {
    private let ssl: OpaquePointer
    private(set) var handshakeDone = false
    /// A fatal error happened: no close_notify may follow.
    private var broken = false
    /// When the handshake started (monotonic ns), for the handshake timeout.
    let startedAt = monotonicNanos()

    enum IO: Equatable {
        /// Bytes moved (> 0).
        case bytes(Int)
        case wantRead, wantWrite
        /// The peer closed the TLS session (close_notify) or the socket.
        case closed
        case failed
    }

    init?(context: TLSContext, fd: Int32) {
        guard let s = context.newSession() else { return nil }
        ssl = s
        guard SSL_set_fd(ssl, fd) == 1 else {
            SSL_free(ssl)
            return nil
        }
        SSL_set_accept_state(ssl)
    }

    deinit { SSL_free(ssl) }

    private func classify(_ rc: Int32) -> IO {
        switch SSL_get_error(ssl, rc) {
        case SSL_ERROR_WANT_READ: return .wantRead
        case SSL_ERROR_WANT_WRITE: return .wantWrite
        case SSL_ERROR_ZERO_RETURN: return .closed
        case SSL_ERROR_SYSCALL:
            ERR_clear_error()
            if errno == EAGAIN || errno == EINTR { return .wantRead }
            broken = true
            return .closed
        default:
            ERR_clear_error()
            broken = true
            return .failed
        }
    }

    /// Advances the handshake: `.bytes(0)` when it is complete.
    func handshake() -> IO {
        let rc = SSL_do_handshake(ssl)
        if rc == 1 {
            handshakeDone = true
            return .bytes(0)
        }
        return classify(rc)
    }

    func read(_ p: UnsafeMutableRawPointer, _ count: Int) -> IO {
        let rc = SSL_read(ssl, p, Int32(min(count, Int(Int32.max))))
        return rc > 0 ? .bytes(Int(rc)) : classify(rc)
    }

    /// With SSL_MODE_ENABLE_PARTIAL_WRITE: returns after at least one record went out.
    func write(_ p: UnsafeRawPointer, _ count: Int) -> IO {
        let rc = SSL_write(ssl, p, Int32(min(count, Int(Int32.max))))
        return rc > 0 ? .bytes(Int(rc)) : classify(rc)
    }

    /// Input OpenSSL holds (decrypted, or records read ahead from the socket) that the
    /// socket's readiness will not announce.
    var hasPending: Bool { SSL_has_pending(ssl) == 1 }

    /// Sends close_notify, best effort (the socket is about to close).
    func shutdown() {
        if handshakeDone && !broken { _ = SSL_shutdown(ssl) }
        ERR_clear_error()
    }

    /// The TLS version negotiated (for `stats conns`-like reporting and logs).
    var version: String { String(cString: SSL_get_version(ssl)) }
}
