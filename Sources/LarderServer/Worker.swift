// A worker thread: its own event_base, the connections handed to it by the acceptor, and its
// own counter block. Everything here runs on the worker's thread except `hand(fd:)` and
// `beginShutdown()`, which queue work and wake the base with event_active.
import CLibevent
import LarderMetrics
import LarderStore
#if canImport(Glibc)
import Glibc
#endif

final class Worker: @unchecked Sendable {
    // @unchecked Sendable: `base` and `connections` are used only on the worker's own thread;
    // the cross-thread entry points go through `inbox` (mutex) and event_active, which
    // libevent makes thread-safe after evthread_use_pthreads().
    let id: Int
    let base: OpaquePointer
    let context: ServerContext
    let counters: CounterBlock
    private var connections: [Int32: Connection] = [:]
    private let inboxLock = Mutex()
    // nonisolated(unsafe)-like: guarded by inboxLock.
    private var inbox: [(fd: Int32, peer: String)] = []
    private var shuttingDown = false
    private var notifyEvent: OpaquePointer?
    private var shutdownEvent: OpaquePointer?
    private var idleTimer: OpaquePointer?
    private let shutdownRequested = Mutex()
    private var thread: pthread_t?

    init(id: Int, context: ServerContext) throws {
        self.id = id
        self.context = context
        counters = context.workerCounters[id]
        base = try Libevent.newBase()
        let arg = Unmanaged.passUnretained(self).toOpaque()
        notifyEvent = try Libevent.newEvent(base, fd: -1, what: 0, arg: arg, workerNotified)
        if context.config.idleTimeout > 0 {
            idleTimer = try Libevent.newEvent(base, fd: -1, what: Libevent.persist, arg: arg, workerIdleCheck)
            Libevent.add(idleTimer!, timeoutSeconds: 1)
        }
        shutdownEvent = try Libevent.newEvent(base, fd: -1, what: 0, arg: arg, workerShutdown)
    }

    func start() {
        thread = startThread(name: "larder-worker-\(id)") { [self] in
            event_base_loop(base, Int32(EVLOOP_NO_EXIT_ON_EMPTY))
        }
    }

    func join() {
        if let t = thread { pthread_join(t, nil) }
    }

    /// Called by the acceptor thread: queue the fd and wake the worker.
    func hand(fd: Int32, peer: String) {
        inboxLock.withLock { inbox.append((fd, peer)) }
        Libevent.activate(notifyEvent!)
    }

    /// Called from the acceptor thread on SIGTERM/SIGINT.
    func beginShutdown() {
        Libevent.activate(shutdownEvent!)
    }

    fileprivate func drainInbox() {
        let pending = inboxLock.withLock { () -> [(fd: Int32, peer: String)] in
            let p = inbox
            inbox.removeAll()
            return p
        }
        for (fd, peer) in pending {
            if shuttingDown {
                _ = Glibc.close(fd)
                context.connections.current.wrappingDecrement(ordering: .relaxed)
                continue
            }
            let c = Connection(fd: fd, worker: self)
            guard c.register() else {
                _ = Glibc.close(fd)
                context.connections.current.wrappingDecrement(ordering: .relaxed)
                continue
            }
            connections[fd] = c
            let info = ConnectionInfo(fd: fd, peer: peer, openedAt: context.store.clock.now())
            c.info = info
            context.register(info)
        }
    }

    fileprivate func shutdown() {
        shuttingDown = true
        for c in Array(connections.values) { c.finishAndClose() }
        if connections.isEmpty {
            event_base_loopexit(base, nil)
        } else {
            // Give slow readers a bounded time to take their replies.
            var tv = timeval(tv_sec: 4, tv_usec: 0)
            event_base_loopexit(base, &tv)
        }
    }

    /// Closes connections idle longer than --idle-timeout (timer, once a second).
    fileprivate func closeIdle() {
        let limit = UInt64(context.config.idleTimeout) * 1_000_000_000
        let now = monotonicNanos()
        for c in Array(connections.values) where now &- c.lastActivity > limit && c.outputDrained {
            c.close()
        }
    }

    func connectionClosed(_ c: Connection) {
        connections.removeValue(forKey: c.fd)
        context.connections.current.wrappingDecrement(ordering: .relaxed)
        if shuttingDown && connections.isEmpty {
            event_base_loopexit(base, nil)
        }
    }
}

private func workerNotified(_ fd: Int32, _ what: Int16, _ arg: UnsafeMutableRawPointer?) {
    Unmanaged<Worker>.fromOpaque(arg!).takeUnretainedValue().drainInbox()
}

private func workerShutdown(_ fd: Int32, _ what: Int16, _ arg: UnsafeMutableRawPointer?) {
    Unmanaged<Worker>.fromOpaque(arg!).takeUnretainedValue().shutdown()
}

private func workerIdleCheck(_ fd: Int32, _ what: Int16, _ arg: UnsafeMutableRawPointer?) {
    Unmanaged<Worker>.fromOpaque(arg!).takeUnretainedValue().closeIdle()
}
