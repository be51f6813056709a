// The server: fits the descriptor limit to -c, binds the listening sockets (each -l address,
// TLS or plain), starts the
// workers, accepts connections on the main thread and hands each to a worker round-robin (an
// even spread, unlike SO_REUSEPORT), enforces the connection limit, pauses accepting for a
// short back-off when the process runs out of descriptors, logs budget evictions and failed
// authentications once per interval, reads the credentials files after dropping privileges,
// on SIGHUP reloads them and the TLS certificates, and on SIGTERM/SIGINT/SIGUSR1 stops
// accepting, lets workers send the replies already queued, and returns.
import CLibevent
import LarderMetrics
import LarderStore
import Logging
#if canImport(Glibc)
import Glibc
#endif

public final class Server: @unchecked Sendable {
    // @unchecked Sendable: after `init`, `run` owns the acceptor base and listener on the
    // calling thread; workers are reached only through their thread-safe entry points.
    public let context: ServerContext
    private let logger: Logger
    private let base: OpaquePointer
    /// One per -l address; TLS unless -Z is off or the address was given as notls:.
    private var listeners: [Listener] = []
    private var workers: [Worker] = []
    private var signalEvents: [OpaquePointer] = []
    /// Re-enables accepting after an EMFILE/ENFILE back-off (timer), or as soon as a worker
    /// frees a descriptor (activated through `context.acceptorWake`).
    private var resumeEvent: OpaquePointer?
    private var housekeepingEvent: OpaquePointer?
    private var acceptBackoffSeconds = Server.minAcceptBackoff
    /// When the last "out of descriptors" line was logged (monotonic ns; 0 never).
    private var lastDescriptorLog: UInt64 = 0
    private var descriptorPausesSinceLog = 0
    /// When accepting last paused (monotonic ns), for `time_in_listen_disabled_us`.
    private var pausedSince: UInt64 = 0
    private var sighupLogged = false
    private var lastEvictedLogged: UInt64 = 0
    private var lastTimeoutsLogged: UInt64 = 0
    private var lastBudgetLog: UInt64 = 0
    private var nextWorker = 0
    private var sweeper: Sweeper?
    private var metrics: MetricsServer?
    /// The port actually bound.
    public let port: Int

