"""Authentication (-Y) and the guarded metrics endpoint with real clients: pymemcache (no
auth helper: the auth is a plain `set` of b"user password", sent with noreply=False because
the server answers it even when asked not to), libmemcached's tools (SASL only, so memcp's
files-over-one-connection is the way in), many connections at once, hostile input (a 1 MB
"password" block), an auth file of 10,000 users, and /metrics behind a bearer token or bcrypt
basic auth checked with curl, promtool and a real Prometheus scrape."""
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request

import pytest
from pymemcache.client.base import Client
from pymemcache.exceptions import MemcacheClientError

from conftest import ROOT, Larder, free_port

# bcrypt (cost 4, so tests are quick) of "scrape-pw", made with Python's crypt module.
SCRAPE_HASH = "$2b$04$719M4eR8fFNi5ZU/X/h32.R1ALSghOVS4XOfGHbKNXxerS0P58q1i"


def secret_file(text, name="auth"):
    """A credentials file Larder accepts: mode 0600, owned by the user it serves as."""
    d = tempfile.mkdtemp(prefix="larder-auth-")
    os.chmod(d, 0o755)
    path = os.path.join(d, name)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)
    if os.getuid() == 0:
        import pwd
        nobody = pwd.getpwnam("nobody")
        os.chown(path, nobody.pw_uid, nobody.pw_gid)
    return path


@pytest.fixture
def auth_larder():
    path = secret_file("alice:secret\nbob:pw2\n")
    server = Larder("-t", "2", "-Y", path)
    yield server
    assert server.stop() == 0
    shutil.rmtree(os.path.dirname(path))


def login(client, user, password):
    return client.set("auth", ("%s %s" % (user, password)).encode(), noreply=False)


def test_pymemcache_authenticates_then_works(auth_larder):
    c = Client(("127.0.0.1", auth_larder.port), connect_timeout=5, timeout=5)
    with pytest.raises(MemcacheClientError, match="unauthenticated"):
        c.get("k")
    with pytest.raises(MemcacheClientError, match="authentication failure"):
        login(c, "alice", "wrong")
    assert login(c, "alice", "secret") is True
    c.set("k", b"v", noreply=False)
    value, cas = c.gets("k")
    assert value == b"v"
    assert c.cas("k", b"w", cas) is True
    assert c.get("k") == b"w"
    assert c.delete("k", noreply=False) is True
    # Once authenticated, a set of "user password" is a plain set.
    assert login(c, "alice", "secret") is True and c.get("auth") == b"alice secret"
    stats = c.stats()
    assert stats[b"auth_cmds"] >= 2 and stats[b"auth_errors"] >= 1


def test_many_connections_authenticate_independently(auth_larder):
    clients = [Client(("127.0.0.1", auth_larder.port), connect_timeout=5, timeout=5) for _ in range(200)]
    for i, c in enumerate(clients):
        if i % 5 == 0:
            continue  # every fifth stays unauthenticated
        assert login(c, "bob" if i % 2 else "alice", "pw2" if i % 2 else "secret") is True
        c.set("k%d" % i, b"v%d" % i, noreply=False)
    for i, c in enumerate(clients):
        if i % 5 == 0:
            with pytest.raises(MemcacheClientError, match="unauthenticated"):
                c.get("k1")
        else:
            assert c.get("k%d" % i) == b"v%d" % i
    for c in clients:
        c.close()


def test_libmemcached_tools(auth_larder, tmp_path):
    """libmemcached's --username/--password are SASL over the binary protocol, which memcached's
    -Y does not use; memcp sends its files as sets on one connection, so a first file holding
    "user password" authenticates the rest. memcstat gets memcached's refusal."""
    if not shutil.which("memccp"):
        pytest.skip("libmemcached-tools is not installed")
    server = "--servers=127.0.0.1:%d" % auth_larder.port
    out = subprocess.run(["memcstat", server], capture_output=True, text=True, timeout=30)
    assert "unauthenticated" in out.stdout + out.stderr
    cred = tmp_path / "cred"
    cred.write_bytes(b"alice secret")
    data = tmp_path / "data.txt"
    data.write_bytes(b"hello from memcp\n")
    subprocess.run(["memccp", server, str(cred), str(data)], check=True, timeout=30)
    c = Client(("127.0.0.1", auth_larder.port), connect_timeout=5, timeout=5)
    assert login(c, "alice", "secret") is True
    assert c.get("data.txt") == b"hello from memcp\n"
    assert c.get("cred") is None  # the authenticating set stored nothing


