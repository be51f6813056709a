// `watch`: live log lines for operators, in memcached's `ts=... gid=... type=...` format,
// streamed to connections that asked for them (fetchers, mutations, evictions, and Larder's
// deletions, which show every delete's key and outcome). Workers never wait for a watcher:
// when nobody watches a class, emitting costs one relaxed atomic load; when someone does,
// the worker formats the line once and appends it to each watcher's bounded buffer only if
// it gets that buffer's lock at once (trylock) and the buffer has room; otherwise it counts
// the line as skipped. One background thread owns the watchers' sockets (a `dup` of the
// connection's descriptor, taken over when the connection hands itself off), writes their
// buffers without blocking, reports `skipped=N` lines for what was dropped, and drops a
// watcher whose client went away.
import Atomics
import LarderProtocol
#if canImport(Glibc)
import Glibc
#endif

/// Linux's MSG_NOSIGNAL (a write to a watcher that left must not raise SIGPIPE); the Glibc
/// module does not export the macro.
private let msgNoSignal: Int32 = 0x4000

/// One watching client.
final class Watcher: @unchecked Sendable {
    // @unchecked Sendable: `buffer` is guarded by `lock`; `outgoing` is used only by the
    // watch thread; `skipped` and `closed` are atomics; `fd` and `classes` never change.
    let fd: Int32
    let classes: WatchClasses
    let lock = Mutex()
    /// Lines queued by workers, not yet taken by the watch thread.
    var buffer: [UInt8] = []
    /// Lines the workers could not queue (buffer full or busy).
    let skipped = ManagedAtomic<UInt64>(0)
    /// Bytes taken from `buffer`, not yet accepted by the socket (watch thread only).
    var outgoing: [UInt8] = []
    let closed = ManagedAtomic<Bool>(false)

    init(fd: Int32, classes: WatchClasses) {
        self.fd = fd
        self.classes = classes
        buffer.reserveCapacity(4096)
    }
}

public final class WatchHub: @unchecked Sendable {
    // @unchecked Sendable: `watchers` and `thread` are guarded by `listLock`; the rest are
    // atomics or immutable.

    /// Bytes a watcher's queue may hold before lines are skipped (memcached's default
    /// watcher buffer is 256 KB).
    static let bufferLimit = 256 * 1024
    /// How often the watch thread drains buffers when nothing wakes it sooner (ms).
    static let pollMillis: Int32 = 20

    /// Classes at least one watcher wants (the workers' fast check).
    let mask = ManagedAtomic<UInt8>(0)
    /// memcached's global log entry id.
    private let gid = ManagedAtomic<UInt64>(0)
    private let listLock = Mutex()
    private var watchers: [Watcher] = []
    private var threadStarted = false
    /// Lines written into watchers' buffers, and dropped there (buffer full or busy): what
    /// memcached calls log_worker_written / log_worker_dropped.
    let linesWritten = ManagedAtomic<UInt64>(0)
    let linesDropped = ManagedAtomic<UInt64>(0)
    /// Lines queued to watchers' sockets, and skipped because a watcher did not read fast
    /// enough (log_watcher_sent / log_watcher_skipped).
    let linesSent = ManagedAtomic<UInt64>(0)
    let linesSkipped = ManagedAtomic<UInt64>(0)

    public init() {}

    /// Connections in `watch` now.
    var watcherCount: Int {
        listLock.lock()
        defer { listLock.unlock() }
        return watchers.reduce(0) { $0 + ($1.closed.load(ordering: .relaxed) ? 0 : 1) }
    }

    /// True if some watcher wants `c` (one relaxed load).
    @inline(__always)
    func wants(_ c: WatchClasses) -> Bool {
        mask.load(ordering: .relaxed) & c.rawValue != 0
    }

    /// Takes over `fd` (already a duplicate the hub owns) as a watcher; "OK" is its first line.
    func add(fd: Int32, classes: WatchClasses) {
        let w = Watcher(fd: fd, classes: classes)
        w.outgoing = Array("OK\r\n".utf8)
        // Nonblocking: the watch thread never waits on a slow client.
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        listLock.lock()
        watchers.append(w)
        recomputeMaskLocked()
        let start = !threadStarted
        threadStarted = true
        listLock.unlock()
        if start {
            _ = startThread(name: "larder-watch") { [self] in run() }
        }
    }

    private func recomputeMaskLocked() {
        var m: UInt8 = 0
        for w in watchers where !w.closed.load(ordering: .relaxed) { m |= w.classes.rawValue }
        mask.store(m, ordering: .relaxed)
    }

