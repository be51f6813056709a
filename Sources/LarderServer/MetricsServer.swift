// The Prometheus endpoint: libevent's evhttp on its own thread and event_base, so a scrape
// never runs on a cache worker. GET /metrics answers the text format; other paths 404.
import CLibevent
import LarderStore
import Logging
#if canImport(Glibc)
import Glibc
#endif

final class MetricsServer: @unchecked Sendable {
    // @unchecked Sendable: base and http are used on the metrics thread only, after `start`;
    // `stop` reaches that thread through event_base_loopexit, which is thread-safe.
    let context: ServerContext
    private let base: OpaquePointer
    private let http: OpaquePointer
    private var thread: pthread_t?
    let port: Int

    init(context: ServerContext, address: String, port: Int) throws {
        self.context = context
        base = try Libevent.newBase()
        guard let h = evhttp_new(base) else { throw LibeventError(call: "evhttp_new") }
        http = h
        guard let handle = evhttp_bind_socket_with_handle(http, address, UInt16(port)) else {
            throw ServerError.system("bind metrics \(address):\(port)", errno)
        }
        let fd = evhttp_bound_socket_get_fd(handle)
        var ss = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = withUnsafeMutablePointer(to: &ss) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        let isV6 = ss.ss_family == sa_family_t(AF_INET6)
        self.port = withUnsafePointer(to: &ss) { p in
            isV6
                ? p.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { Int(UInt16(bigEndian: $0.pointee.sin6_port)) }
                : p.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { Int(UInt16(bigEndian: $0.pointee.sin_port)) }
        }
        evhttp_set_allowed_methods(http, UInt16(EVHTTP_REQ_GET.rawValue | EVHTTP_REQ_HEAD.rawValue))
        evhttp_set_gencb(http, metricsRequest, Unmanaged.passUnretained(self).toOpaque())
    }

    func start() {
        thread = startThread(name: "larder-metrics") { [self] in
            event_base_loop(base, Int32(EVLOOP_NO_EXIT_ON_EMPTY))
        }
    }

    func stop() {
        event_base_loopexit(base, nil)
        if let t = thread { pthread_join(t, nil) }
        evhttp_free(http)
        event_base_free(base)
    }

    fileprivate func handle(_ req: OpaquePointer) {
        let uri = evhttp_request_get_uri(req).map { String(cString: $0) } ?? ""
        let path = uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? uri
        guard let body = evbuffer_new() else {
            evhttp_send_error(req, 500, nil)
            return
        }
        defer { evbuffer_free(body) }
        if path == "/metrics" {
            let text = MetricsPage.render(context)
            _ = text.withCString { evbuffer_add(body, $0, strlen($0)) }
            evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            evhttp_send_reply(req, 200, "OK", body)
        } else {
            _ = "not found: try /metrics\n".withCString { evbuffer_add(body, $0, strlen($0)) }
            evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "text/plain; charset=utf-8")
            evhttp_send_reply(req, 404, "Not Found", body)
        }
    }
}

private func metricsRequest(_ req: OpaquePointer?, _ arg: UnsafeMutableRawPointer?) {
    guard let req, let arg else { return }
    Unmanaged<MetricsServer>.fromOpaque(arg).takeUnretainedValue().handle(req)
}
