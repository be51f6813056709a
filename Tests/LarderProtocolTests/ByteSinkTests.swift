// ByteSink at its edges: appends that end exactly at capacity, that cross it, and the
// byte-by-byte path of appendUnchecked when fewer than 8 bytes of room are left.
import Testing
@testable import LarderProtocol

@Suite("byte sink")
struct ByteSinkTests {
    @Test("appends that end at, and cross, the capacity keep every byte")
    func aroundCapacity() {
        let sink = ByteSink(capacity: 64)
        #expect(sink.capacity == 64)
        let first = [UInt8](repeating: 0x61, count: 63)
        first.withUnsafeBytes { sink.append($0) }
        sink.append(0x62)  // ends exactly at capacity: no growth
        #expect(sink.capacity == 64 && sink.count == 64)
        sink.append(0x63)  // crosses it
        #expect(sink.capacity == 128 && sink.count == 65)
        #expect(sink.array == first + [0x62, 0x63])
        // A block much bigger than double the capacity grows in one step to fit.
        let big = [UInt8](repeating: 0x64, count: 1000)
        big.withUnsafeBytes { sink.append($0) }
        #expect(sink.capacity == 2048 && sink.array == first + [0x62, 0x63] + big)
    }

    @Test("appendUnchecked writes only n bytes, one at a time when fewer than 8 bytes are left", arguments: 1...8)
    func uncheckedNearEnd(n: Int) {
        let sink = ByteSink(capacity: 64)
        let fill = [UInt8](repeating: 0x2E, count: 64 - n)
        fill.withUnsafeBytes { sink.append($0) }
        sink.reserve(n)
        #expect(sink.capacity == 64)  // the room was there: no growth, the slow path is taken
        sink.appendUnchecked(0x4847_4645_4443_4241, n)  // "ABCDEFGH" little-endian
        #expect(sink.count == 64)
        #expect(Array(sink.array.suffix(n)) == Array("ABCDEFGH".utf8.prefix(n)))
        #expect(Array(sink.array.prefix(64 - n)) == fill)
    }

    @Test("decimals and CRLF at the end of the buffer")
    func decimalAtEnd() {
        for room in 0...22 {
            let sink = ByteSink(capacity: 64)
            [UInt8](repeating: 0x20, count: 64 - room).withUnsafeBytes { sink.append($0) }
            sink.appendDecimal(UInt64.max)
            sink.appendCRLF()
            sink.appendDecimal(0)
            #expect(String(decoding: sink.array.suffix(23), as: UTF8.self) == "18446744073709551615\r\n0", "room \(room)")
        }
    }

    @Test("reset keeps a modest buffer and gives back a big one")
    func resetKeeps() {
        let sink = ByteSink(capacity: 8192)
        sink.append("x")
        sink.reset(keep: 8192)
        #expect(sink.capacity == 8192 && sink.count == 0)
        [UInt8](repeating: 1, count: 20_000).withUnsafeBytes { sink.append($0) }
        sink.reset(keep: 8192)
        #expect(sink.capacity == 4096 && sink.count == 0)
    }
}
