// One load-generating thread: an epoll loop over its connections. Closed loop: each connection
// sends `pipeline` requests in one write and sends the next batch when all are answered.
// Open loop (--rate): requests leave at scheduled times whatever is outstanding, and latency
// is measured from the scheduled time, which corrects for coordinated omission.
import Atomics
import BenchSupport
import COpenSSL
import Histogram
#if canImport(Glibc)
import Glibc
#endif

@inline(__always) func monotonicNanos() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
}

/// Counts a thread publishes for the live line and the report (single writer each).
final class ThreadCounters: Sendable {
    let ops = ManagedAtomic<UInt64>(0)
    let errors = ManagedAtomic<UInt64>(0)
    init() {}
}

struct Pending {
    var isGet: Bool
    var id: Int
    var sentAt: UInt64
}

final class BenchConnection {
    let fd: Int32
    /// The TLS session with --tls (blocking socket, as the plain path).
    let ssl: OpaquePointer?
    var out: [UInt8] = []
    var inbuf: [UInt8] = []
    var inStart = 0
    var pending: [Pending] = []
    var pendingHead = 0
    var nextDue: UInt64 = 0

    init(fd: Int32, ssl: OpaquePointer? = nil) {
        self.fd = fd
        self.ssl = ssl
        out.reserveCapacity(1 << 16)
        inbuf.reserveCapacity(1 << 16)
    }

    deinit { if let ssl { SSL_free(ssl) } }

    /// send(), or SSL_write with --tls; the result as send's (-1 and errno on failure).
    func send(_ p: UnsafeRawPointer, _ n: Int) -> Int {
        guard let ssl else { return Glibc.send(fd, p, n, Int32(MSG_NOSIGNAL)) }
        let rc = SSL_write(ssl, p, Int32(n))
        if rc > 0 { return Int(rc) }
        errno = SSL_get_error(ssl, rc) == SSL_ERROR_WANT_WRITE ? EAGAIN : EPIPE
        return -1
    }

    /// recv(), or SSL_read with --tls (0: closed).
    func recv(_ p: UnsafeMutableRawPointer, _ n: Int) -> Int {
        guard let ssl else { return Glibc.recv(fd, p, n, 0) }
        let rc = SSL_read(ssl, p, Int32(n))
        if rc > 0 { return Int(rc) }
        let e = SSL_get_error(ssl, rc)
        if e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE { errno = EAGAIN; return -1 }
        return 0
    }

    /// Decrypted bytes OpenSSL holds that poll() will not announce.
    var tlsPending: Bool { ssl.map { SSL_pending($0) > 0 } ?? false }
}

/// The client side of --tls: one context for every connection; certificates are not
/// checked unless a CA file is given (the benchmark measures throughput, not trust).
final class BenchTLS: @unchecked Sendable {
    // @unchecked Sendable: the SSL_CTX is configured once, before any thread uses it;
    // SSL_new from several threads is safe on a configured context.
    let ctx: OpaquePointer
    init(caFile: String?) throws {
        guard let c = SSL_CTX_new(TLS_client_method()) else { throw BenchError(description: "SSL_CTX_new failed") }
        ctx = c
        if let ca = caFile {
            guard SSL_CTX_load_verify_locations(c, ca, nil) == 1 else { throw BenchError(description: "cannot load CA file \(ca)") }
            SSL_CTX_set_verify(c, SSL_VERIFY_PEER, nil)
        }
    }

    func connect(fd: Int32) throws -> OpaquePointer {
        guard let ssl = SSL_new(ctx), SSL_set_fd(ssl, fd) == 1 else { throw BenchError(description: "SSL_new failed") }
        guard SSL_connect(ssl) == 1 else {
            SSL_free(ssl)
            throw BenchError(description: "TLS handshake failed (is the server started with -Z?)")
        }
        return ssl
    }
}

enum Phase: Int { case warmup = 0, measure = 1, stop = 2 }

