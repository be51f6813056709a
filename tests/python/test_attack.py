"""Hostile clients all at once against one server started with -c 200 -m 64, while a
well-behaved client (its own process) keeps doing set/get: it must see no errors and a worst
latency under 100 ms; afterwards the server serves new connections and its RSS never passed
200 MB. Uses the release build (latency is part of the claim)."""
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time

from conftest import ROOT, Larder

RELEASE = os.path.join(ROOT, ".build", "release", "larder")
SECONDS = 8


def connect(port):
    try:
        return socket.create_connection(("127.0.0.1", port), timeout=5)
    except OSError:
        return None


def random_bytes(port, stop):
    rng = random.Random(1)
    while not stop.is_set():
        s = connect(port)
        if not s:
            time.sleep(0.05)
            continue
        try:
            for _ in range(50):
                s.sendall(bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 3000))))
                time.sleep(0.01)
        except OSError:
            pass
        s.close()


def huge_line(port, stop):
    line = b"x" * (4 << 20)
    while not stop.is_set():
        s = connect(port)
        if not s:
            time.sleep(0.05)
            continue
        try:
            s.sendall(line)
        except OSError:
            pass
        s.close()
        time.sleep(0.05)


def short_set(port, stop):
    socks = []
    while not stop.is_set() and len(socks) < 3:
        s = connect(port)
        if s:
            s.sendall(b"set big 0 0 1000000\r\n0123456789")
            socks.append(s)
    stop.wait()
    for s in socks:
        s.close()


def slowloris(port, stop):
    s = connect(port)
    if not s:
        return
    msg = b"get slow:key\r\n" * 1000
    i = 0
    try:
        while not stop.is_set():
            s.sendall(msg[i:i + 1])
            i += 1
            time.sleep(0.05)
    except OSError:
        pass
    s.close()


def flood(port, stop):
    socks = [connect(port) for _ in range(300)]
    stop.wait(3)
    for s in socks:
        if s:
            s.close()


def never_reads(port, stop):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        s.connect(("127.0.0.1", port))
        s.sendall(b"get big512\r\n" * 500)
    except OSError:
        pass
    stop.wait()
    s.close()


def disconnect_mid_reply(port, stop):
    while not stop.is_set():
        s = connect(port)
        if not s:
            time.sleep(0.05)
            continue
        try:
            s.sendall(b"get big512\r\n" * 4)
            s.recv(1000)
        except OSError:
            pass
        s.close()
        time.sleep(0.02)


def rss_mb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0


def test_isolation_under_attack(monkeypatch):
    monkeypatch.setenv("LARDER_BIN", RELEASE)
    import conftest
    monkeypatch.setattr(conftest, "larder_binary", lambda: RELEASE)
    server = Larder("-t", "2", "-c", "200", "-m", "64")
    port = server.port
    try:
        s = socket.create_connection(("127.0.0.1", port))
        v = b"z" * (512 * 1024)
        s.sendall(b"set big512 0 0 %d\r\n%s\r\n" % (len(v), v))
        assert s.recv(100) == b"STORED\r\n"
        s.close()
        good = subprocess.Popen([sys.executable, os.path.join(ROOT, "tests", "python", "good_client.py"), str(port), str(SECONDS)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert good.stdout.readline().strip() == "connected"
        stop = threading.Event()
        attackers = [random_bytes] * 2 + [huge_line] * 2 + [short_set] + [slowloris] * 5 + [flood] + [never_reads] * 2 + [disconnect_mid_reply] * 2
        threads = [threading.Thread(target=a, args=(port, stop), daemon=True) for a in attackers]
        for t in threads:
            t.start()
        good.stdin.write("go\n")
        good.stdin.flush()
        peak = 0.0
        t0 = time.time()
        while good.poll() is None and time.time() - t0 < SECONDS + 20:
            peak = max(peak, rss_mb(server.proc.pid))
            time.sleep(0.1)
        result = json.loads(good.stdout.readline())
        stop.set()
        for t in threads:
            t.join(timeout=10)
        print("good client under attack:", result, "peak RSS %.1f MB" % peak)
        assert result["errors"] == 0, result
        assert result["ops"] > 100, result
        assert result["worst_ms"] < 100, result
        assert peak < 200, peak
        # Afterwards the server serves new connections normally.
        time.sleep(1)
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"set after 0 0 2\r\nok\r\nget after\r\n")
        buf = b""
        while not buf.endswith(b"END\r\n"):
            buf += s.recv(4096)
        assert buf == b"STORED\r\nVALUE after 0 2\r\nok\r\nEND\r\n"
        s.close()
    finally:
        assert server.stop() == 0