    /// Queues one line for every watcher of `c`. `fields` is everything after `type=`; the
    /// timestamp, gid and trailing newline are added here. Never blocks.
    func emit(_ c: WatchClasses, _ fields: (ByteSink) -> Void) {
        guard wants(c) else { return }
        let line = ByteSink(capacity: 256)
        var tv = timeval()
        gettimeofday(&tv, nil)
        line.append("ts=")
        line.appendDecimal(UInt64(tv.tv_sec))
        line.append(UInt8(ascii: "."))
        let us = String(tv.tv_usec)
        line.append(String(repeating: "0", count: max(0, 6 - us.count)) + us)
        line.append(" gid=")
        line.appendDecimal(gid.wrappingIncrementThenLoad(ordering: .relaxed))
        line.append(" type=")
        fields(line)
        line.append(UInt8(ascii: "\n"))
        guard listLock.tryLock() else { return }  // the watch thread is changing the list
        for w in watchers where w.classes.rawValue & c.rawValue != 0 {
            if w.lock.tryLock() {
                if w.buffer.count + line.count <= WatchHub.bufferLimit {
                    w.buffer.append(contentsOf: line.bytes)
                    linesWritten.wrappingIncrement(ordering: .relaxed)
                } else {
                    w.skipped.wrappingIncrement(ordering: .relaxed)
                    linesDropped.wrappingIncrement(ordering: .relaxed)
                }
                w.lock.unlock()
            } else {
                w.skipped.wrappingIncrement(ordering: .relaxed)
                linesDropped.wrappingIncrement(ordering: .relaxed)
            }
        }
        listLock.unlock()
    }

    /// The watch thread: drains buffers into sockets, notices clients that left.
    private func run() {
        var scratch = [UInt8](repeating: 0, count: 4096)
        while true {
            listLock.lock()
            let current = watchers
            listLock.unlock()
            var pfds = current.map { pollfd(fd: $0.fd, events: Int16(POLLIN), revents: 0) }
            _ = poll(&pfds, nfds_t(pfds.count), WatchHub.pollMillis)
            var changed = false
            for (i, w) in current.enumerated() {
                // Input from a watcher is ignored (memcached's watch state reads nothing);
                // end of file or an error means the client has gone.
                if pfds[i].revents & Int16(POLLIN | POLLHUP | POLLERR) != 0 {
                    let n = scratch.withUnsafeMutableBytes { recv(w.fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
                    if n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR) { w.closed.store(true, ordering: .relaxed) }
                }
                if !w.closed.load(ordering: .relaxed) { drain(w) }
                if w.closed.load(ordering: .relaxed) { changed = true }
            }
            if changed {
                listLock.lock()
                for w in watchers where w.closed.load(ordering: .relaxed) { _ = Glibc.close(w.fd) }
                watchers.removeAll { $0.closed.load(ordering: .relaxed) }
                recomputeMaskLocked()
                listLock.unlock()
            }
        }
    }

    private func drain(_ w: Watcher) {
        w.lock.lock()
        let taken = w.buffer
        w.buffer.removeAll(keepingCapacity: true)
        w.lock.unlock()
        var lost = w.skipped.exchange(0, ordering: .relaxed)
        let lines = UInt64(taken.reduce(0) { $0 + ($1 == 0x0A ? 1 : 0) })
        if w.outgoing.count + taken.count > WatchHub.bufferLimit {
            // The client is not reading fast enough: keep the memory bounded, count the loss.
            lost += lines
            linesSkipped.wrappingIncrement(by: lines, ordering: .relaxed)
        } else {
            w.outgoing.append(contentsOf: taken)
            linesSent.wrappingIncrement(by: lines, ordering: .relaxed)
        }
        if lost > 0 { w.outgoing.append(contentsOf: Array("skipped=\(lost)\n".utf8)) }
        while !w.outgoing.isEmpty {
            let n = w.outgoing.withUnsafeBytes { send(w.fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT) | msgNoSignal) }
            if n > 0 {
                w.outgoing.removeFirst(n)
            } else {
                if n < 0 && errno != EAGAIN && errno != EINTR { w.closed.store(true, ordering: .relaxed) }
                return
            }
        }
    }
}

// MARK: - Line bodies (after `type=`), memcached's field names

extension WatchHub {
    func fetch(_ key: UnsafeRawBufferPointer, found: Bool, size: Int, fd: Int32) {
        emit(.fetchers) { o in
            o.append("item_get key=")
            o.append(key)
            o.append(found ? " status=found clsid=1 cfd=" : " status=not_found clsid=0 cfd=")
            o.append(String(fd))
            o.append(" size=")
            o.appendDecimal(UInt64(found ? size : 0))
        }
    }

    func store(_ key: UnsafeRawBufferPointer, status: StaticString, command: StaticString, ttl: Int32, size: Int, fd: Int32) {
        emit(.mutations) { o in
            o.append("item_store key=")
            o.append(key)
            o.append(" status=")
            o.append(status)
            o.append(" cmd=")
            o.append(command)
            o.append(" ttl=")
            o.append(String(ttl))
            o.append(" clsid=1 cfd=")
            o.append(String(fd))
            o.append(" size=")
            o.appendDecimal(UInt64(size))
        }
    }

    func delete(_ key: UnsafeRawBufferPointer, outcome: StaticString, command: StaticString, fd: Int32) {
        emit(.deletions) { o in
            o.append("item_delete key=")
            o.append(key)
            o.append(" status=")
            o.append(outcome)
            o.append(" cmd=")
            o.append(command)
            o.append(" cfd=")
            o.append(String(fd))
        }
    }

    func eviction(_ key: UnsafeRawBufferPointer, fetched: Bool, ttl: Int64) {
        emit(.evictions) { o in
            o.append("eviction key=")
            o.append(key)
            o.append(fetched ? " fetch=yes ttl=" : " fetch=no ttl=")
            o.append(String(ttl))
            o.append(" la=0 clsid=1")
        }
    }
}
