// The classic failure of a segment store is a torn or recycled read: a reader gets bytes from
// a segment that eviction emptied and reused meanwhile. Here real threads (not the cooperative
// pool, which has as many threads as cores) write values that carry their key and a checksum
// into a store small enough that eviction and compaction never stop, while other threads read
// and check every value, inside the read callback and again from what they kept afterwards.
import Atomics
import Testing
import BenchSupport
@testable import LarderStore
#if canImport(Glibc)
import Glibc
#endif

/// Runs `body(i)` on `n` real threads and waits for all of them.
func onThreads(_ n: Int, _ body: @escaping @Sendable (Int) -> Void) {
    final class Box { let run: () -> Void; init(_ r: @escaping () -> Void) { run = r } }
    var tids: [pthread_t] = []
    for i in 0..<n {
        var tid = pthread_t()
        let box = Unmanaged.passRetained(Box { body(i) }).toOpaque()
        let rc = pthread_create(&tid, nil, { arg in
            Unmanaged<Box>.fromOpaque(arg!).takeRetainedValue().run()
            return nil
        }, box)
        precondition(rc == 0)
        tids.append(tid)
    }
    for t in tids { pthread_join(t, nil) }
}

/// A value for `key`: "key|writer|serial|" + filler, then an 8-digit checksum of all before it.
func checkedValue(_ key: String, writer: Int, serial: Int, size: Int) -> [UInt8] {
    var v = Array("\(key)|\(writer)|\(serial)|".utf8)
    while v.count < size - 8 { v.append(UInt8(97 + (v.count * 7 + serial) % 26)) }
    let sum = checksum(v[...])
    v.append(contentsOf: Array(String(sum % 100_000_000).leftPadded(8).utf8))
    return v
}

func checksum(_ b: ArraySlice<UInt8>) -> UInt64 {
    var h: UInt64 = 1469598103934665603
    for x in b { h = (h ^ UInt64(x)) &* 1099511628211 }
    return h
}

/// True if `v` is an intact value written for `key`.
func isIntact(_ v: UnsafeRawBufferPointer, key: String) -> Bool {
    guard v.count > 8 else { return false }
    let body = Array(v[0..<(v.count - 8)])
    let sum = String(decoding: v[(v.count - 8)...], as: UTF8.self)
    guard sum == String(checksum(body[...]) % 100_000_000).leftPadded(8) else { return false }
    return body.starts(with: Array("\(key)|".utf8))
}

extension String {
    func leftPadded(_ n: Int) -> String { String(repeating: "0", count: max(0, n - count)) + self }
}

@Suite("torn and recycled reads")
struct TornReadTests {
    @Test("readers never see bytes that were not written for their key, under constant eviction")
    func checksummedValues() {
        let seed = UInt64(0x5EED_0001)
        let store = Store(config: StoreConfig(memoryLimit: 1 << 20, shardCount: 2, hashSeeds: testSeeds), clock: ManualClock())
        let keys = 3000
        let bad = ManagedAtomic<Int>(0)
        let reads = ManagedAtomic<Int>(0)
        onThreads(6) { t in
            var rng = SplitMix(seed: seed &+ UInt64(t))
            var kept: [(String, LargeValue, Int)] = []
            for i in 0..<15_000 {
                let k = "key\(rng.next() % UInt64(keys))"
                if t < 3 {
                    // Small (inline) values mostly, some past the inline limit (external).
                    let size = rng.next() % 10 == 0 ? 5000 + Int(rng.next() % 20_000) : 20 + Int(rng.next() % 400)
                    let v = checkedValue(k, writer: t, serial: i, size: size)
                    _ = v.withUnsafeBytes { vb in
                        Array(k.utf8).withUnsafeBytes { kb in store.store(.set, key: kb, flags: 0, exptime: 0, value: vb) }
                    }
                    if i % 7 == 0 { _ = store.del(k) }
                } else {
                    _ = Array(k.utf8).withUnsafeBytes { kb in
                        store.read(kb) { item in
                            reads.wrappingIncrement(ordering: .relaxed)
                            if !item.withValue({ isIntact($0, key: k) }) { bad.wrappingIncrement(ordering: .relaxed) }
                            if case .external(let lv, let n) = item.value, kept.count < 64 { kept.append((k, lv, n)) }
                        }
                    }
                }
            }
            // Large values kept past the lock are still intact after all that overwriting.
            for (k, lv, n) in kept where !isIntact(lv.prefix(n), key: k) { bad.wrappingIncrement(ordering: .relaxed) }
        }
        let c = store.counters()
        #expect(store.audit() == [])
        #expect(bad.load(ordering: .relaxed) == 0, "seed \(seed)")
        #expect(reads.load(ordering: .relaxed) > 1000)
        #expect(c.evictions > 1000 && c.copiedForward > 0)
        #expect(c.usedBytes <= 1 << 20)
        // Every item still in the store is intact and belongs to its key.
        var n = 0
        store.forEachItem { s in
            n += 1
            #expect(s.withValue { isIntact($0, key: String(decoding: s.key, as: UTF8.self)) })
        }
        #expect(n == c.currItems)
    }

    @Test("appends a byte at a time into a large value stay exact, and readers keep their length")
    func appendInPlace() {
        let store = Store(config: StoreConfig(memoryLimit: 16 << 20, shardCount: 1, hashSeeds: testSeeds), clock: ManualClock())
        let base = String(repeating: "a", count: 10_000)
        #expect(store.set("log", base) == .stored)
        var snapshots: [(LargeValue, Int)] = []
        for i in 0..<5000 {
            #expect(store.set("log", String(UnicodeScalar(UInt8(98 + i % 20))), .append) == .stored)
            if i % 1000 == 0 {
                _ = Array("log".utf8).withUnsafeBytes { kb in
                    store.read(kb) { item in if case .external(let lv, let n) = item.value { snapshots.append((lv, n)) } }
                }
            }
        }
        var expected = base
        for i in 0..<5000 { expected.append(Character(UnicodeScalar(UInt8(98 + i % 20)))) }
        #expect(store.value("log") == expected)
        // A reader's view is the prefix it saw, never changed by later appends.
        for (lv, n) in snapshots {
            #expect(String(decoding: lv.prefix(n), as: UTF8.self) == String(expected.prefix(n)))
        }
        #expect(snapshots.count == 5)
        // Appending in place reused the buffer: one large value throughout most appends.
        #expect(Set(snapshots.map { ObjectIdentifier($0.0) }).count < snapshots.count)
    }
}

