// Values too large to live in a segment (above the store's inline limit, up to -I) are kept
// in their own heap buffer, reference counted: the segment record holds one reference, and a
// connection sending the value holds another until its bytes are out, so a delete, overwrite
// or eviction never pulls bytes from under a slow reader.
#if canImport(Glibc)
import Glibc
#endif

/// A heap buffer holding one large value, with room to grow at the end. Readers send the
/// first `count` bytes they saw under the lock and the "\r\n" from their own reply text.
public final class LargeValue: @unchecked Sendable {
    // @unchecked Sendable: `count` grows only under the owning shard's write lock (an append
    // in place), and a reader only ever reads the first `count` bytes it saw under the lock;
    // bytes below any count once published are never written again.
    let base: UnsafeMutableRawPointer
    /// Value bytes.
    private(set) var count: Int
    /// Bytes allocated (value and spare room for appends).
    let capacity: Int

    /// Bytes charged against the memory limit: the buffer and the object around it.
    static let overhead = 64
    var charge: Int { capacity + LargeValue.overhead }

    init(capacity: Int, filling parts: (UnsafeRawBufferPointer, UnsafeRawBufferPointer)) {
        let n = parts.0.count + parts.1.count
        precondition(capacity >= n)
        self.capacity = capacity
        base = .allocate(byteCount: max(1, capacity), alignment: 16)
        if parts.0.count > 0 { base.copyMemory(from: parts.0.baseAddress!, byteCount: parts.0.count) }
        if parts.1.count > 0 { (base + parts.0.count).copyMemory(from: parts.1.baseAddress!, byteCount: parts.1.count) }
        count = n
    }

    deinit { base.deallocate() }

    /// The value bytes. Lock held (an append in place may change `count`).
    public var value: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: count) }

    /// The first `n` bytes, for a reader that saw `count >= n` under the lock: safe without
    /// it, since bytes below a published count never change (and `count` is not read).
    public func prefix(_ n: Int) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: base, count: n)
    }

    /// Appends in place if there is room. Write lock held; readers that took the value earlier
    /// read only bytes below the count they saw, which this does not touch.
    func appendInPlace(_ tail: UnsafeRawBufferPointer) -> Bool {
        guard count + tail.count <= capacity else { return false }
        if tail.count > 0 { (base + count).copyMemory(from: tail.baseAddress!, byteCount: tail.count) }
        count += tail.count
        return true
    }
}
