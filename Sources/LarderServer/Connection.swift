// One client connection, owned by one worker thread and touched by no other. It reads what
// the socket has, parses and executes every complete request in the buffer, and writes all
// the replies of that batch with one writev. EV_WRITE is armed only while output is stuck
// (memcached's way: no epoll_ctl per reply). A large value is read straight into a buffer
// sized once from the announced length, so assembling it copies each byte once. What the
// connection holds (input buffer, queued replies and the values they pin, its state) is
// charged to the client-memory budget whenever it changes; a multi-get whose replies reach
// the output limit is paused mid-way and resumed once the client has read; a graceful close
// shuts down the sending side and drains unread input so the kernel does not reset the
// connection and destroy replies still queued. A TLS connection (docs/TLS.md) runs the same
// loop through its TLSStream: the handshake first, driven by whichever event OpenSSL waits
// for, then SSL_read and SSL_write in place of read and writev; the plain path pays one
// nil check per event for it.
import CLibevent
import LarderProtocol
import LarderMetrics
import LarderStore
#if canImport(Glibc)
import Glibc
#endif

final class Connection {
    let fd: Int32
    unowned let worker: Worker
    private var readEvent: OpaquePointer?
    private var writeEvent: OpaquePointer?
    private var parser: Parser
    /// memcached's authentication reader (`-Y`), in place of the parser until the connection
    /// has authenticated; nil without -Y and once authenticated.
    private var auth: AuthParser?
    private var dispatcher: Dispatcher
    private var out = OutputQueue()
    /// The TLS session, for a connection accepted on a TLS listener.
    private var tls: TLSStream?
    /// Where replies spread over several segments are gathered for one SSL_write.
    private var tlsStaging: UnsafeMutableRawPointer?
    /// SSL_read needs the socket writable (or SSL_write readable) before it can go on.
    private var tlsReadWantsWrite = false
    private var tlsWriteWantsRead = false
    /// What OpenSSL holds for this connection, charged to the budget (0 for plain ones).
    private var tlsHeld = 0

    // Input buffer: bytes [start, end) are unread.
    private var input: UnsafeMutableRawPointer
    private var capacity: Int
    private var start = 0
    private var end = 0

    private var readPaused = false
    private var writeArmed = false
    /// Close once the output has drained (quit, peer EOF, shutdown, unrecoverable input).
    private var closeAfterWrite = false
    /// Shut down the sending side and drain input before closing (graceful closes only).
    private var lingerOnClose = false
    /// Sending side shut down; reading only to discard until EOF, a byte cap or a timeout.
    private var lingering = false
    private var lingerDiscarded = 0
    /// A multi-get paused at the output limit: the request (its ranges point into the input
    /// at `start`, which is not advanced until it completes), its length, and the next key.
    private var pendingGet: (cmd: Command, consumed: Int, nextKey: Int)?
    private(set) var closed = false
    /// What `stats conns` shows; the registry holds it weakly, so it goes with the connection.
    var info: ConnectionInfo?
    /// Whether --idle-timeout is on (read once, not per read).
    private let tracksIdleness: Bool
    /// When the client last sent anything (for --idle-timeout).
    private(set) var lastActivity: UInt64 = monotonicNanos()
    /// Since when the replies have sat at the output limit unread (0: they do not).
    private(set) var stalledSince: UInt64 = 0
    /// Bytes this connection is charged against the client-memory budget right now.
    private(set) var charged = 0
    /// True when no reply is waiting to be written.
    var outputDrained: Bool { out.isEmpty }

