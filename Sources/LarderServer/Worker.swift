// A worker thread: its own event_base, the connections handed to it by the acceptor, and its
// own counter block. Everything here runs on the worker's thread except `hand(fd:)`,
// `beginShutdown()` and `requestReclaim()`, which queue work and wake the base with
// event_active. Once a second it closes idle connections (--idle-timeout) and connections
// whose replies sat at the output limit too long (--output-timeout); woken by the
// client-memory budget, it closes its connections holding the most, biggest first.
import Atomics
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
    private var housekeepingTimer: OpaquePointer?
    private var reclaimEvent: OpaquePointer?
    /// Set when a reclaim has been requested and not yet run (any thread sets it; the worker
    /// clears it when the reclaim starts), so a burst of requests wakes the worker once.
    private let reclaimPending = ManagedAtomic<Bool>(false)
    private let shutdownRequested = Mutex()
    private var thread: pthread_t?

    init(id: Int, context: ServerContext) throws {
        self.id = id
        self.context = context
        counters = context.workerCounters[id]
        base = try Libevent.newBase()
        let arg = Unmanaged.passUnretained(self).toOpaque()
        notifyEvent = try Libevent.newEvent(base, fd: -1, what: 0, arg: arg, workerNotified)
        if context.config.idleTimeout > 0 || context.config.outputTimeout > 0 {
            // Armed only while this worker has connections: an idle server does not wake
            // every worker once a second.
            housekeepingTimer = try Libevent.newEvent(base, fd: -1, what: 0, arg: arg, workerHousekeeping)
        }
        reclaimEvent = try Libevent.newEvent(base, fd: -1, what: 0, arg: arg, workerReclaim)
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
            if connections.count == 1, let t = housekeepingTimer { Libevent.add(t, timeoutSeconds: 1) }
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

    /// Once a second: closes connections idle longer than --idle-timeout, and connections
    /// whose replies have sat at the output limit unread longer than --output-timeout.
    fileprivate func housekeeping() {
        let idle = UInt64(context.config.idleTimeout) * 1_000_000_000
        let stall = UInt64(context.config.outputTimeout) * 1_000_000_000
        let now = monotonicNanos()
        for c in Array(connections.values) {
            if idle > 0 && now &- c.lastActivity > idle && c.outputDrained {
                c.close()
            } else if stall > 0 && c.stalledSince != 0 && now &- c.stalledSince > stall {
                context.clientMemory.outputTimeouts.wrappingIncrement(ordering: .relaxed)
                c.close()
            }
        }
        if !connections.isEmpty, let t = housekeepingTimer { Libevent.add(t, timeoutSeconds: 1) }
    }

    /// A connection's holding grew past the protected size: if all clients together are now
    /// over the budget, wake every worker to reclaim (on this one too, after the current
    /// callback, so a connection is never closed under its own feet).
    func checkClientMemory() {
        if context.clientMemory.isOver { context.clientMemory.requestReclaim() }
    }

    /// Any thread: schedule a reclaim pass on this worker unless one is already pending.
    func requestReclaim() {
        if reclaimPending.exchange(true, ordering: .acquiringAndReleasing) { return }
        Libevent.activate(reclaimEvent!)
    }

    /// Closes this worker's connections holding the most, biggest first, while all clients
    /// together are over the budget. Connections holding no more than
    /// `ClientMemory.protectedBytes` are never closed. Workers run this concurrently, each on
    /// its own connections, re-reading the shared total before every close, so at most one
    /// connection per worker more than needed is closed.
    fileprivate func reclaim() {
        reclaimPending.store(false, ordering: .releasing)
        let budget = context.clientMemory
        guard budget.isOver else { return }
        let candidates = connections.values.filter { $0.charged > ClientMemory.protectedBytes }
            .sorted { $0.charged > $1.charged }
        for c in candidates {
            guard budget.isOver else { break }
            budget.evicted.wrappingIncrement(ordering: .relaxed)
            c.close()
        }
    }

    func connectionClosed(_ c: Connection) {
        connections.removeValue(forKey: c.fd)
        context.connections.current.wrappingDecrement(ordering: .relaxed)
        context.descriptorFreed()
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

private func workerHousekeeping(_ fd: Int32, _ what: Int16, _ arg: UnsafeMutableRawPointer?) {
    Unmanaged<Worker>.fromOpaque(arg!).takeUnretainedValue().housekeeping()
}

private func workerReclaim(_ fd: Int32, _ what: Int16, _ arg: UnsafeMutableRawPointer?) {
    Unmanaged<Worker>.fromOpaque(arg!).takeUnretainedValue().reclaim()
}
