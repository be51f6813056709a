// The Prometheus endpoint: libevent's evhttp on its own thread and event_base, so a scrape
// never runs on a cache worker. GET /metrics answers the text format (HEAD the same headers,
// no body); other paths 404. It is not an attack surface: headers are capped at 8 KB (an
// endless header line is cut there, so it is never rescanned at length), a request body is
// refused outright (a scrape has none, so nothing is ever buffered), a connection idle or
// slow for 10 s is closed, at most 16 connections are served at once (more wait in the
// kernel's backlog while the listener is disabled), and when the process is out of
// descriptors the listener is disabled for a back-off and the fact logged once per interval,
// instead of evhttp's default of retrying and logging every failed accept. With
// --metrics-tls each connection is an OpenSSL bufferevent over the -Z certificate (reloads
// included), so the endpoint speaks only HTTPS.
// --metrics-token-file or --metrics-auth-file every request must carry credentials
// (MetricsGuard.swift), or gets 401 with a WWW-Authenticate challenge.
import CLibevent
import COpenSSL
import LarderStore
import Logging
#if canImport(Glibc)
import Glibc
#endif

final class MetricsServer: @unchecked Sendable {
    // @unchecked Sendable: base, http, listener, the tracked bufferevents and the back-off
    // state are used on the metrics thread only, after `start` (init runs before the thread
    // exists); `stop` reaches that thread through event_base_loopexit, which is thread-safe.
    let context: ServerContext
    private let logger: Logger
    private let base: OpaquePointer
    private let http: OpaquePointer
    private let listener: OpaquePointer
    private var thread: pthread_t?
    /// Re-enables the listener after an EMFILE back-off or once a connection slot frees.
    private var resumeEvent: OpaquePointer?
    private var tickEvent: OpaquePointer?
    /// Bufferevents of the connections evhttp serves, each with an extra reference taken when
    /// evhttp asked for it: the struct stays valid (not the connection) until we drop it, so
    /// we can see evhttp has freed it (its callbacks are cleared) and count what is live.
    private var tracked: [OpaquePointer] = []
    private var listening = true
    private var backoff = Server.minAcceptBackoff
    private var lastDescriptorLog: UInt64 = 0
    let port: Int
    /// The context HTTPS connections are made from; nil for plain HTTP.
    private let tls: TLSContext?
    /// The token and/or basic-auth users requests must present (nil: none); replaced on SIGHUP.
    let credentials = Reloadable<MetricsGuard?>(nil)
    /// Checks credentials, remembering verified passwords (metrics thread only).
    private let gate = MetricsGate()

    /// Most metrics connections served at once; a Prometheus server keeps one per target.
    static let maxConnections = 16
    /// Longest request head (request line and headers) accepted.
    static let maxHeaderBytes = 8 * 1024
    /// A connection idle, or sending or reading this slowly, for this long is closed.
    static let timeoutSeconds: Int32 = 10

    init(context: ServerContext, address: String, port: Int, logger: Logger) throws {
        self.context = context
        self.logger = logger
        tls = context.config.tls.metrics ? context.tls : nil
        base = try Libevent.newBase()
        guard let h = evhttp_new(base) else { throw LibeventError(call: "evhttp_new") }
        http = h
        let (fd, bound) = try Server.bindListener(address: address, port: port, backlog: 64)
        self.port = bound
        // Our own listener (evhttp's would log and retry every failed accept): backlog 0
        // because the socket already listens; the listener closes it when freed.
        guard let lev = evconnlistener_new(base, nil, nil, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 0, fd) else {
            _ = Glibc.close(fd)
            throw LibeventError(call: "evconnlistener_new")
        }
        listener = lev
        guard evhttp_bind_listener(http, lev) != nil else { throw LibeventError(call: "evhttp_bind_listener") }
        // evhttp set itself as the listener's callback (user data: the evhttp); keep the
        // accept path, add our error path. The evhttp pointer leads back here through a
        // registry because the error callback only receives the listener's user data.
        MetricsServer.registry.withLock { MetricsServer.servers[UnsafeRawPointer(http)] = Unmanaged.passUnretained(self) }
        evconnlistener_set_error_cb(lev, metricsAcceptError)
        evhttp_set_max_headers_size(http, MetricsServer.maxHeaderBytes)
        evhttp_set_max_body_size(http, 0)
        evhttp_set_timeout(http, MetricsServer.timeoutSeconds)
        evhttp_set_allowed_methods(http, UInt16(EVHTTP_REQ_GET.rawValue | EVHTTP_REQ_HEAD.rawValue))
        let arg = Unmanaged.passUnretained(self).toOpaque()
        evhttp_set_bevcb(http, metricsNewConnection, arg)
        evhttp_set_gencb(http, metricsRequest, arg)
        resumeEvent = try Libevent.newEvent(base, fd: -1, what: 0, arg: arg, metricsResume)
        tickEvent = try Libevent.newEvent(base, fd: -1, what: Libevent.persist, arg: arg, metricsTick)
    }

