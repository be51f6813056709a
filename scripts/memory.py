#!/usr/bin/env python3
"""Bytes of RSS per item, Larder beside memcached (same machine, same items).

Starts each server on a free 127.0.0.1 port, stores N items (pipelined `set ... noreply`,
synchronised with `version`), and reports RSS at start, after loading, RSS per item and RSS
growth per item, plus how many items the server says it holds. Usage:

    scripts/memory.py [--items N] [--key-size K] [--value-size V] [--ttl T] [-m MB]
                      [--server larder|memcached|both]

Memory-limited runs (`-m 64` with more items than fit) report the items held instead.
"""
import argparse
import os
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "python"))
from netutil import free_port  # noqa: E402


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def wait_port(port, deadline=10.0):
    end = time.time() + deadline
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server on {port} did not start")


def sync(sock):
    sock.sendall(b"version\r\n")
    buf = b""
    while not buf.endswith(b"\r\n"):
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError("connection closed")
        buf += chunk
    if b"VERSION" not in buf:
        raise RuntimeError(f"unexpected reply {buf[:200]!r}")


def stats(sock):
    sock.sendall(b"stats\r\n")
    buf = b""
    while not buf.endswith(b"END\r\n"):
        buf += sock.recv(65536)
    out = {}
    for line in buf.decode().splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "STAT":
            out[parts[1]] = parts[2]
    return out


def load(port, items, key_size, value_size, ttl, peak_pid=None):
    sock = socket.create_connection(("127.0.0.1", port))
    value = b"v" * value_size
    batch = []
    peak = 0
    for i in range(items):
        key = (b"%0*d" % (key_size, i))[-key_size:]
        batch.append(b"set %s 0 %d %d noreply\r\n%s\r\n" % (key, ttl, value_size, value))
        if len(batch) == 2000:
            sock.sendall(b"".join(batch))
            batch = []
            if i % 100_000 < 2000:
                sync(sock)
                if peak_pid:
                    peak = max(peak, rss_kb(peak_pid))
    sock.sendall(b"".join(batch))
    sync(sock)
    s = stats(sock)
    sock.close()
    return s, peak


def measure(name, cmd, args):
    port = free_port()
    full = cmd + ["-p", str(port)]
    proc = subprocess.Popen(full, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        time.sleep(0.3)
        start = rss_kb(proc.pid)
        s, peak = load(port, args.items, args.key_size, args.value_size, args.ttl, proc.pid)
        time.sleep(0.3)
        end = rss_kb(proc.pid)
        peak = max(peak, end)
        held = int(s.get("curr_items", "0"))
        print(f"{name:10s} items {held:>9,} of {args.items:,}  RSS start {start/1024:6.1f} MB  "
              f"end {end/1024:7.1f} MB  peak {peak/1024:7.1f} MB  "
              f"RSS/item {end*1024/max(held,1):6.1f} B  growth/item {(end-start)*1024/max(held,1):6.1f} B")
        return held, end, peak
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
    ap.add_argument("--larder", default=os.path.join(os.path.dirname(__file__), "..", ".build", "release", "larder"))
    args = ap.parse_args()
    user = ["-u", "nobody"] if os.getuid() == 0 else []
    print(f"{args.items:,} items, {args.key_size} B keys, {args.value_size} B values, ttl {args.ttl}, -m {args.m}")
    if args.server in ("larder", "both"):
        measure("larder", [args.larder, "-m", str(args.m), "-t", "2", "--metrics-port", "0"] + user, args)
    if args.server in ("memcached", "both"):
        measure("memcached", ["memcached", "-m", str(args.m), "-t", "2", "-U", "0"] + user, args)


if __name__ == "__main__":
    main()
