"""Soak test for Larder (see scripts/soak)."""
import os
import random
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "python"))
from netutil import free_port  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LARDER = os.path.join(ROOT, ".build", "release", "larder")


def rss_mb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return -1


def fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def stats(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"stats\r\n")
    buf = b""
    while not buf.endswith(b"END\r\n"):
        buf += s.recv(65536)
    s.close()
    return dict(l.split(" ")[1:3] for l in buf.decode().split("\r\n") if l.startswith("STAT "))


class Counts:
    def __init__(self):
        self.lock = threading.Lock()
        self.c = {k: 0 for k in ("set", "get", "delete", "incr", "touch", "abrupt", "conns")}

    def add(self, d):
        with self.lock:
            for k, v in d.items():
                self.c[k] += v


def read_until(s, buf, term):
    while term not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    i = buf.index(term) + len(term)
    return buf[:i], buf[i:]


def worker(port, stop, counts, seed):
    rng = random.Random(seed)
    while not stop.is_set():
        local = {k: 0 for k in counts.c}
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
        except OSError:
            time.sleep(0.05)
            continue
        local["conns"] += 1
        buf = b""
        try:
            for _ in range(rng.randint(1, 400)):
                if stop.is_set():
                    break
                k = b"soak:%d" % rng.randint(0, 50000)
                op = rng.random()
                if op < 0.35:
                    v = b"v" * rng.randint(1, 3000)
                    s.sendall(b"set %s 0 %d %d\r\n%s\r\n" % (k, rng.choice([0, 0, 1, 2, 5]), len(v), v))
                    line, buf = read_until(s, buf, b"\r\n")
                    assert line == b"STORED\r\n", line
                    local["set"] += 1
                elif op < 0.80:
                    s.sendall(b"get %s\r\n" % k)
                    while True:
                        line, buf = read_until(s, buf, b"\r\n")
                        if line == b"END\r\n":
                            break
                        assert line.startswith(b"VALUE "), line
                        n = int(line.split()[3])
                        while len(buf) < n + 2:
                            buf += s.recv(65536)
                        buf = buf[n + 2:]
                    local["get"] += 1
                elif op < 0.90:
                    s.sendall(b"delete %s\r\n" % k)
                    line, buf = read_until(s, buf, b"\r\n")
                    assert line in (b"DELETED\r\n", b"NOT_FOUND\r\n"), line
                    local["delete"] += 1
                elif op < 0.95:
                    s.sendall(b"incr %s 1\r\n" % k)
                    line, buf = read_until(s, buf, b"\r\n")
                    local["incr"] += 1
                else:
                    s.sendall(b"touch %s 3\r\n" % k)
                    line, buf = read_until(s, buf, b"\r\n")
                    assert line in (b"TOUCHED\r\n", b"NOT_FOUND\r\n"), line
                    local["touch"] += 1
            if rng.random() < 0.3:
                # Disconnect mid-request: half a command line or half a data block, which the
                # server must drop without executing.
                if rng.random() < 0.5:
                    s.sendall(b"set soak:half 0 0 100\r\n" + b"x" * rng.randint(0, 99))
                else:
                    s.sendall(b"get soak:hal")
                local["abrupt"] += 1
        except (OSError, ConnectionError, AssertionError) as e:
            print("client error:", e, file=sys.stderr)
            local.setdefault("errors", 0)
        finally:
            s.close()
            counts.add({k: v for k, v in local.items() if k in counts.c})


def main():
    minutes = float(sys.argv[1]) if len(sys.argv) > 1 else 20
    port, mport = free_port(), free_port()
    args = [LARDER, "-p", str(port), "-t", "2", "-m", "32", "--metrics-port", str(mport)]
    if os.getuid() == 0:
        args += ["-u", "nobody"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    time.sleep(0.5)
    base_fds = fds(proc.pid)
    start_stats = stats(port)
    counts = Counts()
    stop = threading.Event()
    threads = [threading.Thread(target=worker, args=(port, stop, counts, i), daemon=True) for i in range(8)]
    for t in threads:
        t.start()
    total = minutes * 60
    warm = min(120, total * 0.2)
    t0 = time.time()
    samples = []
    while time.time() - t0 < total:
        time.sleep(min(10, max(0.5, total / 20)))
        samples.append((time.time() - t0, rss_mb(proc.pid), fds(proc.pid)))
        print("  t=%5.0fs  RSS %6.1f MB  fds %4d  ops so far %d" % (samples[-1][0], samples[-1][1], samples[-1][2],
              sum(v for k, v in counts.c.items() if k in ("set", "get", "delete", "incr", "touch"))), file=sys.stderr)
    stop.set()
    for t in threads:
        t.join(timeout=30)
    time.sleep(2)
    end_fds = fds(proc.pid)
    st = stats(port)
    c = counts.c
    after_warm = [s for s in samples if s[0] >= warm]
    rss_warm = after_warm[0][1] if after_warm else samples[0][1]
    rss_end = samples[-1][1]
    rss_max = max(s[1] for s in after_warm or samples)

    def delta(name):
        return int(st[name]) - int(start_stats.get(name, 0))

    checks = [
        ("cmd_set == sets completed", delta("cmd_set"), c["set"]),
        ("get_hits + get_misses == gets", delta("get_hits") + delta("get_misses"), c["get"]),
        ("delete_hits + delete_misses == deletes", delta("delete_hits") + delta("delete_misses"), c["delete"]),
        ("incr hits + misses (+ non-numeric) == incrs", delta("incr_hits") + delta("incr_misses"), None),
        ("touch_hits + touch_misses == touches", delta("touch_hits") + delta("touch_misses"), c["touch"]),
        ("total_connections == connections made (+1 stats)", delta("total_connections"), c["conns"] + 1),
    ]
    ok = True
    print("\nsoak: %.1f min, %d connections (%d ended mid-request), %d sets, %d gets, %d deletes, %d incrs, %d touches"
          % (minutes, c["conns"], c["abrupt"], c["set"], c["get"], c["delete"], c["incr"], c["touch"]))
    print("RSS after warm-up %.1f MB, max %.1f MB, end %.1f MB; fds baseline %d, end %d; evictions %s, reclaimed %s, stale_slots %s"
          % (rss_warm, rss_max, rss_end, base_fds, end_fds, st["evictions"], st["reclaimed"], st["stale_slots"]))
    for name, got, want in checks:
        if want is None:
            print("  %-50s %d" % (name, got))
            continue
        good = got == want
        ok &= good
        print("  %-50s server %d, client %d  %s" % (name, got, want, "ok" if good else "MISMATCH"))
    flat = rss_max <= rss_warm * 1.10 + 8
    ok &= flat
    print("  %-50s %s" % ("RSS flat after warm-up (max <= 1.1 x warm-up + 8 MB)", "ok" if flat else "GREW"))
    fd_ok = end_fds == base_fds
    ok &= fd_ok
    print("  %-50s %s" % ("open fds back to baseline", "ok" if fd_ok else "LEAK"))
    conns_ok = st["curr_connections"] == "1"
    ok &= conns_ok
    print("  %-50s %s" % ("curr_connections back to 1 (this stats call)", "ok" if conns_ok else st["curr_connections"]))
    proc.terminate()
    proc.wait(timeout=10)
    print("soak:", "PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