    func start() {
        Libevent.add(tickEvent!, timeoutSeconds: 1)
        thread = startThread(name: "larder-metrics") { [self] in
            event_base_loop(base, Int32(EVLOOP_NO_EXIT_ON_EMPTY))
        }
    }

    func stop() {
        event_base_loopexit(base, nil)
        if let t = thread { pthread_join(t, nil) }
        MetricsServer.registry.withLock { _ = MetricsServer.servers.removeValue(forKey: UnsafeRawPointer(http)) }
        if let e = resumeEvent { Libevent.free(e) }
        if let e = tickEvent { Libevent.free(e) }
        evhttp_free(http)
        for bev in tracked { _ = bufferevent_decref(bev) }
        tracked.removeAll()
        event_base_free(base)
    }

    // MARK: - Connection limit and descriptor back-off

    /// evhttp is about to serve a new connection: make its bufferevent, count it, and stop
    /// accepting once the limit is reached. Without BEV_OPT_CLOSE_ON_FREE evhttp closes the
    /// descriptor itself as soon as it is done, whatever reference we still hold.
    fileprivate func newConnection() -> OpaquePointer? {
        prune()
        let made: OpaquePointer?
        if let tls {
            // The bufferevent owns the SSL object and, with CLOSE_ON_FREE, the descriptor
            // (evhttp then leaves closing it to the bufferevent's last reference).
            guard let ssl = tls.newSession() else { return nil }
            SSL_set_verify(ssl, SSL_VERIFY_NONE, nil)  // scrapers need no client certificate
            // TLS 1.2 at most here: with TLS 1.3 the client's request arrives together with its
            // Finished message, and libevent 2.1's OpenSSL bufferevent leaves it inside OpenSSL
            // unannounced (measured: half of curl's scrapes hung). In TLS 1.2 the client waits
            // for the server's Finished before sending. (The cache port is Larder's own code.)
            _ = larder_ssl_set_max_tls12(ssl)
            made = bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                                  Int32(BEV_OPT_CLOSE_ON_FREE.rawValue))
            if made == nil { SSL_free(ssl) }
            if let bev = made { bufferevent_openssl_set_allow_dirty_shutdown(bev, 1) }
        } else {
            made = bufferevent_socket_new(base, -1, 0)
        }
        guard let bev = made else { return nil }
        bufferevent_incref(bev)
        tracked.append(bev)
        if tracked.count >= MetricsServer.maxConnections { pauseListening(retryIn: 0.1) }
        return bev
    }

    /// Drops the bufferevents evhttp has freed (their callbacks are cleared on free).
    private func prune() {
        tracked.removeAll { bev in
            var r: bufferevent_data_cb?
            var w: bufferevent_data_cb?
            var e: bufferevent_event_cb?
            var a: UnsafeMutableRawPointer?
            bufferevent_getcb(bev, &r, &w, &e, &a)
            if e != nil { return false }
            _ = bufferevent_decref(bev)
            return true
        }
    }

    private func pauseListening(retryIn seconds: Double) {
        if listening {
            evconnlistener_disable(listener)
            listening = false
        }
        Libevent.add(resumeEvent!, timeoutSeconds: seconds)
    }

    fileprivate func resume() {
        prune()
        if tracked.count >= MetricsServer.maxConnections {
            Libevent.add(resumeEvent!, timeoutSeconds: 0.1)
            return
        }
        if !listening {
            evconnlistener_enable(listener)
            listening = true
        }
    }

    /// accept failed with something other than EAGAIN/EINTR (EMFILE, ENFILE, ...).
    fileprivate func acceptFailed() {
        let e = errno
        context.connections.listenDisabled.wrappingIncrement(ordering: .relaxed)
        let now = monotonicNanos()
        if lastDescriptorLog == 0 || now &- lastDescriptorLog > Server.logInterval * 1_000_000_000 {
            logger.warning("metrics accept: \(String(cString: strerror(e))): pausing the metrics listener for a moment")
            lastDescriptorLog = now
        }
        pauseListening(retryIn: backoff)
        backoff = min(backoff * 2, Server.maxAcceptBackoff)
    }

    fileprivate func tick() {
        prune()
        if listening { backoff = Server.minAcceptBackoff }
    }

    // MARK: - Requests

    fileprivate func handle(_ req: OpaquePointer) {
        // Release the references of finished connections soon after each request.
        prune()
        let uri = evhttp_request_get_uri(req).map { String(cString: $0) } ?? ""
        let path = uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? uri
        let isHead = evhttp_request_get_command(req) == EVHTTP_REQ_HEAD
        guard let body = evbuffer_new() else {
            evhttp_send_error(req, 500, nil)
            return
        }
        defer { evbuffer_free(body) }
        let headers = evhttp_request_get_output_headers(req)
        let text: String
        let code: Int32
        let reason: String
        if let g = credentials.current,
           !gate.allows(evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization").map { String(cString: $0) }, g) {
            // Every path, so an unauthenticated client learns nothing; never logged per request.
            context.connections.metricsAuthFailures.wrappingIncrement(ordering: .relaxed)
            for c in g.challenges { evhttp_add_header(headers, "WWW-Authenticate", c) }
            evhttp_add_header(headers, "Content-Type", "text/plain; charset=utf-8")
            text = "unauthorized: this endpoint requires credentials\n"
            (code, reason) = (401, "Unauthorized")
        } else if path == "/metrics" {
            text = MetricsPage.render(context)
            evhttp_add_header(headers, "Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            (code, reason) = (200, "OK")
        } else {
            text = "not found: try /metrics\n"
            evhttp_add_header(headers, "Content-Type", "text/plain; charset=utf-8")
            (code, reason) = (404, "Not Found")
        }
        if isHead {
            // The headers a GET would get, no body (evhttp would otherwise send it).
            evhttp_add_header(headers, "Content-Length", "\(text.utf8.count)")
            evhttp_send_reply(req, code, reason, nil)
        } else {
            _ = text.withCString { evbuffer_add(body, $0, strlen($0)) }
            evhttp_send_reply(req, code, reason, body)
        }
    }

    /// evhttp pointer -> server, for the listener's error callback.
    private static let registry = Mutex()
    // nonisolated(unsafe): only read or written inside registry.withLock.
    nonisolated(unsafe) private static var servers: [UnsafeRawPointer: Unmanaged<MetricsServer>] = [:]

    fileprivate static func server(forHTTP p: UnsafeMutableRawPointer?) -> MetricsServer? {
        guard let p else { return nil }
        return registry.withLock { servers[UnsafeRawPointer(p)]?.takeUnretainedValue() }
    }
}

private func metricsRequest(_ req: OpaquePointer?, _ arg: UnsafeMutableRawPointer?) {
    guard let req, let arg else { return }
    Unmanaged<MetricsServer>.fromOpaque(arg).takeUnretainedValue().handle(req)
}

private func metricsNewConnection(_ base: OpaquePointer?, _ arg: UnsafeMutableRawPointer?) -> OpaquePointer? {
    guard let arg else { return nil }
    return Unmanaged<MetricsServer>.fromOpaque(arg).takeUnretainedValue().newConnection()
}

private func metricsAcceptError(_ lev: OpaquePointer?, _ arg: UnsafeMutableRawPointer?) {
    MetricsServer.server(forHTTP: arg)?.acceptFailed()
}

private func metricsResume(_ fd: Int32, _ what: Int16, _ arg: UnsafeMutableRawPointer?) {
    Unmanaged<MetricsServer>.fromOpaque(arg!).takeUnretainedValue().resume()
}

private func metricsTick(_ fd: Int32, _ what: Int16, _ arg: UnsafeMutableRawPointer?) {
    Unmanaged<MetricsServer>.fromOpaque(arg!).takeUnretainedValue().tick()
}
