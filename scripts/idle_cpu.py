#!/usr/bin/env python3
"""Idle CPU: the server's CPU time while it holds items with a TTL and nobody talks to it.

Starts Larder and memcached (both at once, each on a free 127.0.0.1 port, -t 2, -m 2048),
loads --items items (16 B keys, 100 B values, TTL --ttl; scripts/memory.py's loader), waits
--wait seconds idle, then reads utime+stime (all threads, /proc/PID/stat) and voluntary
context switches at the start and end of the next --measure seconds. Reports CPU ms (ticks, and ns-exact schedstat) over
the window, as ms per second and % of one core. Bounded: wait + measure + load time.

    scripts/idle_cpu.py [--items 1000000] [--ttl 3600] [--wait 60] [--measure 60]
"""
import argparse
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from memory import free_port, wait_port, load  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)


def run_ns(pid):
    """CPU time of all threads in ns from /proc/PID/task/*/schedstat (finer than clock ticks)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except FileNotFoundError:
            pass
    return total


def ctxt(pid):
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/status") as f:
            for line in f:
                if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                    total += int(line.split()[1])
    return total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--ttl", type=int, default=3600)
    ap.add_argument("--wait", type=float, default=60)
    ap.add_argument("--measure", type=float, default=60)
    ap.add_argument("-m", type=int, default=2048)
    ap.add_argument("--larder", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".build", "release", "larder"))
    args = ap.parse_args()
    user = ["-u", "nobody"] if os.getuid() == 0 else []
    cmds = {"larder": [args.larder, "-m", str(args.m), "-t", "2", "--metrics-port", "0"] + user,
            "memcached": ["memcached", "-m", str(args.m), "-t", "2", "-U", "0"] + user}
    procs = {}
    try:
        for name, cmd in cmds.items():
            port = free_port()
            procs[name] = (subprocess.Popen(cmd + ["-p", str(port)], stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL), port)
            wait_port(port)
        for name, (p, port) in procs.items():
            s = load(port, args.items, 16, 100, args.ttl)[0]
            print(f"{name}: loaded {int(s['curr_items']):,} items, ttl {args.ttl}", flush=True)
        loaded = time.time()
        time.sleep(args.wait)
        before = {n: (cpu_ticks(p.pid), ctxt(p.pid), run_ns(p.pid)) for n, (p, _) in procs.items()}
        t0 = time.time()
        time.sleep(args.measure)
        secs = time.time() - t0
        print(f"idle window: {args.wait:.0f}-{args.wait + secs:.0f} s after loading")
        for n, (p, _) in procs.items():
            ms = (cpu_ticks(p.pid) - before[n][0]) * 1000 / TICK
            cs = ctxt(p.pid) - before[n][1]
            ns = run_ns(p.pid) - before[n][2]
            print(f"{n:10s} CPU {ms:7.0f} ms over {secs:.0f} s = {ms/secs:6.2f} ms/s ({ms/secs/10:.3f}% of a core)  "
                  f"schedstat {ns/1e6:8.2f} ms  context switches {cs:,} ({cs/secs:.1f}/s)")
    finally:
        for p, _ in procs.values():
            p.terminate()
            p.wait(10)


if __name__ == "__main__":
    main()
