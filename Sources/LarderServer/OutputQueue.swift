// A connection's pending output: reply text accumulated in one byte array, interleaved with
// references to large values sent straight from their own buffers. Values that live in the
// store's segments are copied into the text under the shard's read lock (nothing outside the
// store ever points into a segment); a large value stays alive (even if deleted or
// overwritten meanwhile) until its bytes have been written. A whole batch of replies leaves in
// one writev.
import LarderMetrics
import LarderProtocol
import LarderStore
#if canImport(Glibc)
import Glibc
#endif

struct OutputQueue {
    private enum Segment {
        case text(start: Int, end: Int)
        /// The first `count` bytes of a large value.
        case large(LargeValue, count: Int)
    }

    /// Reply text; encoders append here, then `commitText` makes it a segment.
    let text = ByteSink()
    private var segments: [Segment] = []
    private var head = 0
    private var headOffset = 0
    private var committed = 0
    /// Bytes queued and not yet written.
    private(set) var pendingBytes = 0
    /// Data-block bytes of the items still referenced (pinned) by queued replies.
    private var pinnedBytes = 0
    /// iovecs for writev, allocated once per connection (not per flush).
    private let iov = IOVecs()

    final class IOVecs {
        static let count = 64
        let base = UnsafeMutablePointer<iovec>.allocate(capacity: IOVecs.count)
        deinit { base.deallocate() }
    }

    init() {
        segments.reserveCapacity(16)
    }

    var isEmpty: Bool { pendingBytes == 0 && text.count == committed }

    /// Turns text appended since the last commit into (part of) a segment.
    @inline(__always)
    mutating func commitText() {
        let n = text.count
        guard n > committed else { return }
        if let last = segments.indices.last, last >= head, case .text(let s, let e) = segments[last], e == committed {
            segments[last] = .text(start: s, end: n)
        } else {
            segments.append(.text(start: committed, end: n))
        }
        pendingBytes += n - committed
        committed = n
    }

    /// Drops text appended since the last commit (a multi-get that failed part-way).
    mutating func discardUncommitted() {
        text.count = committed
    }

    /// Queues a found item's data block: the value, then "\r\n". Called under the shard's
    /// read lock, so inline bytes are copied now.
    @inline(__always)
    mutating func appendData(of item: borrowing FoundItem) {
        switch item.value {
        case .inline(let bytes):
            text.append(bytes)
        case .external(let value, let count):
            commitText()
            segments.append(.large(value, count: count))
            pendingBytes += count
            pinnedBytes += count
        }
        text.appendCRLF()
    }

    /// Memory this queue makes the server hold, for the client-memory budget: the reply-text
    /// buffer (copied values included), the large values its replies pin, and the segment list.
    var heldBytes: Int {
        text.capacity + pinnedBytes + segments.capacity * MemoryLayout<Segment>.stride
    }

    /// Bytes uncommitted plus pending (for backpressure decisions).
    var queuedBytes: Int { pendingBytes + (text.count - committed) }

    enum FlushResult { case done, blocked, failed }

    /// Writes as much as the socket takes, with one writev per up to 64 segments.
    mutating func flush(fd: Int32) -> (FlushResult, written: Int) {
        commitText()
        var total = 0
        while head < segments.count {
            let iov = self.iov.base
            let slots = min(IOVecs.count, segments.count - head)
            let tbase = text.base
            let result: Int = {
                var n = 0
                var k = head
                while n < slots && k < segments.count {
                    let skip = k == head ? headOffset : 0
                    switch segments[k] {
                    case .text(let s, let e):
                        iov[n] = iovec(iov_base: tbase + s + skip, iov_len: e - s - skip)
                    case .large(let value, let count):
                        iov[n] = iovec(iov_base: UnsafeMutableRawPointer(mutating: value.prefix(count).baseAddress! + skip),
                                       iov_len: count - skip)
                    }
                    n += 1
                    k += 1
                }
                return writev(fd, iov, Int32(n))
            }()
            if result < 0 {
                if errno == EAGAIN || errno == EWOULDBLOCK { return (.blocked, total) }
                if errno == EINTR { continue }
                return (.failed, total)
            }
            total += result
            pendingBytes -= result
            advance(by: result)
            if head < segments.count && result == 0 { return (.blocked, total) }
        }
        reset()
        return (.done, total)
    }