    /// Initial and steady-state size of the input buffer.
    static let baseInputCapacity = 16 * 1024
    /// A buffer grown for a large value is kept up to this size (so a client storing 100 KB
    /// values does not reallocate per set) and given back above it (bounding idle memory per
    /// connection).
    static let keptInputCapacity = 256 * 1024
    /// Stop reading from a client while this much output waits for it to read (a client that
    /// pipelines requests and never reads must not make the server buffer without bound); a
    /// multi-get is paused mid-way at this size too.
    static let outputHighWater = 4 * 1024 * 1024
    /// What a connection holds besides its buffers: this object, the parser's token array,
    /// the iovec array (1 KB), two libevent events, the `stats conns` record.
    static let fixedBytes = 3 * 1024
    /// Graceful close: how long and how much unread input is drained after shutdown(SHUT_WR)
    /// before the descriptor is closed anyway.
    static let lingerSeconds = 2.0
    /// TLS records read per read event before the connection yields to the others.
    static let tlsReadsPerEvent = 16
    static let lingerMaxBytes = 1 << 20

    init(fd: Int32, worker: Worker, tls tlsContext: TLSContext? = nil) {
        self.fd = fd
        self.worker = worker
        parser = Parser(limits: ProtocolLimits(maxItemSize: worker.context.config.maxItemSize))
        dispatcher = Dispatcher(context: worker.context, counters: worker.counters,
                                timed: worker.context.config.metricsPort != 0, fd: fd, tls: tlsContext != nil)
        tracksIdleness = worker.context.config.idleTimeout > 0
        auth = worker.context.config.authFile == nil ? nil : AuthParser()
        capacity = Connection.baseInputCapacity
        input = .allocate(byteCount: capacity, alignment: 16)
        if let t = tlsContext {
            tls = TLSStream(context: t, fd: fd)
            tlsHeld = TLSContext.perConnectionBytes
        }
    }

    deinit {
        input.deallocate()
        tlsStaging?.deallocate()
    }

    /// Registers the connection's events with the worker's base. Returns false on failure.
    func register() -> Bool {
        let arg = Unmanaged.passUnretained(self).toOpaque()
        do {
            readEvent = try Libevent.newEvent(worker.base, fd: fd, what: Libevent.read | Libevent.persist, arg: arg,
                                              connectionReadable)
            writeEvent = try Libevent.newEvent(worker.base, fd: fd, what: Libevent.write | Libevent.persist, arg: arg,
                                               connectionWritable)
        } catch {
            freeEvents()
            return false
        }
        if tlsHeld > 0 {
            // A TLS listener's connection whose SSL object could not be made.
            guard tls != nil else {
                freeEvents()
                return false
            }
            // Until the handshake completes, the read event also times out.
            Libevent.add(readEvent!, timeoutSeconds: Double(worker.context.config.tls.handshakeTimeout))
        } else {
            Libevent.add(readEvent!)
        }
        updateCharge()
        return true
    }

    /// Frees the events of a connection that could not be registered (never added).
    private func freeEvents() {
        if let e = readEvent { Libevent.free(e) }
        if let e = writeEvent { Libevent.free(e) }
        readEvent = nil
        writeEvent = nil
    }

    // MARK: - Client-memory budget

    /// Re-computes what the connection holds and charges the difference to the worker's
    /// slot. Runs once per read or write event; when nothing changed (the usual case for
    /// small requests) it is a few loads and a compare.
    @inline(__always)
    private func updateCharge() {
        let now = closed ? 0 : capacity + out.heldBytes + Connection.fixedBytes + tlsHeld
        let delta = now - charged
        if delta == 0 { return }
        charged = now
        worker.context.clientMemory.add(worker: worker.id, delta)
        if delta > 0 && now > ClientMemory.protectedBytes { worker.checkClientMemory() }
    }

    // MARK: - Reading

    func onReadable(timedOut: Bool = false) {
        if closed { return }
        if lingering {
            discardInput(timedOut: timedOut)
            return
        }
        if let t = tls {
            tlsReadable(t, timedOut: timedOut)
            return
        }
        ensureSpace()
        let n = read(fd, input + end, capacity - end)
        if n == 0 {
            // Peer finished sending: answer what was already read, then close.
            closeAfterWrite = true
            pauseReading()
            flush()
            return
        }
        if n < 0 {
            if errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR { return }
            close()
            return
        }
        end += n
        if tracksIdleness { lastActivity = monotonicNanos() }
        dispatcher.counters.add(.bytesRead, UInt64(n))
        processInput()
        flush()
    }

