#!/usr/bin/env python3
"""Warm restart time: fills a server (16-byte keys, 100-byte values) with -e /dev/shm/FILE,
then stops and starts it again on the same file and measures the time from starting the new
process to its first hit (a `get` answered with the value). Larder: graceful (SIGUSR1) and
crash (SIGKILL) restarts; memcached (the reference, -e as well): graceful only, since it
restores nothing after a crash. Several restarts each, alternating the servers.

    scripts/restart_time.py [--items 1000000] [--memory 1024] [--rounds 3]

Needs a release build (scripts/lib.sh build_release larder) and memcached on PATH.
"""
import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "python"))
from netutil import free_port  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AS_USER = ["-u", "nobody"] if os.getuid() == 0 else []


def larder_cmd(port, path, mb):
    binary = os.environ.get("LARDER_BIN") or os.path.join(ROOT, ".build", "release", "larder")
    return [binary, "-p", str(port), "--metrics-port", "0", "-t", "2", "-m", str(mb), "-e", path] + AS_USER


def memcached_cmd(port, path, mb):
    return ["memcached", "-p", str(port), "-U", "0", "-l", "127.0.0.1", "-t", "2", "-m", str(mb), "-e", path] + AS_USER


def key(i):
    return b"k%015d" % i


VALUE = b"v" * 100


def fill(port, n):
    s = socket.create_connection(("127.0.0.1", port))
    batch = 20000
    for start in range(0, n, batch):
        s.sendall(b"".join(b"set %s 0 0 100 noreply\r\n%s\r\n" % (key(i), VALUE)
                           for i in range(start, min(n, start + batch))))
    s.sendall(b"mn\r\n")
    buf = b""
    while b"MN\r\n" not in buf:
        buf += s.recv(65536)
    s.close()


def first_hit(port, probe, deadline=120.0):
    """Seconds until a `get` of `probe` returns its value (polling every 2 ms)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < deadline:
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"get %s\r\n" % probe)
            buf = b""
            while not buf.endswith(b"END\r\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
            s.close()
            if buf.startswith(b"VALUE"):
                return time.monotonic() - t0
            raise RuntimeError("first reply was a miss: %r" % buf[:60])
        except (ConnectionRefusedError, ConnectionResetError):
            time.sleep(0.002)
    raise RuntimeError("no answer within %.0f s" % deadline)


def curr_items(port):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"stats\r\n")
    buf = b""
    while not buf.endswith(b"END\r\n"):
        buf += s.recv(65536)
    s.close()
    for line in buf.split(b"\r\n"):
        if line.startswith(b"STAT curr_items "):
            return int(line.split()[2])
    return -1


class Server:
    def __init__(self, name, cmd_of, mb, n):
        self.name, self.cmd_of, self.mb, self.n = name, cmd_of, mb, n
        self.path = "/dev/shm/restart-time-%s-%d" % (name, os.getpid())
        self.port = free_port()
        self.proc = None

    def stop(self, how):
        self.proc.send_signal(signal.SIGUSR1 if how == "graceful" else signal.SIGKILL)
        self.proc.wait(timeout=120)

    def cleanup(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if os.path.exists(self.path):
            os.unlink(self.path)


def measured_start(server):
    t0 = time.monotonic()
    server.proc = subprocess.Popen(server.cmd_of(server.port, server.path, server.mb),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first_hit(server.port, key(server.n - 1))
    elapsed = time.monotonic() - t0
    got = curr_items(server.port)
    if got != server.n:
        raise RuntimeError("%s restored %d items of %d" % (server.name, got, server.n))
    return elapsed


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--memory", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    servers = [Server("larder", larder_cmd, args.memory, args.items),
               Server("memcached", memcached_cmd, args.memory, args.items)]
    results = {"larder graceful": [], "larder crash": [], "memcached graceful": []}
    try:
        for s in servers:
            s.proc = subprocess.Popen(s.cmd_of(s.port, s.path, s.mb), stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)
            first_hit_or_empty(s.port)
            t = time.monotonic()
            fill(s.port, s.n)
            print("%s: filled %d items in %.1f s" % (s.name, s.n, time.monotonic() - t), flush=True)
        for r in range(args.rounds):
            for s in servers:
                kinds = ["graceful", "crash"] if s.name == "larder" else ["graceful"]
                for how in kinds:
                    s.stop("graceful" if how == "graceful" else "kill")
                    # memcached 1.6.18 refuses a restart within ~2 s of its stop ("restart
                    # incompatible due to setting for [stop_time]"): wait, for both, untimed.
                    time.sleep(2.5)
                    t = measured_start(s)
                    results["%s %s" % (s.name, how)].append(t)
                    print("round %d: %s %s restart: first hit %.3f s after exec" % (r, s.name, how, t), flush=True)
    finally:
        for s in servers:
            s.cleanup()
    print("\n%d items, -m %d, %d rounds (median, min-max):" % (args.items, args.memory, args.rounds))
    for k, v in results.items():
        print("  %-20s %.3f s  (%.3f-%.3f)" % (k, statistics.median(v), min(v), max(v)))


def first_hit_or_empty(port, deadline=30.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
            return
        except ConnectionRefusedError:
            time.sleep(0.01)
    raise RuntimeError("server did not start")


if __name__ == "__main__":
    main()
