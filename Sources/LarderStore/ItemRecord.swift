// The bytes of one item inside a segment, and the functions that read and write them. An item
// is a record written once, back to back with others, in segment memory that Swift's object
// model never sees: no object header, no malloc chunk, no reference count. docs/STORE.md has
// a diagram of a record's bytes.
//
//   byte 0       control (atomic): bits 0-1 frequency (0-3), bit 2 fetched, bit 3 dead,
//                bit 4 stale (meta `X`), bit 5 win token sent (meta `W`/`Z`), bit 6 key
//                stored base64-binary (meta `b`); bits 4-6 are written only under the
//                shard's write lock (Store+Meta.swift)
//   byte 1       format: bit 0 flags present, bit 1 exptime present, bit 2 external value,
//                bits 3-4 (bytes of the value length) - 1
//   byte 2       key length
//   1-4 bytes    value length, little endian
//   8 bytes      cas unique
//   [4 bytes]    client flags, only when not 0
//   [4 bytes]    exptime (absolute Unix seconds), only when the item was stored with one
//   key bytes
//   value bytes, or for an external value an 8-byte retained pointer to its `LargeValue`
//
// Everything but the control byte and the exptime is fixed when the record is written. The
// control byte is the one thing readers write (a relaxed atomic store under the shard's read
// lock); exptime changes in place only under the shard's write lock (touch).
import Atomics
#if canImport(Glibc)
import Glibc
#endif

enum RecordControl {
    static let frequencyMask: UInt8 = 0b11
    static let fetched: UInt8 = 0b100
    static let dead: UInt8 = 0b1000
    /// Meta: invalidated (`md ... I`, `ms ... I` with an older cas); served with `X`.
    static let stale: UInt8 = 0b1_0000
    /// Meta: a client has been sent `W` for this item; later ones get `Z`.
    static let tokenSent: UInt8 = 0b10_0000
    /// Meta: the key was sent base64-encoded (`b`), so replies re-encode it.
    static let binaryKey: UInt8 = 0b100_0000
    /// The meta bits, kept when a record is rewritten for the same item (touch, append).
    static let metaMask: UInt8 = 0b111_0000
}

enum RecordFormat {
    static let hasFlags: UInt8 = 1
    static let hasExptime: UInt8 = 2
    static let external: UInt8 = 4
}

/// A view of one record at a fixed address in segment memory. Valid while the caller holds
/// the owning shard's lock (the segment cannot be reused under it).
struct Record {
    let base: UnsafeMutableRawPointer

    @inline(__always) init(_ base: UnsafeMutableRawPointer) { self.base = base }

