#!/usr/bin/env python3
"""Peak RSS and store stats while loading items, Larder beside memcached.

Same load as scripts/memory.py (it imports its loader: pipelined `set ... noreply`, key i
zero-padded to --key-size), but a thread samples VmRSS every --sample-ms (default 10 ms)
and the kernel's exact high-water mark VmHWM is read at the end; then prints the server's
`stats` figures that describe memory (bytes, index_bytes, curr_items, evictions, ...) and
`stats settings` shards (Larder). Each server runs on a free 127.0.0.1 port, -t 2, and is
stopped after its run (timeout 300 s per server). Usage:

    scripts/memory_peak.py [--items N] [--key-size K] [--value-size V] [--ttl T] [-m MB]
                           [--server larder|memcached|both] [--sample-ms MS]
"""
import argparse
import os
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import memory  # noqa: E402  (scripts/memory.py)
from memory import free_port, rss_kb, wait_port, stats, load  # noqa: E402

KEYS = ("curr_items", "bytes", "index_bytes", "limit_maxbytes", "evictions", "reclaimed",
        "expired_unfetched", "evicted_unfetched", "stale_slots", "store_no_memory")


def status_kb(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def query(port, cmd):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(cmd + b"\r\n")
    buf = b""
    while not buf.endswith(b"END\r\n"):
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
    s.close()
    return dict(l.split()[1:3] for l in buf.decode().splitlines() if l.startswith("STAT ") and len(l.split()) >= 3)


def run(name, cmd, args):
    port = free_port()
    proc = subprocess.Popen(cmd + ["-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    samples = []
    stop = threading.Event()

    def sampler():
        while not stop.is_set():
            samples.append(rss_kb(proc.pid))
            time.sleep(args.sample_ms / 1000)

    try:
        wait_port(port)
        time.sleep(0.3)
        start = rss_kb(proc.pid)
        t = threading.Thread(target=sampler, daemon=True)
        t.start()
        t0 = time.time()
        load(port, args.items, args.key_size, args.value_size, args.ttl)
        secs = time.time() - t0
        time.sleep(0.3)
        stop.set()
        t.join()
        end = rss_kb(proc.pid)
        hwm = status_kb(proc.pid, "VmHWM")
        st = query(port, b"stats")
        sl = query(port, b"stats slabs")
        se = query(port, b"stats settings")
        held = int(st.get("curr_items", 0))
        print(f"{name:10s} items {held:>9,} of {args.items:,}  load {secs:5.1f} s  RSS start {start/1024:6.1f} MB  "
              f"end {end/1024:7.1f} MB  peak sampled {max(samples + [end])/1024:7.1f} MB  VmHWM {hwm/1024:7.1f} MB  "
              f"RSS/item {end*1024/max(held,1):6.1f} B  growth/item {(end-start)*1024/max(held,1):6.1f} B")
        print("   stats: " + "  ".join(f"{k}={st[k]}" for k in KEYS if k in st)
              + (f"  total_malloced={sl['total_malloced']}" if "total_malloced" in sl else "")
              + (f"  shards={se['shards']}" if "shards" in se else ""))
        if held:
            print(f"   bytes/item {int(st.get('bytes', 0))/held:.1f}"
                  + (f"  index_bytes/item {int(st['index_bytes'])/held:.1f}" if "index_bytes" in st else ""))
    finally:
        proc.terminate()
        proc.wait(10)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--key-size", type=int, default=16)
    ap.add_argument("--value-size", type=int, default=100)
    ap.add_argument("--ttl", type=int, default=0)
    ap.add_argument("-m", type=int, default=2048)
    ap.add_argument("--server", default="both")
    ap.add_argument("--sample-ms", type=float, default=10)
    ap.add_argument("--larder", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".build", "release", "larder"))
    args = ap.parse_args()
    user = ["-u", "nobody"] if os.getuid() == 0 else []
    print(f"{args.items:,} items, {args.key_size} B keys, {args.value_size} B values, ttl {args.ttl}, -m {args.m}, "
          f"RSS sampled every {args.sample_ms:g} ms")
    if args.server in ("larder", "both"):
        run("larder", [args.larder, "-m", str(args.m), "-t", "2", "--metrics-port", "0"] + user, args)
    if args.server in ("memcached", "both"):
        run("memcached", ["memcached", "-m", str(args.m), "-t", "2", "-U", "0"] + user, args)


if __name__ == "__main__":
    main()