    /// Makes room for the next read: compacts consumed bytes away, and grows the buffer to
    /// the parser's known need (a large value) or doubles it.
    private func ensureSpace() {
        if start == end {
            start = 0
            end = 0
            if capacity > Connection.keptInputCapacity && parser.bytesWanted == 0 {
                input.deallocate()
                capacity = Connection.baseInputCapacity
                input = .allocate(byteCount: capacity, alignment: 16)
            }
        }
        let want = max(parser.bytesWanted, auth?.bytesWanted ?? 0, end - start + 1)
        if capacity - start >= want && end < capacity { return }
        if start > 0 {
            memmove(input, input + start, end - start)
            end -= start
            start = 0
        }
        if end == capacity || want > capacity {
            let newCap = max(want, capacity * 2)
            let bigger = UnsafeMutableRawPointer.allocate(byteCount: newCap, alignment: 16)
            bigger.copyMemory(from: input, byteCount: end)
            input.deallocate()
            input = bigger
            capacity = newCap
            // Charge a grown buffer before filling it, so a crowd of connections each
            // announcing a large value is seen as it builds up.
            updateCharge()
        }
    }

    /// Runs the paused multi-get if any, then every complete request in the buffer, until
    /// the input runs out, the output stays at its limit (the socket takes no more), or the
    /// connection is to close. The caller flushes what is left.
    private func processInput() {
        // Latency is chained: each command is timed from the end of the previous one (or the
        // start of this batch) to its reply being queued, so it costs one clock read, not two.
        let timed = dispatcher.timed
        let nanosPerTick = Ticks.nanosPerTick
        let counters = dispatcher.counters
        var stamp: UInt64 = timed ? Ticks.now(nanosPerTick) : 0
        while !closed {
            if let p = pendingGet {
                let buf = UnsafeRawBufferPointer(start: input + start, count: end - start)
                if case .paused(let k) = dispatcher.resumeGet(p.cmd, in: buf, from: p.nextKey, out: &out) {
                    pendingGet!.nextKey = k
                    if writeInline() { continue }
                    pauseReading()
                    return
                }
                start += p.consumed
                pendingGet = nil
            }
            guard start < end && !closeAfterWrite else { break }
            if auth != nil {
                guard authenticate() else { return }
                if out.queuedBytes > Connection.outputHighWater && !writeInline() {
                    if !closed { pauseReading() }
                    return
                }
                continue
            }
            let buf = UnsafeRawBufferPointer(start: input + start, count: end - start)
            switch parser.parse(buf) {
            case .command(let cmd, let consumed):
                let (next, group) = dispatcher.execute(cmd, in: buf, out: &out)
                if timed {
                    let now = Ticks.now(nanosPerTick)
                    counters.observe(group, nanoseconds: Ticks.nanoseconds(now &- stamp, nanosPerTick))
                    stamp = now
                }
                switch next {
                case .proceed:
                    start += consumed
                case .close:
                    start += consumed
                    closeAfterWrite = true
                    lingerOnClose = true
                    pauseReading()
                    return
                case .handedOff:
                    // No shutdown(SHUT_WR): it would act on the socket the new owner writes to.
                    start += consumed
                    closeAfterWrite = true
                    lingerOnClose = false
                    pauseReading()
                    return
                case .paused(let k):
                    // Replies reached the output limit mid-get: send what the socket takes
                    // and go on, or wait for the client to read.
                    pendingGet = (cmd, consumed, k)
                    if writeInline() { continue }
                    pauseReading()
                    return
                }
                if out.queuedBytes > Connection.outputHighWater && !writeInline() {
                    // The client is not reading: stop here; reading resumes once it has.
                    if !closed { pauseReading() }
                    return
                }
            case .skipped(let count):
                start += count
            case .needMore:
                return
            case .close:
                closeAfterWrite = true
                pauseReading()
                return
            }
        }
        if start == end && pendingGet == nil {
            start = 0
            end = 0
        }
    }

