#!/usr/bin/env python3
"""Hit ratio through the real servers: replays a seeded trace over TCP against Larder and
memcached at the same -m and -t.

Traces come from scripts/lru_quality.py's make_trace (zipf: Zipf(alpha) over KEYS keys;
scan: the same with SCAN of the requests replaced by one-hit-wonder runs of 1,000 keys).
Each batch of --batch requests is one multi-key `get`; every miss is then `set` (noreply,
--value-size bytes, no TTL) before the next batch, the same way for both servers, so a key
repeated inside one batch counts as the server answered it. Hit ratio is counted after a
10% warm-up. Each server runs on a free 127.0.0.1 port and is stopped afterwards.

    scripts/replay_tcp.py [-m 32] [-t 2] [--requests 2000000] [--keys 1000000]
                          [--value-size 32] [--trace zipf,scan] [--server larder,memcached]
"""
import argparse
import os
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from lru_quality import make_trace  # noqa: E402
from memory import free_port, wait_port, rss_kb  # noqa: E402


def recv_until(sock, buf, end):
    while not buf.endswith(end):
        chunk = sock.recv(1 << 20)
        if not chunk:
            raise RuntimeError("connection closed")
        buf += chunk
    return buf


def replay(port, ids, value_size, batch, warmup):
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # else Nagle + delayed ACK: 40 ms a batch
    value = b"v" * value_size
    hits = counted = 0
    keys = [b"k%d" % i for i in ids.tolist()]
    for start in range(0, len(keys), batch):
        chunk = keys[start:start + batch]
        sock.sendall(b"get " + b" ".join(chunk) + b"\r\n")
        buf = recv_until(sock, b"", b"END\r\n")
        got = set()
        pos = 0
        while True:
            if buf.startswith(b"END\r\n", pos):
                break
            nl = buf.index(b"\r\n", pos)
            parts = buf[pos:nl].split()
            if parts[0] != b"VALUE":
                raise RuntimeError(f"unexpected reply {buf[pos:pos+200]!r}")
            got.add(parts[1])
            pos = nl + 2 + int(parts[3]) + 2
        sets = []
        for j, k in enumerate(chunk):
            if k in got:
                if start + j >= warmup:
                    hits += 1
            else:
                sets.append(b"set %s 0 0 %d noreply\r\n%s\r\n" % (k, value_size, value))
                got.add(k)  # one set per key per batch
            if start + j >= warmup:
                counted += 1
        if sets:
            sock.sendall(b"".join(sets))
    sock.sendall(b"stats\r\n")
    buf = recv_until(sock, b"", b"END\r\n")
    st = dict(l.split()[1:3] for l in buf.decode().splitlines() if l.startswith("STAT "))
    sock.close()
    return hits / counted, st


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-m", type=int, default=32)
    ap.add_argument("-t", type=int, default=2)
    ap.add_argument("--requests", type=int, default=2_000_000)
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--alpha", type=float, default=0.99)
    ap.add_argument("--scan", type=float, default=0.30)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--value-size", type=int, default=32)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--trace", default="zipf,scan")
    ap.add_argument("--server", default="larder,memcached")
    ap.add_argument("--larder", default=os.path.join(HERE, "..", ".build", "release", "larder"))
    args = ap.parse_args()
    user = ["-u", "nobody"] if os.getuid() == 0 else []
    cmds = {"larder": [args.larder, "-m", str(args.m), "-t", str(args.t), "--metrics-port", "0"] + user,
            "memcached": ["memcached", "-m", str(args.m), "-t", str(args.t), "-U", "0"] + user}
    warmup = args.requests // 10
    print(f"{args.requests:,} requests, Zipf({args.alpha}) over {args.keys:,} keys, {args.value_size} B values, "
          f"-m {args.m} -t {args.t}, batch {args.batch}, warm-up 10%, seed {args.seed}")
    for kind in args.trace.split(","):
        ids = make_trace(kind, args.requests, args.keys, args.alpha, args.scan, args.seed)
        for name in args.server.split(","):
            port = free_port()
            proc = subprocess.Popen(cmds[name] + ["-p", str(port)], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            try:
                wait_port(port)
                t0 = time.time()
                ratio, st = replay(port, ids, args.value_size, args.batch, warmup)
                print(f"{kind:5s} {name:10s} hit ratio {ratio*100:6.2f}%  curr_items {int(st.get('curr_items', 0)):>8,}  "
                      f"evictions {int(st.get('evictions', 0)):>9,}  RSS {rss_kb(proc.pid)/1024:6.1f} MB  "
                      f"({time.time()-t0:.0f} s)", flush=True)
            finally:
                proc.terminate()
                proc.wait(10)


if __name__ == "__main__":
    main()