    /// Everything is out: reset, keeping modest buffers and dropping huge ones.
    private mutating func reset() {
        segments.removeAll(keepingCapacity: segments.capacity <= 1024)
        pinnedBytes = 0
        head = 0
        headOffset = 0
        committed = 0
        text.reset()
    }

    /// Bytes gathered per SSL_write: one TLS record's worth of plaintext (OpenSSL sends at
    /// most one record per call in partial-write mode, so gathering more would only copy).
    static let tlsGather = 16 * 1024

    /// Writes as much as the TLS session takes. Replies lying in one text segment (a whole
    /// pipelined batch of small replies, usually) go to SSL_write straight from the reply
    /// text; otherwise up to `tlsGather` bytes from the queue's head are gathered into
    /// `staging` first, so a batch leaves in as few records as its size allows. A retry
    /// after WANT_WRITE passes the same bytes from the same queue position, never fewer
    /// (the queue only grows at its tail), as OpenSSL requires.
    mutating func flush(tls: TLSStream, staging: inout UnsafeMutableRawPointer?) -> (FlushResult, written: Int, wantsRead: Bool) {
        commitText()
        var total = 0
        while head < segments.count {
            var p: UnsafeRawPointer
            var n: Int
            if case .text(let s, let e) = segments[head], e - s - headOffset >= min(pendingBytes, OutputQueue.tlsGather) {
                p = UnsafeRawPointer(text.base + s + headOffset)
                n = e - s - headOffset
            } else {
                let buf = staging ?? UnsafeMutableRawPointer.allocate(byteCount: OutputQueue.tlsGather, alignment: 16)
                staging = buf
                n = gather(into: buf, max: OutputQueue.tlsGather)
                p = UnsafeRawPointer(buf)
            }
            switch tls.write(p, n) {
            case .bytes(let w):
                total += w
                pendingBytes -= w
                advance(by: w)
            case .wantWrite: return (.blocked, total, false)
            case .wantRead: return (.blocked, total, true)
            case .closed, .failed: return (.failed, total, false)
            }
        }
        reset()
        return (.done, total, false)
    }

    /// Copies up to `max` queued bytes, from the head, into `buf`; returns how many.
    private func gather(into buf: UnsafeMutableRawPointer, max: Int) -> Int {
        var n = 0
        var k = head
        let tbase = text.base
        while n < max && k < segments.count {
            let skip = k == head ? headOffset : 0
            let src: UnsafeRawPointer
            let len: Int
            switch segments[k] {
            case .text(let s, let e):
                src = UnsafeRawPointer(tbase + s + skip)
                len = e - s - skip
            case .large(let value, let count):
                src = value.prefix(count).baseAddress! + skip
                len = count - skip
            }
            let take = min(len, max - n)
            (buf + n).copyMemory(from: src, byteCount: take)
            n += take
            k += 1
        }
        return n
    }

    private mutating func advance(by n: Int) {
        var left = n
        while left > 0 && head < segments.count {
            let size: Int
            switch segments[head] {
            case .text(let s, let e): size = e - s
            case .large(_, let count): size = count
            }
            let remaining = size - headOffset
            if left >= remaining {
                left -= remaining
                if case .large = segments[head] { pinnedBytes -= size }
                segments[head] = .text(start: 0, end: 0)  // drop the item reference now
                head += 1
                headOffset = 0
            } else {
                headOffset += left
                left = 0
            }
        }
    }
}