    /// One step of memcached's authentication reader on a connection that has not
    /// authenticated: every request but the auth `set` is refused, and a good `user password`
    /// switches the connection to the command parser. memcached keeps the connection open
    /// after a failure. Returns false when processing stops (more input needed, or closing).
    private func authenticate() -> Bool {
        let buf = UnsafeRawBufferPointer(start: input + start, count: end - start)
        let counters = dispatcher.counters
        switch auth!.parse(buf) {
        case .needMore:
            return false
        case .line(let consumed):
            start += consumed
        case .refuse(let error, let consumed):
            start += consumed
            counters.add(.protocolErrors)
            ReplyEncoder.append(.error(error), to: out.text)
        case .credentials(let user, let password, let consumed):
            let ok = worker.context.authUsers.current?.check(user: UnsafeRawBufferPointer(rebasing: buf[user]),
                                                             password: UnsafeRawBufferPointer(rebasing: buf[password])) ?? false
            start += consumed
            counters.add(.authCmds)
            if ok {
                auth = nil
                ReplyEncoder.append(.stored, to: out.text)
            } else {
                counters.add(.authErrors)
                ReplyEncoder.append(.error(.authenticationFailure), to: out.text)
            }
        case .close:
            closeAfterWrite = true
            pauseReading()
            return false
        }
        return true
    }

    /// Writes what the socket takes now, from inside a batch; true if the queue is back under
    /// the output limit (closes the connection on a write error and returns false).
    private func writeInline() -> Bool {
        let (result, written) = writeOut()
        if written > 0 { dispatcher.counters.add(.bytesWritten, UInt64(written)) }
        if result == .failed {
            close()
            return false
        }
        return out.queuedBytes <= Connection.outputHighWater
    }

    private func pauseReading() {
        if !readPaused, let e = readEvent {
            Libevent.del(e)
            readPaused = true
        }
    }

    // MARK: - Writing

    func onWritable() {
        if closed { return }
        if let t = tls, !t.handshakeDone || tlsReadWantsWrite {
            if tlsReadWantsWrite, !readPaused, let e = readEvent { Libevent.add(e) }
            tlsReadWantsWrite = false
            disarmWrite()
            tlsReadable(t, timedOut: false)
            return
        }
        flush()
    }

    private func disarmWrite() {
        if writeArmed, let e = writeEvent {
            Libevent.del(e)
            writeArmed = false
        }
    }

    /// One write attempt of the queued replies: writev, or SSL_write for TLS.
    @inline(__always)
    private func writeOut() -> (OutputQueue.FlushResult, written: Int) {
        guard let t = tls else { return out.flush(fd: fd) }
        let hadStaging = tlsStaging != nil
        let (result, written, wantsRead) = out.flush(tls: t, staging: &tlsStaging)
        tlsWriteWantsRead = wantsRead
        if !hadStaging && tlsStaging != nil { tlsHeld += OutputQueue.tlsGather }
        return (result, written)
    }

    // MARK: - TLS

