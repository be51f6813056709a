#!/usr/bin/env python3
"""Instructions per eviction, Larder beside memcached, counted by valgrind's callgrind.

For each server (-t 1, free 127.0.0.1 port, under `valgrind --tool=callgrind`, open-file
limit 1036; as root, valgrind and the server run as user nobody so callgrind can write its
output) two runs write the same --items new keys (16 B keys, 100 B values, pipelined
`set ... noreply`): one at --big MB (nothing evicted) and one at --small MB (the cache fills,
then every set evicts). The server is stopped with SIGTERM and callgrind's total instruction
count (Ir) is read; instructions per eviction = (Ir small - Ir big) / evictions (small).
Larder's binary is copied with its DWARF stripped (objcopy --strip-debug) first. memcached
gets -o hashpower=20 so its table never grows in either run. Bounded: --items (default
300,000) and a 600 s timeout per run. Usage:

    scripts/eviction_cost.py [--items 300000] [--small 16] [--big 512] [--server larder,memcached]
"""
import argparse
import os
import re
import resource
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from memory import free_port, load  # noqa: E402


def wait_port(port, deadline=120.0):
    end = time.time() + deadline
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"server on {port} did not start")


def limit_fds():
    resource.setrlimit(resource.RLIMIT_NOFILE, (1036, 1036))
    if os.getuid() == 0:  # run valgrind itself as nobody: a server that drops root could not write its output
        import pwd
        pw = pwd.getpwnam("nobody")
        os.setgroups([])
        os.setgid(pw.pw_gid)
        os.setuid(pw.pw_uid)


def run(cmd, items, out):
    port = free_port()
    full = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"] + cmd + ["-p", str(port)]
    proc = subprocess.Popen(full, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=limit_fds)
    try:
        wait_port(port)
        s = load(port, items, 16, 100, 0)[0]
    finally:
        proc.terminate()
        proc.wait(600)
    return total_ir(out), int(s.get("evictions", 0)), int(s.get("curr_items", 0))


def total_ir(path):
    """callgrind's total instruction count (Ir) from its output file."""
    total = 0
    with open(path) as f:
        for line in f:
            m = re.match(r"(summary|totals):\s+(\d+)", line)
            if m:
                total = int(m.group(2))
    return total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=300_000)
    ap.add_argument("--small", type=int, default=16)
    ap.add_argument("--big", type=int, default=512)
    ap.add_argument("--server", default="larder,memcached")
    ap.add_argument("--larder", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".build", "release", "larder"))
    args = ap.parse_args()
    user = []  # valgrind and the server run as nobody (limit_fds), so no -u
    tmp = tempfile.mkdtemp(prefix="evcost")
    os.chmod(tmp, 0o777)  # the server writes callgrind's file after dropping to nobody
    stripped = os.path.join(tmp, "larder")
    subprocess.run(["objcopy", "--strip-debug", args.larder, stripped], check=True)
    os.chmod(stripped, 0o755)
    print(f"{args.items:,} sets of new keys (16 B / 100 B), -t 1, -m {args.big} (no eviction) vs -m {args.small}")
    for name in args.server.split(","):
        res = {}
        for m in (args.big, args.small):
            if name == "larder":
                cmd = [stripped, "-m", str(m), "-t", "1", "--metrics-port", "0"] + user
            else:
                cmd = ["memcached", "-m", str(m), "-t", "1", "-U", "0", "-o", "hashpower=20"] + user
            res[m] = run(cmd, args.items, os.path.join(tmp, f"{name}-{m}.out"))
            ir, ev, held = res[m]
            print(f"  {name:10s} -m {m:4d}: Ir {ir:>14,}  evictions {ev:>8,}  curr_items {held:>8,}  "
                  f"Ir/set {ir/args.items:8.0f}", flush=True)
        (ib, _, _), (isml, ev, _) = res[args.big], res[args.small]
        print(f"{name:10s} instructions per eviction: {(isml - ib) / max(ev, 1):8.0f}")


if __name__ == "__main__":
    main()