def test_hostile_password_blocks(auth_larder):
    """A 1 MB 'password' block closes that connection at once (memcached closes too, once its
    16 KB buffer is full); thousands of failures on one connection are each answered; the
    server serves a well-behaved client throughout."""
    s = socket.create_connection(("127.0.0.1", auth_larder.port))
    s.settimeout(10)
    try:
        s.sendall(b"set a 0 0 1048576\r\n" + b"x" * (1 << 20) + b"\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass  # closed while we were still sending: that is the point
    try:
        assert s.recv(100) == b""
    except ConnectionResetError:
        pass
    s.close()
    s = socket.create_connection(("127.0.0.1", auth_larder.port))
    s.settimeout(10)
    s.sendall(b"set a 0 0 11\r\nalice wrong\r\n" * 5000)
    want = len(b"CLIENT_ERROR authentication failure\r\n") * 5000
    got = b""
    while len(got) < want:
        chunk = s.recv(65536)
        assert chunk
        got += chunk
    assert got == b"CLIENT_ERROR authentication failure\r\n" * 5000
    s.sendall(b"set a 0 0 12\r\nalice secret\r\nmn\r\n")
    assert s.recv(100) == b"STORED\r\nMN\r\n"
    s.close()


def test_ten_thousand_users():
    users = ["user%05d:pw-%d-%s" % (i, i * 7919, "x" * (i % 40)) for i in range(10000)]
    path = secret_file("\n".join(users) + "\n")
    server = Larder("-t", "1", "-Y", path)
    try:
        for i in [0, 1, 5000, 9999]:
            c = Client(("127.0.0.1", server.port), connect_timeout=5, timeout=5)
            name, password = users[i].split(":", 1)
            assert login(c, name, password) is True
            c.close()
        # 2,000 authentications on fresh connections: printed, not asserted (a dictionary
        # lookup; memcached would keep only the first 8 users of this file).
        start = time.time()
        for i in range(2000):
            c = socket.create_connection(("127.0.0.1", server.port))
            name, password = users[(i * 37) % 10000].split(":", 1)
            data = ("%s %s" % (name, password)).encode()
            c.sendall(b"set a 0 0 %d\r\n%s\r\n" % (len(data), data))
            assert c.recv(100) == b"STORED\r\n"
            c.close()
        print("2000 connect+authenticate with 10,000 users: %.3f s" % (time.time() - start))
    finally:
        assert server.stop() == 0
        shutil.rmtree(os.path.dirname(path))


# --- /metrics behind credentials ------------------------------------------------------------

def start_guarded():
    token = secret_file("t0k3n-for-prometheus\n", "token")
    users = secret_file("prometheus:%s\n" % SCRAPE_HASH, "users")
    port = free_port()
    server = Larder("-t", "1", "--metrics-port", str(port), "--metrics-token-file", token,
                    "--metrics-auth-file", users)
    server.metrics_port = port
    return server, [token, users]


def curl(*args):
    out = subprocess.run(["curl", "-s", "-D", "-", "-o", "/dev/null", *args], capture_output=True, text=True, timeout=30)
    return out.stdout


def test_curl_against_guarded_metrics():
    server, files = start_guarded()
    try:
        url = "http://127.0.0.1:%d/metrics" % server.metrics_port
        head = curl(url)
        assert head.startswith("HTTP/1.1 401")
        assert 'WWW-Authenticate: Basic realm="larder"' in head and 'WWW-Authenticate: Bearer realm="larder"' in head
        assert curl("-H", "Authorization: Bearer t0k3n-for-prometheus", url).startswith("HTTP/1.1 200")
        assert curl("-u", "prometheus:scrape-pw", url).startswith("HTTP/1.1 200")
        assert curl("-u", "prometheus:wrong", url).startswith("HTTP/1.1 401")
        assert curl("-H", "Authorization: Bearer wrong", url).startswith("HTTP/1.1 401")
    finally:
        assert server.stop() == 0
        for f in files:
            shutil.rmtree(os.path.dirname(f))


def example_config(token_file, password_file, target):
    """Config/prometheus.yml with its commented examples for a guarded endpoint switched on
    (lines starting `#~ `), pointed at test files and a test target."""
    with open(os.path.join(ROOT, "Config", "prometheus.yml")) as f:
        text = f.read()
    assert "#~ " in text, "Config/prometheus.yml lost its guarded-endpoint examples"
    text = re.sub(r"(?m)^(\s*)#~ ", r"\1", text)
    text = text.replace("/etc/prometheus/larder-metrics.token", token_file)
    text = text.replace("/etc/prometheus/larder-metrics.password", password_file)
    text = text.replace("127.0.0.1:9150", target)
    text = text.replace("larder-rules.yml", os.path.join(ROOT, "Config", "larder-rules.yml"))
    return text


@pytest.mark.skipif(not shutil.which("promtool"), reason="promtool is not installed")
def test_promtool_accepts_the_guarded_examples(tmp_path):
    token = tmp_path / "token"
    token.write_text("t0k3n-for-prometheus\n")
    password = tmp_path / "password"
    password.write_text("scrape-pw\n")
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(example_config(str(token), str(password), "127.0.0.1:9150"))
    out = subprocess.run(["promtool", "check", "config", str(cfg)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "job_name: larder-token" in cfg.read_text() and "basic_auth:" in cfg.read_text()


@pytest.mark.skipif(not shutil.which("prometheus"), reason="prometheus is not installed")
def test_prometheus_scrapes_the_guarded_endpoint(tmp_path):
    """A real Prometheus scrapes Larder with the shipped examples: both guarded jobs are up; a
    job with a wrong token is down. Bounded: 60 s at most."""
    server, files = start_guarded()
    prom = None
    try:
        token = tmp_path / "token"
        token.write_text("t0k3n-for-prometheus\n")
        password = tmp_path / "password"
        password.write_text("scrape-pw\n")
        bad = tmp_path / "bad-token"
        bad.write_text("not-the-token\n")
        text = example_config(str(token), str(password), "127.0.0.1:%d" % server.metrics_port)
        text = text.replace("scrape_interval: 15s", "scrape_interval: 1s")
        text += ("  - job_name: larder-wrong-token\n    authorization:\n      credentials_file: %s\n"
                 "    static_configs:\n      - targets: ['127.0.0.1:%d']\n" % (bad, server.metrics_port))
        cfg = tmp_path / "prometheus.yml"
        cfg.write_text(text)
        web = free_port()
        prom = subprocess.Popen(["prometheus", "--config.file=%s" % cfg, "--storage.tsdb.path=%s" % (tmp_path / "data"),
                                 "--web.listen-address=127.0.0.1:%d" % web],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        up = {}
        while time.time() < deadline:
            try:
                with urllib.request.urlopen("http://127.0.0.1:%d/api/v1/query?query=up" % web, timeout=5) as r:
                    result = json.load(r)["data"]["result"]
                up = {s["metric"]["job"]: s["value"][1] for s in result}
            except OSError:
                pass
            if up.get("larder-token") == "1" and up.get("larder-basic") == "1" and up.get("larder-wrong-token") == "0":
                break
            time.sleep(0.5)
        assert up.get("larder-token") == "1" and up.get("larder-basic") == "1", up
        assert up.get("larder-wrong-token") == "0", up
    finally:
        if prom:
            prom.terminate()
            prom.wait(timeout=20)
        assert server.stop() == 0
        for f in files:
            shutil.rmtree(os.path.dirname(f))


def test_larder_bench_authenticates(auth_larder):
    """larder-bench --auth user:password authenticates every connection before the load (so
    the -Y path can be measured); without it every request is refused and counted."""
    bench = os.path.join(ROOT, ".build", "release", "larder-bench")
    if not os.path.exists(bench):
        pytest.skip("release larder-bench not built (scripts/test builds it)")
    args = [bench, "--port", str(auth_larder.port), "--connections", "4", "--threads", "2", "--duration", "1",
            "--warmup", "0.2", "--keys", "1000", "--json"]
    ok = subprocess.run(args + ["--auth", "alice:secret", "--preload"], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    report = json.loads(ok.stdout.strip().splitlines()[-1])
    assert report["errors"] == 0 and report["ops_per_sec"] > 0
    refused = subprocess.run(args + ["--auth", "alice:wrong"], capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "authentication refused" in refused.stdout + refused.stderr