    /// The read event of a TLS connection: advance the handshake (closing it past the
    /// handshake timeout), then decrypt what has arrived and process it as the plain path
    /// does. Each callback reads until OpenSSL holds no more buffered input, so records that
    /// arrived together are answered in one batch.
    private func tlsReadable(_ t: TLSStream, timedOut: Bool) {
        if tlsWriteWantsRead {
            tlsWriteWantsRead = false
            flush()
            if closed { return }
            if readPaused {
                // The read event was added only for SSL_write's sake: not reading yet.
                if !tlsWriteWantsRead, let e = readEvent { Libevent.del(e) }
                return
            }
        }
        if !t.handshakeDone {
            let limit = UInt64(worker.context.config.tls.handshakeTimeout) * 1_000_000_000
            if timedOut || monotonicNanos() &- t.startedAt > limit {
                dispatcher.counters.add(.tlsHandshakeErrors, 1)
                close()
                return
            }
            switch t.handshake() {
            case .bytes:
                dispatcher.counters.add(.tlsHandshakes, 1)
                disarmWrite()
                if let e = readEvent {  // no timeout from here on (event_add alone would keep it)
                    Libevent.del(e)
                    Libevent.add(e)
                }
            case .wantRead:
                disarmWrite()
                return
            case .wantWrite:
                if !writeArmed, let e = writeEvent {
                    Libevent.add(e)
                    writeArmed = true
                }
                return
            case .closed, .failed:
                dispatcher.counters.add(.tlsHandshakeErrors, 1)
                close()
                return
            }
        }
        if tlsReadWantsWrite { return }
        // Records OpenSSL already holds are read in this callback, up to a bound: a client
        // streaming requests must not keep the worker from its other connections. Past the
        // bound the event is made active again, so what OpenSSL holds (which poll cannot see)
        // is read on the next turn of the loop.
        var rounds = 0
        while !closed && !readPaused && !closeAfterWrite {
            ensureSpace()
            switch t.read(input + end, capacity - end) {
            case .bytes(let n):
                end += n
                if tracksIdleness { lastActivity = monotonicNanos() }
                dispatcher.counters.add(.bytesRead, UInt64(n))
                processInput()
                if t.hasPending {
                    rounds += 1
                    if rounds < Connection.tlsReadsPerEvent { continue }
                    if !closed && !readPaused, let e = readEvent { Libevent.activate(e) }
                }
            case .wantRead:
                break
            case .wantWrite:
                // SSL_read must write first (a key update, a renegotiation refusal). Until the
                // socket is writable reading cannot progress, so the level-triggered read
                // event is removed (it would fire in a loop) and onWritable restores it.
                tlsReadWantsWrite = true
                if let e = readEvent { Libevent.del(e) }
                if !writeArmed, let e = writeEvent {
                    Libevent.add(e)
                    writeArmed = true
                }
            case .closed:
                closeAfterWrite = true
                pauseReading()
            case .failed:
                close()
                return
            }
            break
        }
        flush()
    }

    /// Writes pending output, arming EV_WRITE only if the socket would block. Once the output
    /// has drained it continues a paused multi-get and the requests already buffered, and
    /// resumes reading; a loop rather than recursion, however many times the socket takes a
    /// whole batch at once.
    func flush() {
        while !closed {
            if !out.isEmpty {
                let (result, written) = writeOut()
                if written > 0 { dispatcher.counters.add(.bytesWritten, UInt64(written)) }
                switch result {
                case .failed:
                    close()
                    return
                case .blocked:
                    if tlsWriteWantsRead {
                        // SSL_write waits for the peer: retried from the read event.
                        if let e = readEvent { Libevent.add(e) }
                    } else if !writeArmed, let e = writeEvent {
                        Libevent.add(e)
                        writeArmed = true
                    }
                    // Reading stopped because replies reached the limit (the rest of them
                    // is in the socket's buffers), and the client is not taking them.
                    if (readPaused && !closeAfterWrite) || pendingGet != nil {
                        if stalledSince == 0 { stalledSince = monotonicNanos() }
                    } else {
                        stalledSince = 0
                    }
                    updateCharge()
                    return
                case .done:
                    break
                }
            }
            stalledSince = 0
            // (Kept armed while SSL_read waits to write: its wake-up is the write event.)
            if writeArmed && !tlsReadWantsWrite, let e = writeEvent {
                Libevent.del(e)
                writeArmed = false
            }
            if closeAfterWrite && pendingGet == nil {
                finishClose()
                return
            }
            if !readPaused {
                updateCharge()
                return
            }
            // Output drained while paused: continue where processing stopped.
            processInput()
            if !readPaused || closed { continue }
            if pendingGet == nil && !closeAfterWrite && out.queuedBytes <= Connection.outputHighWater,
               let e = readEvent {
                Libevent.add(e)
                readPaused = false
                // Records OpenSSL already read from the socket: no readiness will announce them.
                if let t = tls, t.hasPending { Libevent.activate(e) }
            }
            if out.isEmpty && !(closeAfterWrite && pendingGet == nil) {
                updateCharge()
                return
            }
        }
    }

