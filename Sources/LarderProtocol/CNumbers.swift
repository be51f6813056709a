// Number parsing with the exact semantics memcached's text protocol gets from C's
// strtoul/strtol/strtoull family (its safe_strto* helpers): leading whitespace skipped, an
// optional sign, decimal digits, overflow rejected, a trailing byte that is not whitespace
// rejected, and narrow results truncated the way a C assignment truncates. Clients and proxies
// observe these quirks (`set k 4294967296 0 1` stores flags 0 in memcached 1.6), so Larder
// reproduces them instead of being stricter.

/// The C locale's `isspace`.
@inline(__always)
func isCSpace(_ b: UInt8) -> Bool {
    b == 0x20 || (b >= 0x09 && b <= 0x0D)
}

/// What C's `strtoull(str, &end, 10)` computes over `bytes`, treating the end of the buffer
/// as the string's terminator.
struct CUnsignedScan {
    var value: UInt64 = 0
    var overflow = false
    var negative = false
    var hadDigits = false
    /// Index of the first byte not consumed; 0 when no digits were found (C sets end = str).
    var end = 0
}

@inline(__always)
func scanCUnsigned(_ bytes: UnsafeRawBufferPointer) -> CUnsignedScan {
    var r = CUnsignedScan()
    var i = 0
    let n = bytes.count
    while i < n && isCSpace(bytes[i]) { i += 1 }
    if i < n && (bytes[i] == UInt8(ascii: "+") || bytes[i] == UInt8(ascii: "-")) {
        r.negative = bytes[i] == UInt8(ascii: "-")
        i += 1
    }
    var v: UInt64 = 0
    let digitsStart = i
    while i < n {
        let d = bytes[i] &- 0x30
        if d > 9 { break }
        let (m, o1) = v.multipliedReportingOverflow(by: 10)
        let (s, o2) = m.addingReportingOverflow(UInt64(d))
        if o1 || o2 { r.overflow = true }
        v = s
        i += 1
    }
    if i == digitsStart {
        r.end = 0
        return r
    }
    r.hadDigits = true
    r.end = i
    r.value = r.negative ? 0 &- v : v
    return r
}

/// True when the byte after the number (or the end of the token) lets memcached accept it.
@inline(__always)
private func acceptableEnd(_ bytes: UnsafeRawBufferPointer, _ end: Int) -> Bool {
    end == bytes.count || isCSpace(bytes[end])
}

/// memcached's `safe_strtoull`: a 64-bit unsigned number (cas uniques, incr/decr deltas,
/// and the stored value of an incr/decr target).
public func memcachedParseUInt64(_ bytes: UnsafeRawBufferPointer) -> UInt64? {
    let s = scanCUnsigned(bytes)
    guard s.hadDigits, !s.overflow, acceptableEnd(bytes, s.end) else { return nil }
    // A value that is negative as a signed number is refused only if a '-' was written.
    if Int64(bitPattern: s.value) < 0 && s.negative { return nil }
    return s.value
}

/// memcached's `safe_strtoul` into a `uint32_t`: parsed as 64-bit, then truncated.
public func memcachedParseUInt32(_ bytes: UnsafeRawBufferPointer) -> UInt32? {
    guard let v = memcachedParseUInt64(bytes) else { return nil }
    return UInt32(truncatingIfNeeded: v)
}

/// memcached's `safe_strtol` into an `int32_t`: parsed as a 64-bit `long`, then truncated.
public func memcachedParseInt32(_ bytes: UnsafeRawBufferPointer) -> Int32? {
    let s = scanCUnsigned(bytes)
    guard s.hadDigits, !s.overflow, acceptableEnd(bytes, s.end) else { return nil }
    // strtol's range is [Int64.min, Int64.max]; the magnitude was accumulated unsigned.
    let magnitude = s.negative ? (0 &- s.value) : s.value
    if s.negative {
        if magnitude > UInt64(Int64.max) + 1 { return nil }
    } else if magnitude > UInt64(Int64.max) {
        return nil
    }
    let signed = Int64(bitPattern: s.value)
    return Int32(truncatingIfNeeded: signed)
}