final class LoadThread: @unchecked Sendable {
    // @unchecked Sendable: all state but `counters`, `phase` and the finished histogram is
    // used only by the thread running `run`; the histogram is read after join.
    let workload: Workload
    let options: BenchSettings
    let counters = ThreadCounters()
    let phase: ManagedAtomic<Int>
    var histogram = Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: .three)
    var gets = 0, sets = 0, hits = 0, misses = 0, errors = 0
    var firstError: String?
    private var rng: SplitMix
    private var conns: [BenchConnection] = []
    private let connectionCount: Int

    init(workload: Workload, options: BenchSettings, connections: Int, seed: UInt64, phase: ManagedAtomic<Int>) {
        self.workload = workload
        self.options = options
        self.connectionCount = connections
        self.phase = phase
        rng = SplitMix(state: seed)
    }

    func connectAll() throws {
        for _ in 0..<connectionCount {
            let fd = try connectTo(options.host, options.port)
            let c = BenchConnection(fd: fd, ssl: try options.tls?.connect(fd: fd))
            if let auth = options.auth { try authenticate(c, auth) }
            conns.append(c)
        }
    }

    func run() {
        // poll() over this thread's few dozen sockets (Swift's Glibc module has no epoll).
        var pfds = conns.map { pollfd(fd: $0.fd, events: Int16(POLLIN), revents: 0) }
        let start = monotonicNanos()
        // Each connection sends every `interval`, so all connections of all threads together
        // make `rate` requests a second.
        let interval: UInt64 = options.rate > 0 ? UInt64(1e9 * Double(options.totalConnections) / options.rate) : 0
        for (i, c) in conns.enumerated() {
            if interval > 0 {
                c.nextDue = start + UInt64(i) * interval / UInt64(max(1, connectionCount))
            } else {
                sendBatch(c, count: options.pipeline, at: monotonicNanos())
            }
        }
        while phase.load(ordering: .relaxed) != Phase.stop.rawValue {
            var timeout: Int32 = 100
            if interval > 0 {
                let now = monotonicNanos()
                var earliest = UInt64.max
                for c in conns {
                    while c.nextDue <= now {
                        sendBatch(c, count: 1, at: c.nextDue)
                        c.nextDue += interval
                    }
                    earliest = min(earliest, c.nextDue)
                }
                timeout = Int32(min(100, (earliest - now) / 1_000_000))
            }
            let n = poll(&pfds, nfds_t(pfds.count), timeout)
            if n <= 0 { continue }
            for k in 0..<pfds.count where pfds[k].revents != 0 {
                let c = conns[k]
                if !receive(c) { phase.store(Phase.stop.rawValue, ordering: .relaxed); break }
                if interval == 0 && c.pendingHead == c.pending.count {
                    sendBatch(c, count: options.pipeline, at: monotonicNanos())
                }
            }
        }
        for c in conns { close(c.fd) }
    }

    private func sendBatch(_ c: BenchConnection, count: Int, at t: UInt64) {
        c.out.removeAll(keepingCapacity: true)
        if c.pendingHead == c.pending.count {
            c.pending.removeAll(keepingCapacity: true)
            c.pendingHead = 0
        }
        for _ in 0..<count {
            let id = workload.nextKey(&rng)
            let isSet = workload.setFraction > 0 && rng.unit() < workload.setFraction
            if isSet {
                let len = workload.valueLength(&rng)
                appendSet(id: id, length: len, to: &c.out)
            } else {
                c.out.append(contentsOf: [0x67, 0x65, 0x74, 0x20])  // "get "
                workload.appendKey(id, to: &c.out)
                c.out.append(0x0D); c.out.append(0x0A)
            }
            c.pending.append(Pending(isGet: !isSet, id: id, sentAt: t))
        }
        var off = 0
        while off < c.out.count {
            let n = c.out[off...].withUnsafeBytes { c.send($0.baseAddress!, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                if errno == EAGAIN {
                    var p = pollfd(fd: c.fd, events: Int16(POLLOUT), revents: 0)
                    _ = poll(&p, 1, 100)
                    continue
                }
                noteError("send failed: errno \(errno)")
                return
            }
            off += n
        }
    }

    func appendSet(id: Int, length: Int, to out: inout [UInt8]) {
        out.append(contentsOf: [0x73, 0x65, 0x74, 0x20])  // "set "
        workload.appendKey(id, to: &out)
        out.append(contentsOf: Array(" 0 0 \(length)\r\n".utf8))
        for i in 0..<length { out.append(Workload.valueByte(id, i)) }
        out.append(0x0D); out.append(0x0A)
    }

    /// Reads what is there and consumes every complete reply. False if the connection died.
    private func receive(_ c: BenchConnection) -> Bool {
        if c.inStart > 0 && c.inStart == c.inbuf.count {
            c.inbuf.removeAll(keepingCapacity: true)
            c.inStart = 0
        }
        var got = 0
        repeat {  // with TLS, also what OpenSSL already decrypted (poll cannot see it)
            let old = c.inbuf.count
            c.inbuf.append(contentsOf: repeatElement(0, count: 65536))
            let n = c.inbuf.withUnsafeMutableBytes { c.recv($0.baseAddress! + old, 65536) }
            c.inbuf.removeLast(65536 - max(0, n))
            if n == 0 { noteError("server closed the connection"); return false }
            if n < 0 { if got == 0 { return errno == EAGAIN || errno == EINTR } else { break } }
            got += n
        } while c.tlsPending
        let now = monotonicNanos()
        let measuring = phase.load(ordering: .relaxed) == Phase.measure.rawValue
        var done = 0
        while c.pendingHead < c.pending.count {
            let p = c.pending[c.pendingHead]
            guard let used = parseReply(c, p) else { break }
            c.inStart += used
            c.pendingHead += 1
            done += 1
            if measuring {
                _ = histogram.record(max(1, now &- p.sentAt))
                if p.isGet { gets += 1 } else { sets += 1 }
            }
        }
        if c.inStart > 1 << 20 {
            c.inbuf.removeFirst(c.inStart)
            c.inStart = 0
        }
        if measuring && done > 0 { counters.ops.store(counters.ops.load(ordering: .relaxed) &+ UInt64(done), ordering: .relaxed) }
        return true
    }

    /// Parses the reply to `p` at the read position; nil if incomplete. Checks it.
    private func parseReply(_ c: BenchConnection, _ p: Pending) -> Int? {
        c.inbuf.withUnsafeBytes { all -> Int? in
            let buf = UnsafeRawBufferPointer(rebasing: all[c.inStart...])
            guard let eol = lineEnd(buf, from: 0) else { return nil }
            let line = UnsafeRawBufferPointer(rebasing: buf[0..<eol])
            if !p.isGet {
                if !equalsText(line, "STORED") { noteError("set: \(String(decoding: line, as: UTF8.self))") }
                return eol + 2
            }
            if equalsText(line, "END") {
                if phase.load(ordering: .relaxed) == Phase.measure.rawValue { misses += 1 }
                return eol + 2
            }
            // VALUE <key> <flags> <bytes>
            let parts = line.split(separator: 0x20)
            guard parts.count >= 4, equalsText(UnsafeRawBufferPointer(rebasing: parts[0]), "VALUE"),
                  let len = Int(String(decoding: parts[3], as: UTF8.self)) else {
                noteError("get: \(String(decoding: line, as: UTF8.self).prefix(80))")
                return eol + 2
            }
            let total = eol + 2 + len + 2 + 5
            if buf.count < total { return nil }
            var expectedKey: [UInt8] = []
            workload.appendKey(p.id, to: &expectedKey)
            var ok = Array(parts[1]) == expectedKey
            let data = eol + 2
            for i in 0..<min(len, 64) where buf[data + i] != Workload.valueByte(p.id, i) { ok = false; break }
            if buf[data + len] != 0x0D || buf[data + len + 1] != 0x0A || !equalsText(UnsafeRawBufferPointer(rebasing: buf[(data + len + 2)..<total]), "END\r\n") { ok = false }
            if !ok { noteError("get \(p.id): wrong value or framing") }
            if phase.load(ordering: .relaxed) == Phase.measure.rawValue { hits += 1 }
            return total
        }
    }

    private func noteError(_ s: String) {
        errors += 1
        counters.errors.store(UInt64(errors), ordering: .relaxed)
        if firstError == nil { firstError = s }
    }

    /// Sets every key once, pipelined, on this thread's first connection; keys are split
    /// between threads by `slice`.
    func preload(slice: Range<Int>) {
        guard let c = conns.first else { return }
        var i = slice.lowerBound
        while i < slice.upperBound {
            c.out.removeAll(keepingCapacity: true)
            let end = min(slice.upperBound, i + 200)
            for id in i..<end { appendSet(id: id, length: workload.valueLength(&rng), to: &c.out) }
            _ = c.out.withUnsafeBytes { sendAll(c, $0) }
            var need = end - i
            var buf = [UInt8](repeating: 0, count: 65536)
            var carry = 0
            while need > 0 {
                let n = buf.withUnsafeMutableBytes { c.recv($0.baseAddress!, $0.count) }
                if n <= 0 { noteError("preload: connection closed"); return }
                // Replies are all "STORED\r\n" (8 bytes).
                carry += n
                need -= carry / 8
                carry %= 8
            }
            i = end
        }
    }
}

