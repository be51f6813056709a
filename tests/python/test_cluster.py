"""Several Larder instances behind twemproxy (nutcracker), started by scripts/cluster."""
import os
import signal
import socket
import subprocess
import tempfile
import time

import pytest
from pymemcache.client.base import Client

from conftest import ROOT, free_port

CLUSTER = os.path.join(ROOT, "scripts", "cluster")


def run_cluster(cmd, d, env_extra=None, n=None):
    env = dict(os.environ, CLUSTER_DIR=d)
    env.update(env_extra or {})
    args = [CLUSTER, cmd] + ([str(n)] if n else [])
    out = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def read(d, name):
    with open(os.path.join(d, name)) as f:
        return int(f.read().strip())


def items(port):
    c = Client(("127.0.0.1", port), connect_timeout=3, timeout=3)
    n = int(c.stats()[b"curr_items"])
    c.close()
    return n


def raw(port, data, until=b"END\r\n"):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(data)
    buf = b""
    while not buf.endswith(until):
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
    s.close()
    return buf


def raw_replies(port, data, reply, n, timeout=10):
    """Sends `data` and reads until `n` replies ending in `reply` (or anything else) came back."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(data)
    buf = b""
    while buf.count(b"\r\n") < n:
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
    s.close()
    return buf


@pytest.fixture
def cluster_dir():
    # The release binary is what scripts/cluster runs; point it at the one under test.
    d = tempfile.mkdtemp(prefix="larder-cluster-")
    yield d
    subprocess.run([CLUSTER, "down"], env=dict(os.environ, CLUSTER_DIR=d), capture_output=True, timeout=60)


def test_three_nodes_share_keys_and_survive_a_failure(cluster_dir):
    run_cluster("up", cluster_dir, n=3)
    proxy = read(cluster_dir, "proxy.port")
    c = Client(("127.0.0.1", proxy), connect_timeout=5, timeout=5)
    keys = ["user:%d" % i for i in range(3000)]
    for k in keys:
        assert c.set(k, k.encode(), noreply=False)
    got = c.get_many(keys[:500])
    assert got == {k: k.encode() for k in keys[:500]}
    for k in keys[500:]:
        assert c.get(k) == k.encode()
    # A multi-key get through the proxy, spoken raw.
    reply = raw(proxy, b"get user:1 user:2 nokey user:3\r\n")
    assert reply == b"VALUE user:1 0 6\r\nuser:1\r\nVALUE user:2 0 6\r\nuser:2\r\nVALUE user:3 0 6\r\nuser:3\r\nEND\r\n"
    # Each backend holds a fair share.
    shares = [items(read(cluster_dir, "larder-%d.port" % i)) for i in (1, 2, 3)]
    assert sum(shares) == 3000
    for s in shares:
        assert 0.20 * 3000 <= s <= 0.47 * 3000, shares
    # Stop node 2: with auto_eject_hosts the ring re-forms without it.
    before = {k: None for k in keys}
    os.kill(read(cluster_dir, "larder-2.pid"), signal.SIGTERM)
    time.sleep(0.5)
    hits = misses = errors = 0
    for k in keys:
        try:
            v = c.get(k)
        except Exception:
            errors += 1
            c.close()
            c = Client(("127.0.0.1", proxy), connect_timeout=5, timeout=5)
            continue
        if v == k.encode():
            hits += 1
        else:
            misses += 1
    # Keys of nodes 1 and 3 all still hit; node 2's keys now miss (they map to survivors).
    assert hits == shares[0] + shares[2], (hits, misses, errors, shares)
    assert misses + errors == shares[1]
    assert errors <= 2  # the request(s) that discovered the failure
    c.close()


def test_without_auto_eject_the_failed_nodes_keys_fail(cluster_dir):
    run_cluster("up", cluster_dir, env_extra={"CLUSTER_AUTO_EJECT": "false"}, n=3)
    proxy = read(cluster_dir, "proxy.port")
    keys = ["k%d" % i for i in range(600)]
    data = b"".join(b"set %s 0 0 1\r\nx\r\n" % k.encode() for k in keys)
    replies = raw_replies(proxy, data, b"STORED\r\n", len(keys))
    assert replies == b"STORED\r\n" * len(keys)
    share2 = items(read(cluster_dir, "larder-2.port"))
    assert share2 > 0
    os.kill(read(cluster_dir, "larder-2.pid"), signal.SIGTERM)
    time.sleep(0.5)
    ok = failed = 0
    for k in keys:
        r = raw(proxy, b"get %s\r\n" % k.encode(), until=b"\r\n")
        if r.startswith(b"VALUE") or r == b"END\r\n":
            ok += 1
        else:
            failed += 1
            assert r.startswith(b"SERVER_ERROR"), r
    assert failed == share2 and ok == len(keys) - share2


def test_adding_a_fourth_node_moves_about_a_quarter(cluster_dir):
    run_cluster("up", cluster_dir, n=4)
    # Build a 3-node proxy config from the same first three backends to compare rings.
    ports = [read(cluster_dir, "larder-%d.port" % i) for i in (1, 2, 3, 4)]
    d3 = tempfile.mkdtemp(prefix="larder-ring3-")
    cfg3 = os.path.join(d3, "ring3.yml")
    p3 = free_port()
    with open(cfg3, "w") as f:
        f.write("r3:\n  listen: 127.0.0.1:%d\n  hash: fnv1a_64\n  distribution: ketama\n  timeout: 400\n  servers:\n" % p3)
        for i, p in enumerate(ports[:3]):
            f.write("    - 127.0.0.1:%d:1 larder-%d\n" % (p, i + 1))
    proc = subprocess.Popen(["nutcracker", "-c", cfg3, "-s", str(free_port()), "-a", "127.0.0.1", "-o", os.path.join(d3, "log")])
    try:
        wait(p3)
        n = 4000
        c3 = Client(("127.0.0.1", p3), connect_timeout=5, timeout=5)
        for i in range(n):
            assert c3.set("item:%d" % i, b"v", noreply=False)
        # Through the 4-node proxy, the keys the ring moved to node 4 miss.
        c4 = Client(("127.0.0.1", read(cluster_dir, "proxy.port")), connect_timeout=5, timeout=5)
        moved = sum(1 for i in range(n) if c4.get("item:%d" % i) is None)
        fraction = moved / n
        print("fraction of keys moved by adding a 4th node: %.3f" % fraction)
        assert 0.15 <= fraction <= 0.35, fraction
        assert items(ports[3]) == 0  # node 4 got nothing from the 3-node writes
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def wait(port):
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("nothing on %d" % port)
