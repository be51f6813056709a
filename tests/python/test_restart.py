"""Warm restart with the memory file (-e): the real binary stopped by SIGUSR1 or killed with
SIGKILL under concurrent writers, started again on the same file, and every key checked
against what the writers saw acknowledged (restart_check.py). Then the file is damaged
(truncated, bytes flipped with a printed seed, another layout version) and the server must
start and serve only values some client wrote."""
import os
import random
import re
import signal
import threading
import time
import uuid

import pytest

from conftest import Larder
from restart_check import Conn, Writer, check, make_value, self_consistent

SEED = int(os.environ.get("RESTART_SEED", random.randrange(1 << 30)))


@pytest.fixture
def memfile():
    path = "/dev/shm/larder-pytest-%s" % uuid.uuid4().hex[:12]
    yield path
    if os.path.exists(path):
        os.unlink(path)


def start(path, *extra):
    return Larder("-t", "2", "-m", "64", "-e", path, *extra)


def stat(server, name):
    c = Conn(server.port)
    c.sock.sendall(b"stats\r\n")
    out = {}
    while True:
        l = c.line()
        if l == "END":
            break
        _, k, v = l.split(" ", 2)
        out[k] = v
    c.close()
    return out[name]


def run_writers(server, model_sets, seed, seconds):
    stop = threading.Event()
    ws = [Writer(server.port, "w%d-" % i, 2000, seed * 10 + i, model_sets[i], stop) for i in range(2)]
    for w in ws:
        w.start()
    time.sleep(seconds)
    return ws, stop


@pytest.mark.parametrize("how", ["graceful", "kill"])
def test_restart_under_writers_keeps_every_acknowledged_write(memfile, how):
    print("seed", SEED)
    rng = random.Random(SEED)
    models = [{}, {}]
    server = start(memfile)
    totals = dict(checked=0, lost=0, resurrected=0, wrong=0, in_flight_used=0)
    for round_ in range(3):
        ws, stop = run_writers(server, models, SEED + round_, 0.5 + rng.random())
        if how == "graceful":
            server.proc.send_signal(signal.SIGUSR1)
            assert server.proc.wait(timeout=20) == 0
        else:
            server.proc.kill()
            server.proc.wait(timeout=10)
        stop.set()
        for w in ws:
            w.join(timeout=10)
        assert sum(w.ops for w in ws) > 100
        server = start(memfile)
        assert "restored" in server.log, server.log
        assert ("after a clean stop" in server.log) == (how == "graceful"), server.log
        result = check(server.port, ws)
        print(how, "round", round_, result)
        for k in totals:
            totals[k] += result[k]
        assert result["lost"] == 0 and result["resurrected"] == 0 and result["wrong"] == 0, result["problems"]
        live = sum(1 for m in models for v in m.values() if v is not None)
        assert int(stat(server, "restored_items")) == live
        assert stat(server, "restore_outcome") == "restored"
    print(how, "totals", totals)
    assert server.stop() == 0


def test_cas_flags_exptime_survive_and_cas_keeps_growing(memfile):
    server = start(memfile)
    c = Conn(server.port)
    for i in range(100):
        v = make_value("k%d" % i, i, i)
        assert c.cmd("set k%d %d %d %d" % (i, i, 1000 if i % 2 else 0, len(v)), v) == "STORED"
    before = {i: c.gets("k%d" % i) for i in range(100)}
    assert c.cmd("set short 0 2 1", "x") == "STORED"
    c.close()
    server.proc.send_signal(signal.SIGUSR1)
    assert server.proc.wait(timeout=20) == 0
    time.sleep(2.1)  # "short" expires while the server is down
    server = start(memfile)
    c = Conn(server.port)
    for i in range(100):
        assert c.gets("k%d" % i) == before[i]
    assert c.gets("short") is None
    # The TTL is absolute: what is left, not 1000 again.
    ttl = int(c.cmd("mg k1 t").split()[1][1:])
    assert 990 <= ttl <= 998, ttl
    assert c.cmd("set k0 0 0 1", "y") == "STORED"
    assert c.gets("k0")[2] > before[0][2]
    c.close()
    assert server.stop() == 0


def test_flush_all_with_delay_is_a_barrier_across_a_crash(memfile):
    server = start(memfile)
    c = Conn(server.port)
    for i in range(50):
        assert c.cmd("set k%d 0 0 1" % i, "v") == "STORED"
    assert c.cmd("flush_all 2") == "OK"
    c.close()
    server.proc.kill()
    server.proc.wait()
    time.sleep(2.5)  # the deadline passes while the server is down
    server = start(memfile)
    c = Conn(server.port)
    assert all(c.gets("k%d" % i) is None for i in range(50))
    assert c.cmd("set after 0 0 1", "w") == "STORED"
    c.close()
    server.proc.kill()
    server.proc.wait()
    server = start(memfile)  # the barrier is spent: later writes stay
    c = Conn(server.port)
    assert c.gets("after")[0] == "w"
    c.close()
    assert server.stop() == 0


def fill_and_stop(path, n, graceful):
    server = start(path)
    c = Conn(server.port)
    for i in range(n):
        v = make_value("k%d" % i, i, i % 120)
        assert c.cmd("set k%d 0 0 %d" % (i, len(v)), v) == "STORED"
    c.close()
    if graceful:
        server.proc.send_signal(signal.SIGUSR1)
        assert server.proc.wait(timeout=20) == 0
    else:
        server.proc.kill()
        server.proc.wait()


def served_values_are_sound(server, n):
    c = Conn(server.port)
    good = 0
    for i in range(n):
        got = c.gets("k%d" % i)
        if got:
            assert self_consistent("k%d" % i, got[0]), "corrupted value served for k%d: %r" % (i, got[0][:80])
            good += 1
    assert c.cmd("set fresh 0 0 1", "z") == "STORED"
    assert c.gets("fresh")[0] == "z"
    c.close()
    return good


def test_damaged_files_start_empty_or_partial_never_crash_or_serve_garbage(memfile):
    print("seed", SEED)
    rng = random.Random(SEED)
    n = 3000
    # Flipped bytes after a clean stop: a segment whose checksum fails is dropped.
    for trial in range(4):
        fill_and_stop(memfile, n, graceful=True)
        data = bytearray(open(memfile, "rb").read())
        used = [i for i in range(0, len(data), 7) if data[i]]
        for _ in range(rng.choice([1, 5, 50])):
            data[rng.choice(used)] ^= 1 << rng.randrange(8)
        open(memfile, "wb").write(data)
        server = start(memfile)
        good = served_values_are_sound(server, n)
        print("flip trial", trial, "served", good, "of", n)
        assert server.stop() == 0
    # Truncated, after a clean stop and after a crash.
    for graceful in (True, False):
        fill_and_stop(memfile, n, graceful)
        os.truncate(memfile, rng.randrange(os.path.getsize(memfile)))
        server = start(memfile)
        assert "starting empty (corrupt)" in server.log, server.log
        assert served_values_are_sound(server, n) == 0
        assert server.stop() == 0
    # Another layout version; then another -m.
    fill_and_stop(memfile, n, graceful=True)
    with open(memfile, "r+b") as f:
        f.seek(8)
        f.write(bytes([7]))
    server = start(memfile)
    assert re.search(r"starting empty \(incompatible_settings\): written by memory-file layout version 7", server.log)
    assert stat(server, "restore_outcome") == "incompatible_settings"
    assert server.stop() == 0
    server = Larder("-t", "2", "-m", "32", "-e", memfile)
    assert "starting empty (incompatible_settings): written with -m (bytes) 67108864" in server.log, server.log
    assert server.stop() == 0
