#!/usr/bin/env python3
"""Instructions per pipelined get, counted by valgrind's callgrind, for one or more builds.

Each binary (-t 1, free 127.0.0.1 port, under callgrind; as root valgrind runs as nobody)
is given --items sets (16 B keys, 100 B values, noreply), then --gets gets of those keys,
--pipeline requests per send (each batch is read back before the next). A second run does
the sets only; (Ir with gets - Ir without) / gets is the cost of one get, server side,
syscalls excluded. Counts repeat to a few instructions, so small changes show. Bounded by
--items/--gets and a 600 s timeout per run. Usage:

    scripts/get_cost.py BINARY [BINARY...] [--items 10000] [--gets 100000] [--pipeline 16] [--args "-m 64"]

A memcached binary works too (it is given -U 0).
"""
import argparse
import os
import shlex
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from memory import free_port  # noqa: E402
from eviction_cost import wait_port, limit_fds, total_ir  # noqa: E402
import socket


def drive(port, items, gets, pipeline):
    s = socket.create_connection(("127.0.0.1", port))
    value = b"v" * 100
    batch = b"".join(b"set key:%012d 0 0 100 noreply\r\n%s\r\n" % (i, value) for i in range(items))
    s.sendall(batch + b"version\r\n")  # (not mn: older builds have no meta commands)
    buf = b""
    while not buf.endswith(b"\r\n"):
        buf += s.recv(65536)
    done = 0
    while done < gets:
        n = min(pipeline, gets - done)
        req = b"".join(b"get key:%012d\r\n" % ((done + k) % items) for k in range(n))
        s.sendall(req)
        want = n
        buf = b""
        while buf.count(b"END\r\n") < want:
            chunk = s.recv(65536)
            if not chunk:
                raise RuntimeError("server closed")
            buf += chunk
        done += n
    s.close()


def run(binary, extra, items, gets, pipeline, out):
    port = free_port()
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", binary, "-t", "1", "-p", str(port)]
    cmd += ["-U", "0"] if "memcached" in os.path.basename(binary) else ["--metrics-port", "0"]
    cmd += extra
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=limit_fds)
    try:
        wait_port(port)
        drive(port, items, gets, pipeline)
    finally:
        proc.terminate()
        proc.wait(600)
    return total_ir(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binaries", nargs="+")
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--gets", type=int, default=100_000)
    ap.add_argument("--pipeline", type=int, default=16)
    ap.add_argument("--args", default="")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="larder-getcost-")
    os.chmod(tmp, 0o777)
    for n, b in enumerate(a.binaries):
        stripped = os.path.join(tmp, f"{n}-" + os.path.basename(b) + "-nodebug")
        subprocess.run(["objcopy", "--strip-debug", b, stripped], check=True)
        os.chmod(stripped, 0o755)
        base = run(stripped, shlex.split(a.args), a.items, 0, a.pipeline, os.path.join(tmp, f"{n}-base.out"))
        full = run(stripped, shlex.split(a.args), a.items, a.gets, a.pipeline, os.path.join(tmp, f"{n}-full.out"))
        print(f"{b}: {(full - base) / a.gets:,.0f} instructions per get (pipeline {a.pipeline}; "
              f"Ir {full:,} with gets, {base:,} without)", flush=True)
    print(f"callgrind files (callgrind_annotate them): {tmp}")


if __name__ == "__main__":
    main()
