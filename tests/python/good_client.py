"""A well-behaved client for the attack test: set/get in a loop, checks every reply, reports
the worst latency and errors as JSON. Usage: good_client.py PORT SECONDS"""
import json
import socket
import sys
import time

port, seconds = int(sys.argv[1]), float(sys.argv[2])
s = socket.create_connection(("127.0.0.1", port), timeout=5)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
print("connected", flush=True)
sys.stdin.readline()  # wait until the attack starts
worst = 0.0
errors = 0
ops = 0
end = time.time() + seconds
i = 0
while time.time() < end:
    i += 1
    v = b"good-%d" % i
    t = time.perf_counter()
    try:
        s.sendall(b"set good:%d 0 0 %d\r\n%s\r\n" % (i % 100, len(v), v))
        buf = b""
        while not buf.endswith(b"\r\n"):
            buf += s.recv(4096)
        if buf != b"STORED\r\n":
            errors += 1
        s.sendall(b"get good:%d\r\n" % (i % 100))
        buf = b""
        while not buf.endswith(b"END\r\n"):
            buf += s.recv(4096)
        if buf != b"VALUE good:%d 0 %d\r\n%s\r\nEND\r\n" % (i % 100, len(v), v):
            errors += 1
    except OSError:
        errors += 1
        break
    worst = max(worst, time.perf_counter() - t)
    ops += 1
    time.sleep(0.002)
print(json.dumps({"worst_ms": worst * 1000, "errors": errors, "ops": ops}), flush=True)
