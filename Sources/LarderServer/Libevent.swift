// The one place libevent is called from. Wraps the calls Larder needs, checks their return
// codes, and keeps libevent's C types inside this module.
import CLibevent
#if canImport(Glibc)
import Glibc
#endif

/// libevent failed in a way the server cannot continue from.
struct LibeventError: Error, CustomStringConvertible {
    var call: String
    var description: String { "libevent: \(call) failed" }
}

enum Libevent {
    /// Must run before any event_base is created: one thread wakes another's base.
    static func enableThreads() throws {
        guard evthread_use_pthreads() == 0 else { throw LibeventError(call: "evthread_use_pthreads") }
    }

    static func newBase() throws -> OpaquePointer {
        guard let b = event_base_new() else { throw LibeventError(call: "event_base_new") }
        return b
    }

    typealias Callback = @convention(c) (Int32, Int16, UnsafeMutableRawPointer?) -> Void

    static func newEvent(_ base: OpaquePointer, fd: Int32, what: Int32, arg: UnsafeMutableRawPointer?,
                         _ cb: Callback) throws -> OpaquePointer {
        guard let e = event_new(base, fd, Int16(what), cb, arg) else { throw LibeventError(call: "event_new") }
        return e
    }

    static func add(_ e: OpaquePointer, timeoutSeconds: Double? = nil) {
        var rc: Int32
        if let t = timeoutSeconds {
            var tv = timeval(tv_sec: Int(t), tv_usec: Int((t - Double(Int(t))) * 1_000_000))
            rc = event_add(e, &tv)
        } else {
            rc = event_add(e, nil)
        }
        // event_add fails only on invalid arguments or out of memory in the backend.
        precondition(rc == 0, "event_add failed")
    }

    static func del(_ e: OpaquePointer) {
        _ = event_del(e)
    }

    static func free(_ e: OpaquePointer) {
        event_free(e)
    }

    static func activate(_ e: OpaquePointer) {
        event_active(e, EV_READ, 0)
    }

    static let read = Int32(EV_READ)
    static let write = Int32(EV_WRITE)
    static let persist = Int32(EV_PERSIST)
    static let signal = Int32(EV_SIGNAL)
}