func sendAll(_ c: BenchConnection, _ b: UnsafeRawBufferPointer) -> Bool {
    var off = 0
    while off < b.count {
        let n = c.send(b.baseAddress! + off, b.count - off)
        if n < 0 {
            if errno == EINTR { continue }
            if errno == EAGAIN { var p = pollfd(fd: c.fd, events: Int16(POLLOUT), revents: 0); _ = poll(&p, 1, 100); continue }
            return false
        }
        off += n
    }
    return true
}

@inline(__always) func lineEnd(_ b: UnsafeRawBufferPointer, from: Int) -> Int? {
    var i = from
    while i + 1 < b.count {
        if b[i] == 0x0D && b[i + 1] == 0x0A { return i }
        i += 1
    }
    return nil
}

@inline(__always) func equalsText(_ b: UnsafeRawBufferPointer, _ s: StaticString) -> Bool {
    guard b.count == s.utf8CodeUnitCount else { return false }
    for i in 0..<b.count where b[i] != s.utf8Start[i] { return false }
    return true
}

struct BenchError: Error, CustomStringConvertible { var description: String }

func connectTo(_ host: String, _ port: Int) throws -> Int32 {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    guard inet_pton(AF_INET, host, &addr.sin_addr) == 1 else { throw BenchError(description: "bad IPv4 address \(host)") }
    addr.sin_port = in_port_t(UInt16(port).bigEndian)
    let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
    if rc != 0 { close(fd); throw BenchError(description: "cannot connect to \(host):\(port): errno \(errno)") }
    var one: Int32 = 1
    setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    return fd
}
