#!/usr/bin/env python3
"""Steady overwrite: --keys keys (16 B keys, 100 B values) rewritten continuously at random
(seeded) into -m 64 for --duration seconds, one server at a time (free 127.0.0.1 port, -t 2).

Every --every seconds prints the server's RSS and its `stats` (curr_items, bytes,
index_bytes, evictions). Larder's `stats` has no segment figures (segments held, bytes
written into them), so the live fraction is estimated as
    bytes / (RSS - RSS at start - index_bytes)
i.e. live record bytes over the resident memory the segments occupy (an estimate: RSS also
holds allocator and buffer pages). Usage:

    scripts/overwrite.py [--keys 100000] [--duration 60] [-m 64] [--server larder,memcached]
"""
import argparse
import os
import random
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from memory import free_port, wait_port, rss_kb, sync, stats  # noqa: E402


def run(name, cmd, args):
    port = free_port()
    proc = subprocess.Popen(cmd + ["-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        time.sleep(0.3)
        start = rss_kb(proc.pid)
        sock = socket.create_connection(("127.0.0.1", port))
        rng = random.Random(args.seed)
        value = b"v" * 100
        cmds = [b"set %016d 0 0 100 noreply\r\n%s\r\n" % (i, value) for i in range(args.keys)]
        # first pass writes every key once, then random overwrites
        for i in range(0, args.keys, 2000):
            sock.sendall(b"".join(cmds[i:i + 2000]))
        sync(sock)
        written = args.keys
        t0 = time.time()
        next_report = 0.0
        print(f"{name}: RSS at start {start/1024:.1f} MB")
        while True:
            el = time.time() - t0
            if el >= next_report:
                s = stats(sock)
                rss = rss_kb(proc.pid)
                line = (f"  t={el:5.1f}s writes {written:>10,}  RSS {rss/1024:6.1f} MB  curr_items {int(s['curr_items']):>7,}  "
                        f"bytes {int(s['bytes'])/2**20:6.2f} MB  evictions {int(s.get('evictions', 0)):>7,}")
                if "index_bytes" in s:
                    seg = (rss - start) * 1024 - int(s["index_bytes"])
                    line += f"  index {int(s['index_bytes'])/2**20:5.2f} MB  est. live fraction {int(s['bytes'])/max(seg,1):5.3f}"
                print(line, flush=True)
                next_report += args.every
                if el >= args.duration:
                    break
            sock.sendall(b"".join(cmds[rng.randrange(args.keys)] for _ in range(2000)))
            written += 2000
            if written % 20000 == 0:
                sync(sock)
        sock.close()
    finally:
        proc.terminate()
        proc.wait(10)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--keys", type=int, default=100_000)
    ap.add_argument("--duration", type=float, default=60)
    ap.add_argument("--every", type=float, default=5)
    ap.add_argument("-m", type=int, default=64)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--server", default="larder,memcached")
    ap.add_argument("--larder", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".build", "release", "larder"))
    args = ap.parse_args()
    user = ["-u", "nobody"] if os.getuid() == 0 else []
    cmds = {"larder": [args.larder, "-m", str(args.m), "-t", "2", "--metrics-port", "0"] + user,
            "memcached": ["memcached", "-m", str(args.m), "-t", "2", "-U", "0"] + user}
    print(f"{args.keys:,} keys, 16 B keys / 100 B values, random overwrites (seed {args.seed}) for {args.duration:g} s, -m {args.m}")
    for name in args.server.split(","):
        run(name, cmds[name], args)


if __name__ == "__main__":
    main()
