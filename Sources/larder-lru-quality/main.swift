// LRU-quality benchmark: replays one Zipf-distributed trace against Larder's store (GCLOCK
// eviction under read locks) and against an exact LRU holding the same number of items, and
// prints both hit ratios. Usage: larder-lru-quality [requests] [keys] [skew] [cache-fraction]
import BenchSupport
import LarderStore

/// Exact LRU over integer keys: a hash map to nodes of a doubly linked list in arrays.
struct ExactLRU {
    let capacity: Int
    var index: [Int: Int32] = [:]
    var keys: [Int]
    var prev: [Int32]
    var next: [Int32]
    var head: Int32 = -1  // most recent
    var tail: Int32 = -1  // least recent
    var used: Int32 = 0

    init(capacity: Int) {
        self.capacity = capacity
        keys = [Int](repeating: 0, count: capacity)
        prev = [Int32](repeating: -1, count: capacity)
        next = [Int32](repeating: -1, count: capacity)
        index.reserveCapacity(capacity)
    }

    mutating func unlink(_ n: Int32) {
        let p = prev[Int(n)], x = next[Int(n)]
        if p >= 0 { next[Int(p)] = x } else { head = x }
        if x >= 0 { prev[Int(x)] = p } else { tail = p }
    }
    mutating func pushFront(_ n: Int32) {
        prev[Int(n)] = -1
        next[Int(n)] = head
        if head >= 0 { prev[Int(head)] = n }
        head = n
        if tail < 0 { tail = n }
    }
    /// Returns true on a hit; on a miss inserts the key, evicting the least recent.
    mutating func access(_ key: Int) -> Bool {
        if let n = index[key] {
            unlink(n)
            pushFront(n)
            return true
        }
        var n: Int32
        if Int(used) < capacity {
            n = used
            used += 1
        } else {
            n = tail
            unlink(n)
            index.removeValue(forKey: keys[Int(n)])
        }
        keys[Int(n)] = key
        index[key] = n
        pushFront(n)
        return false
    }
}

let args = CommandLine.arguments
let requests = args.count > 1 ? Int(args[1])! : 10_000_000
let keyCount = args.count > 2 ? Int(args[2])! : 1_000_000
let skew = args.count > 3 ? Double(args[3])! : 0.99
let fraction = args.count > 4 ? Double(args[4])! : 0.10
let warmup = requests / 10

print("trace: \(requests) requests, Zipf(\(skew)) over \(keyCount) keys, cache ~\(Int(fraction * 100))% of keys, first \(warmup) requests warm up")
let zipf = Zipf(n: keyCount, s: skew)
var rng = SplitMix(state: 42)
// Rank -> key id through a fixed permutation, so popularity is unrelated to key text.
var perm = Array(0..<keyCount)
perm.shuffle(using: &rng)
var trace = [Int32](repeating: 0, count: requests)
for i in 0..<requests { trace[i] = Int32(perm[zipf.sample(&rng)]) }

// Size Larder for `fraction` of the keys: 32-byte values, keys "key:<id>".
let value = [UInt8](repeating: 0x76, count: 32)
let sampleCharge = 54 + 10  // record (header 12, key 10, value 32) + index entry at ~80% load
let targetItems = Int(Double(keyCount) * fraction)
let limit = targetItems * (sampleCharge + 22)
let store = Store(config: StoreConfig(memoryLimit: limit, shardCount: 16), clock: SystemClock())

@inline(__always) func keyBytes(_ id: Int32, _ body: (UnsafeRawBufferPointer) -> Void) {
    var buf: (UInt64, UInt64) = (0, 0)
    withUnsafeMutableBytes(of: &buf) { b in
        b[0] = 0x6B; b[1] = 0x65; b[2] = 0x79; b[3] = 0x3A  // "key:"
        var x = UInt32(id)
        for i in 0..<6 { b[4 + i] = 0x30 + UInt8(x % 10); x /= 10 }
        body(UnsafeRawBufferPointer(rebasing: b[0..<10]))
    }
}

var larderHits = 0
var counted = 0
value.withUnsafeBytes { vb in
    for (i, id) in trace.enumerated() {
        keyBytes(id) { k in
            let hit: Bool
            if case .hit = store.get(k) { hit = true } else { hit = false }
            if !hit { _ = store.store(.set, key: k, flags: 0, exptime: 0, value: vb) }
            if i >= warmup {
                counted += 1
                if hit { larderHits += 1 }
            }
        }
    }
}
let held = store.counters().currItems
var lru = ExactLRU(capacity: held)
var lruHits = 0
for (i, id) in trace.enumerated() {
    let hit = lru.access(Int(id))
    if i >= warmup && hit { lruHits += 1 }
}
let lh = Double(larderHits) / Double(counted) * 100
let eh = Double(lruHits) / Double(counted) * 100
func f(_ x: Double) -> String {
    let hundredths = Int((abs(x) * 100).rounded())
    return (x < 0 ? "-" : "") + String(hundredths).withDecimal
}
extension String {
    var withDecimal: String {
        let s = self.count < 3 ? String(repeating: "0", count: 3 - self.count) + self : self
        return String(s.dropLast(2)) + "." + String(s.suffix(2))
    }
}
print("items held: \(held) (\(f(Double(held) / Double(keyCount) * 100))% of keys)")
print("hit ratio  larder (GCLOCK): \(f(lh))%   exact LRU: \(f(eh))%   difference: \(f(lh - eh)) points")