    public init(config: ServerConfig, logger: Logger, clock: any StoreClock = SystemClock()) throws {
        self.logger = logger
        signal(SIGPIPE, SIG_IGN)
        // Until the event loop handles it, a SIGHUP must not kill the process either.
        signal(SIGHUP, SIG_IGN)
        // Never give freed heap back to the kernel from inside free(): after a mass expiry or
        // flush, glibc would otherwise trim megabytes with madvise/brk while holding the malloc
        // arena lock, stalling every worker that allocates (measured: get p99.9 1.2 ms -> 35 ms
        // while 1M keys expired). The store stays within -m, so the memory is reused by later
        // items, as memcached keeps its slab pages.
        _ = mallopt(M_TRIM_THRESHOLD, Int32.max)
        // A parent may start us with SIGTERM/SIGINT blocked (some process launchers do);
        // graceful shutdown depends on receiving them.
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGTERM)
        sigaddset(&set, SIGINT)
        sigaddset(&set, SIGUSR1)
        sigaddset(&set, SIGHUP)  // re-reads the credentials files
        pthread_sigmask(SIG_UNBLOCK, &set, nil)
        try Libevent.enableThreads()
        _ = Ticks.nanosPerTick  // calibrate the latency clock before any request
        var config = config
        config.maxConnections = Server.fitDescriptorLimit(config, logger: logger)
        let store = try Store(config: StoreConfig(memoryLimit: config.memoryLimitMB * 1024 * 1024,
                                                  shardCount: Server.effectiveShards(config),
                                                  evictionDisabled: config.disableEviction,
                                                  maxItemSize: config.maxItemSize),
                              clock: clock, memoryFile: config.memoryFile)
        Server.logRestore(store.restoreReport, path: config.memoryFile, logger: logger)
        // The certificate and key are read before privileges are dropped (as memcached does).
        let tls = config.tls.enabled ? try TLSContext(config.tls) : nil
        context = ServerContext(config: config, store: store, workers: config.threads, tls: tls)
        base = try Libevent.newBase()
        for spec in config.listeners {
            let (fd, bound) = try Server.bindListener(address: spec.address, port: spec.port ?? config.port, backlog: 1024)
            listeners.append(Listener(fd: fd, port: bound, address: spec.address, tls: tls != nil && !spec.plain))
        }
        port = listeners[0].port
        context.boundPort.store(port, ordering: .relaxed)
        for i in 0..<config.threads {
            workers.append(try Worker(id: i, context: context))
        }
        let arg = Unmanaged.passUnretained(self).toOpaque()
        for l in listeners {
            l.server = self
            l.event = try Libevent.newEvent(base, fd: l.fd, what: Libevent.read | Libevent.persist,
                                            arg: Unmanaged.passUnretained(l).toOpaque(), serverAcceptable)
        }
        if config.metricsPort != 0 {
            metrics = try MetricsServer(context: context, address: config.listen, port: config.metricsPort, logger: logger)
        }
        if let user = config.user { try Server.dropPrivileges(to: user, logger: logger) }
        // Credentials are read as the user Larder serves as (memcached reads -Y after
        // dropping privileges too), so what starts also reloads on SIGHUP.
        try loadCredentials(initial: true)
        // SIGUSR1 is memcached's graceful stop; SIGHUP reloads the TLS certificates and the
        // credentials files, and is otherwise ignored rather than killing the process, as it
        // does by default.
        for sig in [SIGTERM, SIGINT, SIGUSR1, SIGHUP] {
            signalEvents.append(try Libevent.newEvent(base, fd: sig, what: Libevent.signal | Libevent.persist,
                                                      arg: arg, serverSignalled))
        }
        resumeEvent = try Libevent.newEvent(base, fd: -1, what: 0, arg: arg, serverResumeAccepting)
        context.acceptorWake.event = resumeEvent
        housekeepingEvent = try Libevent.newEvent(base, fd: -1, what: Libevent.persist, arg: arg, serverHousekeeping)
        context.clientMemory.attach(workers)
    }

    /// Descriptors the process needs besides client connections: stdio, the two listeners,
    /// an epoll descriptor and a wake-up pair per event loop (workers, acceptor, metrics), the
    /// metrics endpoint's own connections, /proc reads while rendering a scrape, and spare.
    static func reservedDescriptors(_ config: ServerConfig) -> Int {
        3 + 2 + 3 * (config.threads + 2) + MetricsServer.maxConnections + 4 + 16
    }

    /// Raises RLIMIT_NOFILE's soft limit to fit `-c` plus the reserve (as memcached does), up
    /// to the hard limit; if even that is too small, lowers the effective connection limit and
    /// says so, naming both numbers. Returns the connection limit to use.
    static func fitDescriptorLimit(_ config: ServerConfig, logger: Logger) -> Int {
        let reserve = reservedDescriptors(config)
        let need = config.maxConnections + reserve
        var lim = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &lim) == 0 else { return config.maxConnections }
        let infinity = rlim_t.max  // RLIM_INFINITY is all ones; the C macro does not import
        if lim.rlim_cur != infinity && lim.rlim_cur < rlim_t(need) {
            var want = lim
            want.rlim_cur = lim.rlim_max == infinity ? rlim_t(need) : min(rlim_t(need), lim.rlim_max)
            if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &want) == 0 { lim = want }
        }
        let have = lim.rlim_cur == infinity ? Int.max : Int(lim.rlim_cur)
        if have >= need { return config.maxConnections }
        let fits = max(1, have - reserve)
        logger.warning("conn-limit \(config.maxConnections) needs \(need) open files but RLIMIT_NOFILE allows \(have): serving at most \(fits) connections (raise the limit, e.g. ulimit -n \(need), or lower -c)")
        return fits
    }

    /// Serves until SIGTERM or SIGINT, then shuts down gracefully and returns.
    public func run() {
        for w in workers { w.start() }
        let sw = Sweeper(context: context)
        sw.start()
        sweeper = sw
        metrics?.start()
        for l in listeners { Libevent.add(l.event!) }
        for e in signalEvents { Libevent.add(e) }
        Libevent.add(housekeepingEvent!, timeoutSeconds: Double(Server.logInterval))
        for w in Exposure.warnings(context.config) { logger.warning("\(w)") }
        logger.notice("listening on \(listeners[0].address):\(port)\(listeners[0].tls ? " (TLS)" : "") with \(workers.count) threads, \(context.config.memoryLimitMB) MB")
        for l in listeners.dropFirst() {
            logger.notice("also listening on \(l.address):\(l.port) (\(l.tls ? "TLS" : "plain text"))")
        }
        if let m = metrics {
            logger.notice("metrics on \(context.config.tls.metrics ? "https" : "http")://\(context.config.listen):\(m.port)/metrics")
        }
        event_base_loop(base, 0)
        // Shutdown: stop accepting, let workers drain, then return.
        context.acceptorWake.paused.store(false, ordering: .relaxed)
        for l in listeners {
            if let e = l.event { Libevent.free(e) }
            l.event = nil
            _ = Glibc.close(l.fd)
        }
        if let e = housekeepingEvent { Libevent.free(e) }
        for w in workers { w.beginShutdown() }
        for w in workers { w.join() }
        sweeper?.stop()
        metrics?.stop()
        if context.config.memoryFile != nil {
            context.store.closeCleanly()
            logger.notice("memory file \(context.config.memoryFile!): clean stop recorded")
        }
        logger.notice("stopped")
    }

    /// One line on what the memory file gave (and any notes about it).
    static func logRestore(_ r: RestoreReport, path: String?, logger: Logger) {
        guard let path else { return }
        for n in r.notes { logger.warning("\(n)") }
        switch r.outcome {
        case .restored:
            let how = r.graceful ? "after a clean stop (segments verified)" : "after a crash (no clean-stop record)"
            var extra = ""
            if r.droppedLargeItems > 0 { extra += "; dropped \(r.droppedLargeItems) item(s) with values kept outside the file" }
            if r.damagedSegments > 0 { extra += "; \(r.damagedSegments) damaged segment(s) dropped or cut short" }
            logger.notice("memory file \(path): restored \(r.restoredItems) items \(how) in \(Int(r.seconds * 1000)) ms\(extra)")
        case .noFile: logger.notice("memory file \(path): created; starting empty")
        case .incompatibleSettings, .corrupt:
            logger.warning("memory file \(path): starting empty (\(r.outcome.rawValue)): \(r.reason)")
        case .cleanStart: break
        }
    }

    fileprivate func acceptAll(_ listener: Listener) {
        let listenFD = listener.fd
        while true {
            var addr = sockaddr_storage()
            var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
            let fd = withUnsafeMutablePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    accept(listenFD, $0, &len)
                }
            }
            if fd < 0 {
                let e = errno
                if e == EINTR || e == ECONNABORTED { continue }
                if e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM {
                    pauseAccepting(errno: e)
                } else if e != EAGAIN && e != EWOULDBLOCK {
                    logger.warning("accept failed: \(String(cString: strerror(e)))")
                }
                return
            }
            acceptBackoffSeconds = Server.minAcceptBackoff
            // accept4 is hidden behind _GNU_SOURCE in Swift's Glibc view; one fcntl per
            // connection is a cold-path cost.
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            let conns = context.connections
            if conns.current.load(ordering: .relaxed) >= context.config.maxConnections {
                let msg = "SERVER_ERROR too many open connections\r\n"
                _ = msg.withCString { send(fd, $0, strlen($0), Int32(MSG_NOSIGNAL)) }
                _ = Glibc.close(fd)
                conns.rejected.wrappingIncrement(ordering: .relaxed)
                continue
            }
            var one: Int32 = 1
            _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
            conns.current.wrappingIncrement(ordering: .relaxed)
            conns.total.wrappingIncrement(ordering: .relaxed)
            let w = workers[nextWorker]
            nextWorker = (nextWorker + 1) % workers.count
            w.hand(fd: fd, peer: Server.describe(&addr), tls: listener.tls)
        }
    }

    /// First back-off after EMFILE; doubled while accept keeps failing, up to the maximum.
    /// A pause costs one failed accept per back-off (at most 10 a second), and a worker that
    /// closes a connection ends it at once.
    static let minAcceptBackoff = 0.1
    static let maxAcceptBackoff = 1.0
    /// "Out of descriptors" is logged at most once per this many seconds.
    static let logInterval: UInt64 = 10

    /// Out of descriptors: stop watching the listener (the kernel keeps new connections in
    /// its backlog), like memcached's accept_new_conns(false), and resume after a back-off or
    /// as soon as a connection closes. Logged once per interval, never per failed accept.
    private func pauseAccepting(errno e: Int32) {
        for l in listeners { Libevent.del(l.event!) }
        context.connections.accepting.store(false, ordering: .relaxed)
        context.connections.listenDisabled.wrappingIncrement(ordering: .relaxed)
        descriptorPausesSinceLog += 1
        let now = monotonicNanos()
        pausedSince = now
        if lastDescriptorLog == 0 || now &- lastDescriptorLog > Server.logInterval * 1_000_000_000 {
            var lim = rlimit()
            getrlimit(Int32(RLIMIT_NOFILE.rawValue), &lim)
            logger.warning("accept: \(String(cString: strerror(e))) (\(context.connections.current.load(ordering: .relaxed)) connections, open-file limit \(lim.rlim_cur)): pausing accepts until a descriptor frees (\(descriptorPausesSinceLog) pause(s) since the last such line)")
            lastDescriptorLog = now
            descriptorPausesSinceLog = 0
        }
        context.acceptorWake.paused.store(true, ordering: .relaxed)
        Libevent.add(resumeEvent!, timeoutSeconds: acceptBackoffSeconds)
        acceptBackoffSeconds = min(acceptBackoffSeconds * 2, Server.maxAcceptBackoff)
    }

    fileprivate func resumeAccepting() {
        context.acceptorWake.paused.store(false, ordering: .relaxed)
        Libevent.del(resumeEvent!)
        guard context.connections.accepting.load(ordering: .relaxed) == false else { return }
        context.connections.accepting.store(true, ordering: .relaxed)
        context.connections.listenDisabledMicros.wrappingIncrement(by: (monotonicNanos() &- pausedSince) / 1000, ordering: .relaxed)
        for l in listeners {
            Libevent.add(l.event!)
            acceptAll(l)
        }
    }

    private var hasCredentialFiles: Bool {
        let c = context.config
        return c.authFile != nil || c.metricsTokenFile != nil || c.metricsAuthFile != nil
    }

    /// Reads the -Y auth file and the metrics endpoint's credentials files (at start, and on
    /// SIGHUP). All are read before any is replaced, so a bad file changes nothing.
    private func loadCredentials(initial: Bool) throws(ConfigError) {
        let c = context.config
        let users = try c.authFile.map { (path: String) throws(ConfigError) in try AuthUsers.load(path) }
        let guardian = try MetricsGuard.load(tokenFile: c.metricsTokenFile, authFile: c.metricsAuthFile)
        if let users, let path = c.authFile {
            context.authUsers.replace(users)
            logger.notice("\(initial ? "authentication required (-Y)" : "SIGHUP: re-read -Y"): \(users.count) user(s) from \(path)")
        }
        if let guardian {
            metrics?.credentials.replace(guardian)
            if !initial { logger.notice("SIGHUP: re-read the metrics endpoint's credentials") }
        }
    }

    /// Every `logInterval` seconds: logs what the client-memory budget and the output timeout
    /// closed since the last line, if anything.
    fileprivate func housekeeping() {
        let now = monotonicNanos()
        logAuthFailures(now)
        guard lastBudgetLog == 0 || now &- lastBudgetLog >= Server.logInterval * 1_000_000_000 else { return }
        let evicted = context.clientsEvicted, timeouts = context.outputTimeouts
        guard evicted != lastEvictedLogged || timeouts != lastTimeoutsLogged else { return }
        let mb = context.clientMemoryBytes >> 20
        logger.warning("client memory: closed \(evicted &- lastEvictedLogged) connection(s) holding the most over the \(context.config.clientMemoryMB) MB budget and \(timeouts &- lastTimeoutsLogged) whose replies sat unread past \(context.config.outputTimeout) s; clients now hold \(mb) MB")
        lastEvictedLogged = evicted
        lastTimeoutsLogged = timeouts
        lastBudgetLog = now
    }

    /// Failed authentications since the last line, logged at most once per interval however
    /// many there are (a client trying passwords must not flood the log); never a user name
    /// or password.
    private func logAuthFailures(_ now: UInt64) {
        guard context.config.authFile != nil || context.config.metricsAuthFile != nil
                || context.config.metricsTokenFile != nil else { return }
        // Half a second of slack: housekeeping itself runs every interval, and a timer that
        // fires a hair early must not push the line to the interval after.
        guard lastAuthLog == 0 || now &- lastAuthLog >= Server.logInterval * 1_000_000_000 - 500_000_000 else { return }
        var cache: UInt64 = 0
        for b in context.workerCounters { cache &+= b.get(.authErrors) }
        let metrics = context.connections.metricsAuthFailures.load(ordering: .relaxed)
        guard cache != lastAuthErrors || metrics != lastMetricsAuthFailures else { return }
        logger.warning("authentication: \(cache &- lastAuthErrors) failed attempt(s) on the cache port (-Y) and \(metrics &- lastMetricsAuthFailures) refused request(s) on the metrics port since the last such line")
        lastAuthErrors = cache
        lastMetricsAuthFailures = metrics
        lastAuthLog = now
    }
    private var lastAuthLog: UInt64 = 0
    private var lastAuthErrors: UInt64 = 0
    private var lastMetricsAuthFailures: UInt64 = 0

    fileprivate func signalled(_ sig: Int32) {
        if sig == SIGHUP && (context.tls != nil || hasCredentialFiles) {
            // With TLS, SIGHUP reloads the certificate, key and CA (as refresh_certs does).
            if let tls = context.tls {
                if let error = tls.reload() {
                    logger.error("SIGHUP: certificates not reloaded, still serving the old ones: \(error)")
                } else {
                    logger.notice("SIGHUP: certificates reloaded; new connections use them")
                }
            }
            // memcached re-reads its -Y file on SIGHUP; a bad file keeps the users loaded before.
            if hasCredentialFiles {
                do {
                    try loadCredentials(initial: false)
                } catch {
                    logger.error("SIGHUP: \(error); keeping the credentials loaded before")
                }
            }
            return
        }
        if sig == SIGHUP {
            if !sighupLogged {
                logger.notice("SIGHUP received: ignored (it reloads the TLS certificates, -Y and the metrics credentials files, and none is set; SIGTERM or SIGUSR1 stops Larder)")
                sighupLogged = true
            }
            return
        }
        stop()
    }

    fileprivate func stop() {
        logger.notice("signal received: finishing replies in flight and stopping")
        event_base_loopbreak(base)
    }

    /// Each shard bounds its own memory, so a shard's share of `-m` must hold several of the
    /// largest items; the configured shard count is lowered (never below 1) until each share is
    /// at least 4 x `-I`. `-m 64 -I 1m` gives 16 shards of 4 MB.
    public static func effectiveShards(_ config: ServerConfig) -> Int {
        var n = config.shards
        let total = config.memoryLimitMB * 1024 * 1024
        while n > 1 && total / n < 4 * config.maxItemSize { n /= 2 }
        return n
    }

    /// Switches to `user` (its group first, supplementary groups cleared) once the sockets
    /// are bound. Does nothing if we already are that user.
    static func dropPrivileges(to user: String, logger: Logger) throws {
        guard let pw = getpwnam(user) else { throw ServerError.badUser(user) }
        let uid = pw.pointee.pw_uid, gid = pw.pointee.pw_gid
        if geteuid() == uid { return }
        guard geteuid() == 0 else {
            throw ServerError.system("switching to user \(user) (only root can)", EPERM)
        }
        guard setgroups(0, nil) == 0, setgid(gid) == 0, setuid(uid) == 0 else {
            throw ServerError.system("dropping privileges to \(user)", errno)
        }
        guard setuid(0) != 0 else { throw ServerError.system("privileges were not dropped", EPERM) }
        logger.notice("running as user \(user) (uid \(uid))")
    }

    // MARK: - Sockets

    static func bindListener(address: String, port: Int, backlog: Int32) throws -> (Int32, Int) {
        var v4 = sockaddr_in()
        var v6 = sockaddr_in6()
        let isV6: Bool
        if inet_pton(AF_INET, address, &v4.sin_addr) == 1 {
            isV6 = false
            v4.sin_family = sa_family_t(AF_INET)
            v4.sin_port = in_port_t(UInt16(port).bigEndian)
        } else if inet_pton(AF_INET6, address, &v6.sin6_addr) == 1 {
            isV6 = true
            v6.sin6_family = sa_family_t(AF_INET6)
            v6.sin6_port = in_port_t(UInt16(port).bigEndian)
        } else {
            throw ServerError.badAddress(address)
        }
        let fd = socket(isV6 ? AF_INET6 : AF_INET, Int32(SOCK_STREAM.rawValue | SOCK_NONBLOCK.rawValue | SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw ServerError.system("socket", errno) }
        var one: Int32 = 1
        _ = setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        let rc: Int32 = isV6
            ? withUnsafePointer(to: &v6) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) } }
            : withUnsafePointer(to: &v4) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard rc == 0 else {
            let e = errno
            _ = Glibc.close(fd)
            throw ServerError.system("bind \(address):\(port)", e)
        }
        guard listen(fd, backlog) == 0 else {
            let e = errno
            _ = Glibc.close(fd)
            throw ServerError.system("listen", e)
        }
        var ss = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = withUnsafeMutablePointer(to: &ss) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        let bound: Int = withUnsafePointer(to: &ss) { p in
            isV6 ? p.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { Int(UInt16(bigEndian: $0.pointee.sin6_port)) }
                 : p.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { Int(UInt16(bigEndian: $0.pointee.sin_port)) }
        }
        return (fd, bound)
    }

    static func describe(_ addr: inout sockaddr_storage) -> String {
        var host = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
        var port = 0
        if addr.ss_family == sa_family_t(AF_INET) {
            withUnsafePointer(to: &addr) { p in
                p.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { a in
                    var ina = a.pointee.sin_addr
                    _ = inet_ntop(AF_INET, &ina, &host, socklen_t(host.count))
                    port = Int(UInt16(bigEndian: a.pointee.sin_port))
                }
            }
        } else {
            withUnsafePointer(to: &addr) { p in
                p.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { a in
                    var ina = a.pointee.sin6_addr
                    _ = inet_ntop(AF_INET6, &ina, &host, socklen_t(host.count))
                    port = Int(UInt16(bigEndian: a.pointee.sin6_port))
                }
            }
        }
        let h = host.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        return "tcp:\(h):\(port)"
    }
}

