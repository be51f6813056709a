// OutputQueue's partial-write path: a socket that takes a few KB at a time, replies mixing
// copied text and referenced large values, every byte arriving once and in order, and the
// large values released (unpinned) as they are written.
import Foundation
import Testing
@testable import LarderServer
import LarderStore
#if canImport(Glibc)
import Glibc
#endif

@Suite("output queue")
struct OutputQueueTests {
    @Test("writes cut anywhere (by a small socket buffer) deliver every byte once, in order")
    func partialWrites() throws {
        var fds: [Int32] = [0, 0]
        #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds) == 0)
        defer { close(fds[0]); close(fds[1]) }
        var sndbuf: Int32 = 4096
        setsockopt(fds[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, socklen_t(MemoryLayout<Int32>.size))
        _ = fcntl(fds[0], F_SETFL, fcntl(fds[0], F_GETFL) | O_NONBLOCK)

        let store = Store(config: StoreConfig(memoryLimit: 16 << 20, shardCount: 1))
        // One large value (kept outside the segments, sent by reference) and small ones (copied).
        let large = (0..<300_000).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
        let small = Array("small-value".utf8)
        func put(_ key: String, _ v: [UInt8]) {
            let k = Array(key.utf8)
            _ = k.withUnsafeBytes { kb in v.withUnsafeBytes { store.store(.set, key: kb, flags: 0, exptime: 0, value: $0) } }
        }
        put("large", large)
        put("small", small)

        var q = OutputQueue()
        var expected: [UInt8] = []
        for i in 0..<70 {  // more segments than one writev takes (64)
            let key = i % 3 == 0 ? "large" : "small"
            q.text.append("VALUE \(key)\r\n")
            let status = Array(key.utf8).withUnsafeBytes { kb in store.read(kb) { q.appendData(of: $0) } }
            #expect(status == .hit)
            expected += Array("VALUE \(key)\r\n".utf8) + (key == "large" ? large : small) + Array("\r\n".utf8)
        }
        #expect(q.heldBytes >= 24 * large.count)  // the queued replies pin the large value
        let queued = q.queuedBytes
        #expect(queued == expected.count)

        var received: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 3000)
        var blockedAtLeastOnce = false
        var flushes = 0
        while true {
            let (result, _) = q.flush(fd: fds[0])
            flushes += 1
            #expect(result != .failed)
            if result == .done { break }
            blockedAtLeastOnce = true
            let n = read(fds[1], &buf, buf.count)  // drain a little, as a slow client would
            #expect(n > 0)
            if n > 0 { received += buf[0..<n] }
            #expect(flushes < 1_000_000)
            if flushes >= 1_000_000 { break }
        }
        // The rest of what the socket holds.
        _ = fcntl(fds[1], F_SETFL, fcntl(fds[1], F_GETFL) | O_NONBLOCK)
        while received.count < expected.count {
            let n = read(fds[1], &buf, buf.count)
            if n <= 0 { break }
            received += buf[0..<n]
        }
        #expect(blockedAtLeastOnce)
        let firstDifference = (0..<min(received.count, expected.count)).first { received[$0] != expected[$0] } ?? min(received.count, expected.count)
        #expect(received.count == expected.count && firstDifference == expected.count,
                "first difference at byte \(firstDifference) of \(expected.count)")
        #expect(q.isEmpty && q.queuedBytes == 0)
        #expect(q.heldBytes < large.count)  // nothing pinned once everything is written
    }
}
