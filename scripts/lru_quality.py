#!/usr/bin/env python3
"""Eviction quality: Larder's segment S3-FIFO beside libCacheSim's LRU, CLOCK, S3-FIFO, SIEVE,
ARC and W-TinyLFU, at the same number of items, on the same traces.

Traces (seeded, so every run replays the same requests):
  zipf  Zipf(alpha) over KEYS keys
  scan  the same, with SCAN of the requests replaced by one-hit-wonder scans (runs of 1,000
        keys never seen before or after)
Larder's store replays each trace (get, set on miss; scripts/../larder-lru-quality) sized for
FRACTION x KEYS items; every libCacheSim policy then gets the average number of items Larder
held, and hit ratios are counted after the same 10% warm-up.

Usage: scripts/lru-quality [--requests N] [--keys K] [--alpha A] [--fraction F] [--scan S]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import libcachesim as lcs

HERE = os.path.dirname(os.path.abspath(__file__))


def zipf_ids(rng, keys, alpha, n):
    ranks = np.arange(1, keys + 1, dtype=np.float64)
    cdf = np.cumsum(1.0 / ranks ** alpha)
    cdf /= cdf[-1]
    perm = rng.permutation(keys).astype(np.uint32)
    return perm[np.searchsorted(cdf, rng.random(n))]


def make_trace(kind, requests, keys, alpha, scan, seed):
    rng = np.random.default_rng(seed)
    ids = zipf_ids(rng, keys, alpha, requests)
    if kind == "scan":
        run = 1000
        runs = int(requests * scan) // run
        starts = rng.choice(requests // run, size=runs, replace=False) * run
        next_id = keys + 1_000_000
        for s in sorted(starts):
            ids[s:s + run] = np.arange(next_id, next_id + run, dtype=np.uint32)
            next_id += run
    return ids


def libcachesim_ratio(policy, ids, size, warmup):
    cache = policy(cache_size=size)
    req = lcs.Request()
    req.obj_size = 1
    hits = 0
    for i, k in enumerate(ids.tolist()):
        req.obj_id = k
        h = cache.get(req)
        if i >= warmup and h:
            hits += 1
    return hits / (len(ids) - warmup)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=2_000_000)
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--alpha", type=float, default=0.99)
    ap.add_argument("--fraction", type=float, default=0.10)
    ap.add_argument("--scan", type=float, default=0.30)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--bin", default=os.path.join(HERE, "..", ".build", "release", "larder-lru-quality"))
    ap.add_argument("--policies", default="LRU,Clock,S3FIFO,Sieve,ARC,WTinyLFU")
    args = ap.parse_args()
    target = int(args.keys * args.fraction)
    print(f"{args.requests:,} requests, Zipf({args.alpha}) over {args.keys:,} keys, "
          f"cache ~{args.fraction:.0%} of keys, warm-up 10%, seed {args.seed}")
    rows = []
    for kind in ("zipf", "scan"):
        ids = make_trace(kind, args.requests, args.keys, args.alpha, args.scan, args.seed)
        with tempfile.NamedTemporaryFile(suffix=".trace", delete=False) as f:
            f.write(ids.astype("<u4").tobytes())
            path = f.name
        try:
            out = subprocess.run([args.bin, path, str(target)], check=True, capture_output=True, text=True).stdout
        finally:
            os.unlink(path)
        larder = json.loads(out.strip().splitlines()[-1])
        size = larder["items_avg"]
        warmup = larder["warmup"]
        row = {"trace": kind, "items": size, "Larder": larder["hit_ratio"]}
        for name in args.policies.split(","):
            row[name] = libcachesim_ratio(getattr(lcs, name), ids, size, warmup)
        rows.append(row)
        print(f"\n{kind}: {size:,} items")
        for k, v in row.items():
            if k not in ("trace", "items"):
                print(f"  {k:10s} {v * 100:6.2f}%")
    print("\n| trace | items | " + " | ".join(k for k in rows[0] if k not in ("trace", "items")) + " |")
    for r in rows:
        print(f"| {r['trace']} | {r['items']:,} | " + " | ".join(
            f"{v * 100:.2f}%" for k, v in r.items() if k not in ("trace", "items")) + " |")
    ok = all(r["Larder"] >= r["S3FIFO"] for r in rows)
    print("\nLarder >= S3-FIFO on both traces:", "yes" if ok else "NO")


if __name__ == "__main__":
    sys.exit(main())