public enum ServerError: Error, CustomStringConvertible {
    case badAddress(String)
    case badUser(String)
    case system(String, Int32)
    public var description: String {
        switch self {
        case .badAddress(let a): "cannot listen on '\(a)': not an IPv4 or IPv6 address"
        case .badUser(let u): "no such user '\(u)'"
        case .system(let call, let e): "\(call) failed: \(String(cString: strerror(e)))"
        }
    }
}

/// A listening socket. Owned by the server, used on the acceptor thread only.
final class Listener {
    let fd: Int32
    let port: Int
    let address: String
    let tls: Bool
    var event: OpaquePointer?
    weak var server: Server?
    init(fd: Int32, port: Int, address: String, tls: Bool) {
        self.fd = fd
        self.port = port
        self.address = address
        self.tls = tls
    }
}

private func serverAcceptable(_ fd: Int32, _ what: Int16, _ arg: UnsafeMutableRawPointer?) {
    // The argument is the listener, unretained: the server holds it until `run` returns,
    // after its event is freed.
    let l = Unmanaged<Listener>.fromOpaque(arg!).takeUnretainedValue()
    l.server?.acceptAll(l)
}

private func serverSignalled(_ fd: Int32, _ what: Int16, _ arg: UnsafeMutableRawPointer?) {
    // For a signal event libevent passes the signal number as `fd`.
    Unmanaged<Server>.fromOpaque(arg!).takeUnretainedValue().signalled(fd)
}

private func serverResumeAccepting(_ fd: Int32, _ what: Int16, _ arg: UnsafeMutableRawPointer?) {
    Unmanaged<Server>.fromOpaque(arg!).takeUnretainedValue().resumeAccepting()
}

private func serverHousekeeping(_ fd: Int32, _ what: Int16, _ arg: UnsafeMutableRawPointer?) {
    Unmanaged<Server>.fromOpaque(arg!).takeUnretainedValue().housekeeping()
}
