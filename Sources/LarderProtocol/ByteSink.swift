// A growable byte buffer for encoding replies: raw memory, appends are memcpy, no
// copy-on-write or uniqueness checks (measured: appending through [UInt8] cost ~500
// instructions per get reply). Owned by one connection; never shared between threads.
#if canImport(Glibc)
import Glibc
#endif

public final class ByteSink {
    public private(set) var base: UnsafeMutableRawPointer
    public private(set) var capacity: Int
    /// Bytes written so far.
    public var count = 0 {
        didSet { precondition(count <= capacity && count >= 0) }
    }

    public init(capacity: Int = 4096) {
        self.capacity = max(64, capacity)
        base = .allocate(byteCount: self.capacity, alignment: 16)
    }

    deinit { base.deallocate() }

    /// The bytes written, valid until the next append.
    public var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: count) }

    @inline(__always)
    public func reserve(_ n: Int) {
        if count + n > capacity { grow(count + n) }
    }

    private func grow(_ needed: Int) {
        var c = capacity * 2
        while c < needed { c *= 2 }
        let bigger = UnsafeMutableRawPointer.allocate(byteCount: c, alignment: 16)
        bigger.copyMemory(from: base, byteCount: count)
        base.deallocate()
        base = bigger
        capacity = c
    }

    @inline(__always)
    public func append(_ b: UInt8) {
        reserve(1)
        base.storeBytes(of: b, toByteOffset: count, as: UInt8.self)
        count += 1
    }

    @inline(__always)
    public func append(_ p: UnsafeRawBufferPointer) {
        guard let src = p.baseAddress, p.count > 0 else { return }
        reserve(p.count)
        (base + count).copyMemory(from: src, byteCount: p.count)
        count += p.count
    }

    @inline(__always)
    public func append(_ s: StaticString) {
        append(UnsafeRawBufferPointer(start: s.utf8Start, count: s.utf8CodeUnitCount))
    }

    public func append(_ s: String) {
        var s = s
        s.withUTF8 { append(UnsafeRawBufferPointer($0)) }
    }

    /// Writes the low `n` bytes (1...8) of `word`, little-endian, after a `reserve` that
    /// covered them (one store instead of a memcpy call for short constants).
    @inline(__always)
    public func appendUnchecked(_ word: UInt64, _ n: Int) {
        precondition(count + 8 <= capacity || count + n <= capacity)
        if count + 8 <= capacity {
            base.storeBytes(of: word.littleEndian, toByteOffset: count, as: UInt64.self)
        } else {
            var w = word
            for i in 0..<n {
                base.storeBytes(of: UInt8(truncatingIfNeeded: w), toByteOffset: count + i, as: UInt8.self)
                w >>= 8
            }
        }
        count += n
    }

    /// Appends "\r\n".
    @inline(__always)
    public func appendCRLF() {
        reserve(2)
        base.storeBytes(of: 0x0A0D as UInt16, toByteOffset: count, as: UInt16.self)
        count += 2
    }

    /// Appends the decimal digits of `v`: one pass, right to left, straight into the buffer
    /// after counting digits with comparisons (no division in the count).
    @inline(__always)
    public func appendDecimal(_ v: UInt64) {
        reserve(20)
        var digits = 1
        var limit: UInt64 = 10
        while digits < 20 && v >= limit {
            digits += 1
            limit = limit &* 10
        }
        var x = v
        var i = count + digits - 1
        repeat {
            let q = x / 10
            base.storeBytes(of: 0x30 &+ UInt8(truncatingIfNeeded: x &- q &* 10), toByteOffset: i, as: UInt8.self)
            x = q
            i -= 1
        } while x > 0
        count += digits
    }

    /// Forgets everything; gives back a buffer that grew past `keep` bytes.
    public func reset(keep: Int = 1 << 20) {
        count = 0
        if capacity > keep {
            base.deallocate()
            capacity = 4096
            base = .allocate(byteCount: capacity, alignment: 16)
        }
    }

    /// A copy of the bytes (tests and cold paths).
    public var array: [UInt8] { Array(bytes) }
}