    /// The control byte as an atomic. Segment memory is raw bytes that are only ever accessed
    /// through loads and stores of plain integers; binding this one byte to the atomic's
    /// storage type (a UInt8 wrapper of identical layout) is how swift-atomics addresses
    /// memory it did not allocate.
    @inline(__always) var control: UnsafeAtomic<UInt8> {
        UnsafeAtomic<UInt8>(at: base.assumingMemoryBound(to: UnsafeAtomic<UInt8>.Storage.self))
    }
    @inline(__always) var format: UInt8 { base.load(fromByteOffset: 1, as: UInt8.self) }
    @inline(__always) var keyCount: Int { Int(base.load(fromByteOffset: 2, as: UInt8.self)) }
    @inline(__always) var lengthBytes: Int { Int((format >> 3) & 3) + 1 }
    @inline(__always) var valueCount: Int {
        let n = lengthBytes
        var v = 0
        for i in 0..<n { v |= Int(base.load(fromByteOffset: 3 + i, as: UInt8.self)) << (8 * i) }
        return v
    }
    @inline(__always) var casOffset: Int { 3 + lengthBytes }
    @inline(__always) var cas: UInt64 { base.loadUnaligned(fromByteOffset: casOffset, as: UInt64.self) }
    @inline(__always) var flags: UInt32 {
        format & RecordFormat.hasFlags == 0 ? 0 : base.loadUnaligned(fromByteOffset: casOffset + 8, as: UInt32.self)
    }
    @inline(__always) var hasExptime: Bool { format & RecordFormat.hasExptime != 0 }
    @inline(__always) private var exptimeOffset: Int {
        casOffset + 8 + (format & RecordFormat.hasFlags == 0 ? 0 : 4)
    }
    /// Absolute Unix seconds, 0 for never. Lock held (written only under the write lock).
    @inline(__always) var exptime: Int64 {
        hasExptime ? Int64(base.loadUnaligned(fromByteOffset: exptimeOffset, as: UInt32.self)) : 0
    }
    /// Rewrites the exptime of a record stored with one. Write lock held.
    @inline(__always) func setExptime(_ e: Int64) {
        base.storeBytes(of: UInt32(truncatingIfNeeded: e), toByteOffset: exptimeOffset, as: UInt32.self)
    }
    @inline(__always) var headerCount: Int {
        exptimeOffset + (hasExptime ? 4 : 0)
    }
    @inline(__always) var isExternal: Bool { format & RecordFormat.external != 0 }
    @inline(__always) var key: UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: base + headerCount, count: keyCount)
    }
    /// The inline value bytes (not for external records).
    @inline(__always) var inlineValue: UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: base + headerCount + keyCount, count: valueCount)
    }
    /// The external value, unretained (the record holds the reference). Lock held.
    @inline(__always) var external: Unmanaged<LargeValue> {
        let bits = base.loadUnaligned(fromByteOffset: headerCount + keyCount, as: UInt.self)
        return Unmanaged.fromOpaque(UnsafeRawPointer(bitPattern: bits).unsafelyUnwrapped)
    }
    /// Bytes the record occupies in its segment.
    @inline(__always) var size: Int {
        headerCount + keyCount + (isExternal ? 8 : valueCount)
    }

    @inline(__always) var isDead: Bool { control.load(ordering: .relaxed) & RecordControl.dead != 0 }
    @inline(__always) var frequency: UInt8 { control.load(ordering: .relaxed) & RecordControl.frequencyMask }
    @inline(__always) var wasFetched: Bool { control.load(ordering: .relaxed) & RecordControl.fetched != 0 }

    /// Records a read: frequency +1 (saturating at 3) and the fetched bit. Either lock mode.
    /// Two readers racing may both store the same value and lose one increment, which only
    /// makes the frequency a little coarser; a saturated record is not written at all, so the
    /// hottest keys do not bounce a cache line between cores.
    @inline(__always) func noteRead() {
        let c = control
        let r = c.load(ordering: .relaxed)
        if r & (RecordControl.frequencyMask | RecordControl.fetched) != RecordControl.frequencyMask | RecordControl.fetched {
            let f = min(RecordControl.frequencyMask, (r & RecordControl.frequencyMask) + 1)
            c.store((r & ~RecordControl.frequencyMask) | f | RecordControl.fetched, ordering: .relaxed)
        }
    }

    /// Records a use that is not a fetch (a failed add). Either lock mode.
    @inline(__always) func noteUse() {
        let c = control
        let r = c.load(ordering: .relaxed)
        if r & RecordControl.frequencyMask < RecordControl.frequencyMask { c.store(r + 1, ordering: .relaxed) }
    }

    /// A new cas for a record changed in place (an append into an external value's spare
    /// room). Write lock held.
    @inline(__always) func setCas(_ c: UInt64) {
        base.storeBytes(of: c, toByteOffset: casOffset, as: UInt64.self)
    }

    /// The stored length of an external value grown in place. Write lock held.
    @inline(__always) func setExternalLength(_ n: Int) {
        for i in 0..<4 { base.storeBytes(of: UInt8(truncatingIfNeeded: n >> (8 * i)), toByteOffset: 3 + i, as: UInt8.self) }
    }

    /// Sets the frequency, keeping the other control bits. Write lock held.
    @inline(__always) func setFrequency(_ f: UInt8) {
        let c = control
        let r = c.load(ordering: .relaxed)
        c.store((r & ~RecordControl.frequencyMask) | f, ordering: .relaxed)
    }

    /// Sets and clears control bits other than the frequency. Write lock held: no reader
    /// can be storing the byte at the same time, so this read-modify-write cannot lose an
    /// update, and the bits it sets are seen by every later reader (the lock orders them).
    @inline(__always) func updateControlLocked(set: UInt8, clear: UInt8) {
        let c = control
        let r = c.load(ordering: .relaxed)
        c.store((r & ~clear) | set, ordering: .relaxed)
    }

    /// Marks the record dead. Write lock held.
    @inline(__always) func markDead() {
        let c = control
        c.store(c.load(ordering: .relaxed) | RecordControl.dead, ordering: .relaxed)
    }

    // MARK: - Writing

    /// Bytes a record with these properties occupies.
    @inline(__always)
    static func size(keyCount: Int, valueCount: Int, flags: UInt32, exptime: Int64, external: Bool) -> Int {
        let n = external ? 4 : lengthBytes(valueCount)
        return 3 + n + 8 + (flags == 0 ? 0 : 4) + (exptime == 0 ? 0 : 4) + keyCount + (external ? 8 : valueCount)
    }

    @inline(__always)
    static func lengthBytes(_ v: Int) -> Int {
        v < 0x100 ? 1 : v < 0x1_0000 ? 2 : v < 0x100_0000 ? 3 : 4
    }

    /// Writes a record at `p` (which has room for `size(...)` bytes) and returns it. The value
    /// is `parts.0` followed by `parts.1`, or the external `large` (retained by the record).
    /// `control` is the initial control byte. Write lock held.
    @discardableResult
    static func write(at p: UnsafeMutableRawPointer, control: UInt8, key: UnsafeRawBufferPointer, flags: UInt32,
                      exptime: Int64, cas: UInt64, valueCount: Int,
                      parts: (UnsafeRawBufferPointer, UnsafeRawBufferPointer), large: LargeValue?) -> Record {
        let external = large != nil
        let n = external ? 4 : lengthBytes(valueCount)
        var format = UInt8(n - 1) << 3
        if flags != 0 { format |= RecordFormat.hasFlags }
        if exptime != 0 { format |= RecordFormat.hasExptime }
        if external { format |= RecordFormat.external }
        p.storeBytes(of: control, toByteOffset: 0, as: UInt8.self)
        p.storeBytes(of: format, toByteOffset: 1, as: UInt8.self)
        p.storeBytes(of: UInt8(key.count), toByteOffset: 2, as: UInt8.self)
        for i in 0..<n { p.storeBytes(of: UInt8(truncatingIfNeeded: valueCount >> (8 * i)), toByteOffset: 3 + i, as: UInt8.self) }
        var o = 3 + n
        p.storeBytes(of: cas, toByteOffset: o, as: UInt64.self)
        o += 8
        if flags != 0 { p.storeBytes(of: flags, toByteOffset: o, as: UInt32.self); o += 4 }
        if exptime != 0 { p.storeBytes(of: UInt32(truncatingIfNeeded: exptime), toByteOffset: o, as: UInt32.self); o += 4 }
        if key.count > 0 { (p + o).copyMemory(from: key.baseAddress!, byteCount: key.count) }
        o += key.count
        if let large {
            let bits = UInt(bitPattern: Unmanaged.passRetained(large).toOpaque())
            p.storeBytes(of: bits, toByteOffset: o, as: UInt.self)
        } else {
            if parts.0.count > 0 { (p + o).copyMemory(from: parts.0.baseAddress!, byteCount: parts.0.count) }
            if parts.1.count > 0 { (p + o + parts.0.count).copyMemory(from: parts.1.baseAddress!, byteCount: parts.1.count) }
        }
        return Record(p)
    }

    @inline(__always)
    func keyEquals(_ k: UnsafeRawBufferPointer) -> Bool {
        guard keyCount == k.count else { return false }
        guard let kb = k.baseAddress else { return true }
        return memcmp(base + headerCount, kb, k.count) == 0
    }
}