    /// Stops reading and closes once everything queued has been written (graceful shutdown);
    /// a multi-get in progress is completed first.
    func finishAndClose() {
        closeAfterWrite = true
        lingerOnClose = true
        pauseReading()
        flush()
    }

    /// All replies are written: close now, or for a graceful close shut down the sending side
    /// first and drain what the client still sends, so unread input does not make the kernel
    /// answer with a reset that would destroy replies not yet delivered.
    private func finishClose() {
        guard lingerOnClose, let e = readEvent else {
            close()
            return
        }
        tls?.shutdown()
        if Glibc.shutdown(fd, Int32(SHUT_WR)) != 0 {
            close()
            return
        }
        lingering = true
        lingerStarted = monotonicNanos()
        // Unread input is discarded through a small stack buffer from here on; the read
        // event's timeout bounds the wait for the client's EOF.
        if !readPaused { Libevent.del(e) }
        readPaused = false
        Libevent.add(e, timeoutSeconds: Connection.lingerSeconds)
    }

    /// Reads and drops input after shutdown(SHUT_WR) until EOF, an error, the byte cap or
    /// the time limit (counted from the shutdown, however the client trickles), then closes.
    private func discardInput(timedOut: Bool) {
        if timedOut || monotonicNanos() &- lingerStarted > UInt64(Connection.lingerSeconds * 1e9) {
            close()
            return
        }
        var scratch = (UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        let size = MemoryLayout.size(ofValue: scratch)
        while lingerDiscarded < Connection.lingerMaxBytes {
            let n = withUnsafeMutableBytes(of: &scratch) { read(fd, $0.baseAddress, size) }
            if n > 0 {
                lingerDiscarded += n
                continue
            }
            if n < 0 && errno == EINTR { continue }
            if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) { return }  // wait for more or EOF
            break  // EOF or error
        }
        close()
    }
    private var lingerStarted: UInt64 = 0

    /// Closes now, whatever is queued (budget reclaim, output timeout, errors).
    func close() {
        if closed { return }
        closed = true
        if let e = readEvent { Libevent.free(e) }
        if let e = writeEvent { Libevent.free(e) }
        readEvent = nil
        writeEvent = nil
        tls = nil  // frees the SSL object (no close_notify: the close is abrupt or already sent)
        _ = Glibc.close(fd)
        out = OutputQueue()
        pendingGet = nil
        updateCharge()
        info = nil
        worker.connectionClosed(self)
    }
}

// libevent callbacks. The argument is the connection, unretained: the worker's table holds it
// alive until `close`, which frees both events first so no callback can follow.
private func connectionReadable(_ fd: Int32, _ what: Int16, _ arg: UnsafeMutableRawPointer?) {
    let c = Unmanaged<Connection>.fromOpaque(arg!).takeUnretainedValue()
    c.onReadable(timedOut: Int32(what) & Int32(EV_TIMEOUT) != 0)
}

private func connectionWritable(_ fd: Int32, _ what: Int16, _ arg: UnsafeMutableRawPointer?) {
    let c = Unmanaged<Connection>.fromOpaque(arg!).takeUnretainedValue()
    c.onWritable()
}
