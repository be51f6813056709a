// One cached item: a single heap object holding its metadata and, tail-allocated, the key
// bytes followed by the value bytes and "\r\n". The bytes never change after creation, so a
// reply can point straight at them (the connection keeps a strong reference until the send is
// done) and a delete, overwrite or eviction never waits for a slow reader.

/// Item metadata. `exptime`, `cas` and `indexed` are written only under the owning shard's
/// write lock (cas before the item is published); everything else is fixed at creation.
/// Fields are read and written one at a time through pointers (see `Item.field`), never as a
/// whole struct, so reading an immutable field never overlaps a locked write of another.
public struct ItemHeader {
    /// Unique per stored version (memcached's cas).
    public var cas: UInt64
    /// Absolute Unix seconds; 0 never expires.
    public var exptime: Int64
    public var flags: UInt32
    /// Value length, without the trailing "\r\n".
    public var valueCount: UInt32
    public var keyCount: UInt8
    /// True while the shard's expiry index holds a handle for this item.
    public var indexed: Bool
}

/// An immutable, reference-counted item. Its storage is `[key][value]\r\n`.
public final class Item: ManagedBuffer<ItemHeader, UInt8> {
    // Not Sendable (ManagedBuffer never is); items cross threads only inside the store, whose
    // shard locks order every access, and inside one connection. The tail bytes are written
    // once in `make` before the item is shared; the header's exptime and cas are written only
    // under the owning shard's write lock (cas before the item is published).

    /// Allocates an item and copies `key` and the value pieces (concatenated) into it.
    public static func make(key: UnsafeRawBufferPointer, flags: UInt32, exptime: Int64, cas: UInt64,
                            value parts: UnsafeRawBufferPointer...) -> Item {
        var valueCount = 0
        for p in parts { valueCount += p.count }
        return make(key: key, flags: flags, exptime: exptime, cas: cas, valueCount: valueCount) { dst in
            var off = 0
            for p in parts where p.count > 0 {
                UnsafeMutableRawBufferPointer(rebasing: dst[off...]).copyMemory(from: p)
                off += p.count
            }
        }
    }

    /// Allocates an item of `valueCount` value bytes which `fill` writes.
    public static func make(key: UnsafeRawBufferPointer, flags: UInt32, exptime: Int64, cas: UInt64,
                            valueCount: Int, fill: (UnsafeMutableRawBufferPointer) -> Void) -> Item {
        let total = key.count + valueCount + 2
        let header = ItemHeader(cas: cas, exptime: exptime, flags: flags,
                                valueCount: UInt32(valueCount), keyCount: UInt8(key.count), indexed: false)
        let buf = Item.create(minimumCapacity: total) { _ in header }
        let item = unsafeDowncast(buf, to: Item.self)
        item.withUnsafeMutablePointerToElements { p in
            let raw = UnsafeMutableRawBufferPointer(start: p, count: total)
            if key.count > 0 { raw.copyMemory(from: key) }
            let valueArea = UnsafeMutableRawBufferPointer(rebasing: raw[key.count..<(key.count + valueCount)])
            fill(valueArea)
            raw[total - 2] = 0x0D
            raw[total - 1] = 0x0A
        }
        return item
    }

    /// A pointer to one header field. The header lives inside the object and never moves.
    @inline(__always)
    private func field<T>(_ path: KeyPath<ItemHeader, T>, as: T.Type) -> UnsafeMutablePointer<T> {
        let base = withUnsafeMutablePointerToHeader { UnsafeMutableRawPointer($0) }
        return (base + MemoryLayout<ItemHeader>.offset(of: path)!).assumingMemoryBound(to: T.self)
    }

    /// cas unique; written once under the shard lock before the item is published.
    @inline(__always) public internal(set) var cas: UInt64 {
        get { field(\.cas, as: UInt64.self).pointee }
        set { field(\.cas, as: UInt64.self).pointee = newValue }
    }
    @inline(__always) public var flags: UInt32 { field(\.flags, as: UInt32.self).pointee }
    @inline(__always) public var valueCount: Int { Int(field(\.valueCount, as: UInt32.self).pointee) }
    @inline(__always) public var keyCount: Int { Int(field(\.keyCount, as: UInt8.self).pointee) }
    /// Shard lock held (write to set).
    @inline(__always) var exptime: Int64 {
        get { field(\.exptime, as: Int64.self).pointee }
        set { field(\.exptime, as: Int64.self).pointee = newValue }
    }
    /// Shard write lock held.
    @inline(__always) var indexed: Bool {
        get { field(\.indexed, as: Bool.self).pointee }
        set { field(\.indexed, as: Bool.self).pointee = newValue }
    }

    /// Shard lock held.
    @inline(__always)
    func isExpired(now: Int64) -> Bool {
        let e = exptime
        return e != 0 && e <= now
    }

    /// The start of `[key][value]\r\n`. Stable for the object's lifetime: a ManagedBuffer's
    /// elements never move, so the pointer stays valid while the caller holds the item.
    @inline(__always)
    public var bytesStart: UnsafeRawPointer {
        UnsafeRawPointer(withUnsafeMutablePointerToElements { $0 })
    }

    @inline(__always)
    public func withKey<T>(_ body: (UnsafeRawBufferPointer) throws -> T) rethrows -> T {
        try body(UnsafeRawBufferPointer(start: bytesStart, count: keyCount))
    }

    @inline(__always)
    public func withValue<T>(_ body: (UnsafeRawBufferPointer) throws -> T) rethrows -> T {
        try body(UnsafeRawBufferPointer(start: bytesStart + keyCount, count: valueCount))
    }

    /// The value followed by "\r\n": exactly the data block of a `VALUE` reply.
    @inline(__always)
    public var dataBlock: UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: bytesStart + keyCount, count: valueCount + 2)
    }

    /// Bytes charged against the memory limit: the object as malloc rounds it (16-byte object
    /// header, the metadata, the bytes, malloc's 8-byte chunk header, 16-byte granularity)
    /// plus an amortised share of the shard's index (one 8-byte slot and a 1-byte tag at a
    /// load factor between 3/8 and 3/4).
    @inline(__always)
    public static func charge(keyCount: Int, valueCount: Int) -> Int {
        let object = 16 + MemoryLayout<ItemHeader>.stride + keyCount + valueCount + 2
        let chunk = max(32, (object + 8 + 15) & ~15)
        return chunk + indexShare
    }
    /// Average index bytes per item (9 bytes per slot at an average load factor of ~0.56).
    public static let indexShare = 16

    @inline(__always)
    public var charge: Int { Item.charge(keyCount: keyCount, valueCount: valueCount) }
}
