// Eviction-quality benchmark: replays a trace of key ids (a file of little-endian UInt32, one
// per request) against Larder's store — get, and set on a miss — and prints, as one JSON
// line, the hit ratio after a warm-up and the average number of items the store held while
// it was measured. scripts/lru-quality gives libCacheSim's policies that same number of items
// on the same trace, so the policies are compared at equal item count.
//
// Usage: larder-lru-quality TRACE ITEMS [SHARDS] [VALUE-SIZE]
//   ITEMS       items the store should hold (its memory limit is sized for about that many)
import BenchSupport
import LarderStore
#if canImport(Glibc)
import Glibc
#endif

let args = CommandLine.arguments
guard args.count >= 3, let targetItems = Int(args[2]) else {
    print("usage: larder-lru-quality TRACE ITEMS [SHARDS] [VALUE-SIZE]")
    exit(64)
}
let shards = args.count > 3 ? Int(args[3]) ?? 16 : 16
let valueSize = args.count > 4 ? Int(args[4]) ?? 32 : 32

guard let f = fopen(args[1], "rb") else {
    print("cannot open \(args[1])")
    exit(66)
}
fseek(f, 0, SEEK_END)
let requests = ftell(f) / 4
fseek(f, 0, SEEK_SET)
var trace = [UInt32](repeating: 0, count: requests)
_ = trace.withUnsafeMutableBytes { fread($0.baseAddress, 1, $0.count, f) }
fclose(f)

/// Keys "key:<id>" as 10 bytes; ids above 999,999 (one-hit wonders) keep their last digits
/// unique by using 12 bytes.
@inline(__always) func keyBytes(_ id: UInt32, _ body: (UnsafeRawBufferPointer) -> Void) {
    var buf: (UInt64, UInt64) = (0, 0)
    withUnsafeMutableBytes(of: &buf) { b in
        b[0] = 0x6B; b[1] = 0x65; b[2] = 0x79; b[3] = 0x3A  // "key:"
        var x = id
        for i in 0..<10 { b[4 + i] = 0x30 + UInt8(x % 10); x /= 10 }
        body(UnsafeRawBufferPointer(rebasing: b[0..<14]))
    }
}

// Size the store for `targetItems`: a record is 12 + 14 + value bytes, plus ~10 bytes of index,
// plus the ghost filter and one reserve segment per shard.
let perItem = 12 + 14 + valueSize + 10
let limit = targetItems * perItem * 105 / 100 + shards * 8192
let store = Store(config: StoreConfig(memoryLimit: limit, shardCount: shards), clock: SystemClock())
let value = [UInt8](repeating: 0x76, count: valueSize)
let warmup = requests / 10
var hits = 0
var counted = 0
var heldSum = 0
var heldSamples = 0
value.withUnsafeBytes { vb in
    for i in 0..<requests {
        keyBytes(trace[i]) { k in
            var hit = false
            if case .hit = store.read(k, { _ in }) { hit = true }
            if !hit { _ = store.store(.set, key: k, flags: 0, exptime: 0, value: vb) }
            if i >= warmup {
                counted += 1
                if hit { hits += 1 }
                if i % 10_000 == 0 {
                    heldSum += store.counters().currItems
                    heldSamples += 1
                }
            }
        }
    }
}
let c = store.counters()
let ratio = Double(hits) / Double(max(1, counted))
print("{\"hit_ratio\": \(ratio), \"items_avg\": \(heldSum / max(1, heldSamples)), \"items_end\": \(c.currItems), "
      + "\"memory_limit\": \(limit), \"segment_size\": \(store.segmentSize), \"evictions\": \(c.evictions), "
      + "\"copied_forward\": \(c.copiedForward), \"requests\": \(requests), \"warmup\": \(warmup)}")
