// One client connection, owned by one worker thread and touched by no other. It reads what
// the socket has, parses and executes every complete request in the buffer, and writes all
// the replies of that batch with one writev. EV_WRITE is armed only while output is stuck
// (memcached's way: no epoll_ctl per reply). A large value is read straight into a buffer
// sized once from the announced length, so assembling it copies each byte once.
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
    private var dispatcher: Dispatcher
    private var out = OutputQueue()

    // Input buffer: bytes [start, end) are unread.
    private var input: UnsafeMutableRawPointer
    private var capacity: Int
    private var start = 0
    private var end = 0

    private var readPaused = false
    private var writeArmed = false
    /// Close once the output has drained (quit, peer EOF, shutdown, unrecoverable input).
    private var closeAfterWrite = false
    private(set) var closed = false
    /// What `stats conns` shows; the registry holds it weakly, so it goes with the connection.
    var info: ConnectionInfo?
    /// Whether --idle-timeout is on (read once, not per read).
    private let tracksIdleness: Bool
    /// When the client last sent anything (for --idle-timeout).
    private(set) var lastActivity: UInt64 = monotonicNanos()
    /// True when no reply is waiting to be written.
    var outputDrained: Bool { out.isEmpty }

    /// Initial and steady-state size of the input buffer.
    static let baseInputCapacity = 16 * 1024
    /// A buffer grown for a large value is kept up to this size (so a client storing 100 KB
    /// values does not reallocate per set) and given back above it (bounding idle memory per
    /// connection).
    static let keptInputCapacity = 256 * 1024
    /// Stop reading from a client while this much output waits for it to read (a client that
    /// pipelines requests and never reads must not make the server buffer without bound).
    static let outputHighWater = 4 * 1024 * 1024

    init(fd: Int32, worker: Worker) {
        self.fd = fd
        self.worker = worker
        parser = Parser(limits: ProtocolLimits(maxItemSize: worker.context.config.maxItemSize))
        dispatcher = Dispatcher(context: worker.context, counters: worker.counters,
                                timed: worker.context.config.metricsPort != 0, fd: fd)
        tracksIdleness = worker.context.config.idleTimeout > 0
        capacity = Connection.baseInputCapacity
        input = .allocate(byteCount: capacity, alignment: 16)
    }

    deinit {
        input.deallocate()
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
            return false
        }
        Libevent.add(readEvent!)
        return true
    }

    // MARK: - Reading

    func onReadable() {
        if closed { return }
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
        let want = max(parser.bytesWanted, end - start + 1)
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
        }
    }

    private func processInput() {
        // Latency is chained: each command is timed from the end of the previous one (or the
        // start of this batch) to its reply being queued, so it costs one clock read, not two.
        let timed = dispatcher.timed
        let nanosPerTick = Ticks.nanosPerTick
        let counters = dispatcher.counters
        var stamp: UInt64 = timed ? Ticks.now(nanosPerTick) : 0
        while start < end && !closeAfterWrite {
            let buf = UnsafeRawBufferPointer(start: input + start, count: end - start)
            switch parser.parse(buf) {
            case .command(let cmd, let consumed):
                let (next, group) = dispatcher.execute(cmd, in: buf, out: &out)
                if timed {
                    let now = Ticks.now(nanosPerTick)
                    counters.observe(group, nanoseconds: Ticks.nanoseconds(now &- stamp, nanosPerTick))
                    stamp = now
                }
                start += consumed
                if next == .close {
                    closeAfterWrite = true
                    pauseReading()
                    return
                }
                if out.queuedBytes > Connection.outputHighWater {
                    // Send what we have; if the client is not reading, stop reading from it.
                    flush()
                    if out.queuedBytes > Connection.outputHighWater {
                        pauseReading()
                        return
                    }
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
        if start == end {
            start = 0
            end = 0
        }
    }

    private func pauseReading() {
        if !readPaused, let e = readEvent {
            Libevent.del(e)
            readPaused = true
        }
    }

    private func resumeReading() {
        if readPaused && !closeAfterWrite, let e = readEvent {
            Libevent.add(e)
            readPaused = false
            // Requests may already be buffered; run them now rather than waiting for more bytes.
            processInput()
        }
    }

    // MARK: - Writing

    func onWritable() {
        if closed { return }
        flush()
    }

    /// Writes pending output; arms EV_WRITE only if the socket would block.
    func flush() {
        if closed { return }
        if !out.isEmpty {
            let (result, written) = out.flush(fd: fd)
            if written > 0 { dispatcher.counters.add(.bytesWritten, UInt64(written)) }
            switch result {
            case .failed:
                close()
                return
            case .blocked:
                if !writeArmed, let e = writeEvent {
                    Libevent.add(e)
                    writeArmed = true
                }
                return
            case .done:
                break
            }
        }
        if writeArmed, let e = writeEvent {
            Libevent.del(e)
            writeArmed = false
        }
        if closeAfterWrite {
            close()
            return
        }
        if readPaused {
            resumeReading()
            if !out.isEmpty { flush() }
        }
    }

    /// Stops reading and closes once everything queued has been written (graceful shutdown).
    func finishAndClose() {
        closeAfterWrite = true
        pauseReading()
        flush()
    }

    func close() {
        if closed { return }
        closed = true
        if let e = readEvent { Libevent.free(e) }
        if let e = writeEvent { Libevent.free(e) }
        readEvent = nil
        writeEvent = nil
        _ = Glibc.close(fd)
        out = OutputQueue()
        info = nil
        worker.connectionClosed(self)
    }
}

// libevent callbacks. The argument is the connection, unretained: the worker's table holds it
// alive until `close`, which frees both events first so no callback can follow.
private func connectionReadable(_ fd: Int32, _ what: Int16, _ arg: UnsafeMutableRawPointer?) {
    let c = Unmanaged<Connection>.fromOpaque(arg!).takeUnretainedValue()
    c.onReadable()
}

private func connectionWritable(_ fd: Int32, _ what: Int16, _ arg: UnsafeMutableRawPointer?) {
    let c = Unmanaged<Connection>.fromOpaque(arg!).takeUnretainedValue()
    c.onWritable()
}
