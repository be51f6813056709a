"""TLS (-Z) with real clients: openssl s_client, pymemcache over an ssl.SSLContext, raw ssl
sockets; mutual TLS; hostile and broken clients failing only their own connection; notls:
listeners; certificate reload; configurations refused at start."""
import os
import re
import select
import shutil
import signal
import socket
import ssl
import subprocess
import time

import pytest
from pymemcache.client.base import Client

from conftest import Larder, larder_binary
from netutil import free_port
from tlsutil import Certs


@pytest.fixture(scope="module")
def certs():
    c = Certs()
    yield c
    c.remove()


@pytest.fixture
def tls_server(certs):
    server = Larder("-t", "2", *certs.server_args("ssl_handshake_timeout=2"))
    yield server
    assert server.stop() == 0


def tls_socket(port, ctx, timeout=5):
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return ctx.wrap_socket(raw, server_hostname="localhost")


def read_until(sock, suffix, timeout=5):
    data = b""
    deadline = time.time() + timeout
    while not data.endswith(suffix):
        assert time.time() < deadline, "timed out; got %r" % data[-200:]
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def stats(port, ctx):
    s = tls_socket(port, ctx)
    s.sendall(b"stats\r\n")
    text = read_until(s, b"END\r\n").decode()
    s.close()
    return dict(re.findall(r"STAT (\S+) (\S+)", text))


def still_served(port, ctx, key=b"alive"):
    """A fresh TLS client can still store and read (the server was not blocked or broken)."""
    c = Client(("localhost", port), tls_context=ctx, connect_timeout=5, timeout=5)
    c.set(key, b"yes")
    assert c.get(key) == b"yes"
    c.close()


def test_s_client_session(tls_server, certs):
    script = b"set greeting 5 0 5\r\nhello\r\nget greeting\r\nversion\r\nquit\r\n"
    p = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{tls_server.port}", "-quiet",
                        "-verify_return_error", "-CAfile", certs.path("ca.crt"), "-verify_hostname", "localhost"],
                       input=script, capture_output=True, timeout=20)
    assert b"STORED\r\nVALUE greeting 5 5\r\nhello\r\nEND\r\nVERSION " in p.stdout, p.stdout + p.stderr


def test_s_client_reports_tls12_minimum(tls_server, certs):
    # TLS 1.1 is refused by default (TLS 1.2 minimum); TLS 1.2 and 1.3 are served.
    for flag, ok in (("-tls1_2", True), ("-tls1_3", True), ("-tls1_1", False)):
        p = subprocess.run(["openssl", "s_client", "-ign_eof", "-connect", f"127.0.0.1:{tls_server.port}", flag,
                            "-CAfile", certs.path("ca.crt")], input=b"version\r\nquit\r\n",
                           capture_output=True, timeout=20)
        assert (b"VERSION " in p.stdout) == ok, (flag, p.stdout[-300:], p.stderr[-300:])


def test_pymemcache_set_get_cas_delete(tls_server, certs):
    c = Client(("localhost", tls_server.port), tls_context=certs.client_context(), timeout=5)
    assert c.set(b"k", b"v1")
    assert c.get(b"k") == b"v1"
    value, cas = c.gets(b"k")
    assert value == b"v1"
    assert c.cas(b"k", b"v2", cas)
    assert not c.cas(b"k", b"v3", cas)  # stale cas: EXISTS
    assert c.get(b"k") == b"v2"
    big = os.urandom(300_000)  # spans many TLS records both ways
    assert c.set(b"big", big)
    assert c.get(b"big") == big
    many = {b"m%d" % i: b"x" * (i * 37 % 5000) for i in range(200)}
    c.set_many(many)
    assert c.get_many(list(many)) == many
    assert c.delete(b"k")
    assert c.get(b"k") is None
    c.close()


def test_pipelined_batch_with_large_values(tls_server, certs):
    """A pipelined batch of small and large replies over one TLS session comes back whole and
    in order (the reply gathering and the partial-write path)."""
    s = tls_socket(tls_server.port, certs.client_context())
    values = [os.urandom(n) for n in (10, 20_000, 5, 70_000, 1)]
    req = b"".join(b"set p%d 0 0 %d\r\n%s\r\n" % (i, len(v), v) for i, v in enumerate(values))
    s.sendall(req)
    assert read_until(s, b"STORED\r\n" * len(values)) == b"STORED\r\n" * len(values)
    req = b"".join(b"get p%d\r\n" % i for i in range(len(values))) * 20
    s.sendall(req)
    want = b"".join(b"VALUE p%d 0 %d\r\n%s\r\nEND\r\n" % (i, len(v), v) for i, v in enumerate(values)) * 20
    assert read_until(s, want[-200:], timeout=10) == want
    s.close()


def test_notls_listener_serves_plain_beside_tls(certs):
    plain_port = free_port()
    server = Larder("-t", "2", "-l", f"127.0.0.1,notls:127.0.0.1:{plain_port}", *certs.server_args())
    try:
        p = socket.create_connection(("127.0.0.1", plain_port), timeout=5)
        p.sendall(b"set shared 0 0 3\r\nabc\r\n")
        assert read_until(p, b"\r\n") == b"STORED\r\n"
        t = tls_socket(server.port, certs.client_context())
        t.sendall(b"get shared\r\n")
        assert read_until(t, b"END\r\n") == b"VALUE shared 0 3\r\nabc\r\nEND\r\n"
        # A TLS handshake on the plain listener fails (it answers in plain text).
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            tls_socket(plain_port, certs.client_context(), timeout=3)
        p.sendall(b"get shared\r\n")
        assert read_until(p, b"END\r\n") == b"VALUE shared 0 3\r\nabc\r\nEND\r\n"
    finally:
        assert server.stop() == 0


def test_hostile_clients_fail_only_their_own_connection(tls_server, certs):
    ctx = certs.client_context()
    good = tls_socket(tls_server.port, ctx)
    good.sendall(b"set g 0 0 2\r\nok\r\n")
    assert read_until(good, b"\r\n") == b"STORED\r\n"
    port = tls_server.port

    # Plain text on the TLS port: the handshake fails, the connection closes, nothing answered.
    p = socket.create_connection(("127.0.0.1", port), timeout=5)
    p.sendall(b"get g\r\n")
    data = b""
    while True:
        chunk = p.recv(4096)
        if not chunk:
            break
        data += chunk
    assert b"VALUE" not in data
    p.close()

    # Garbage instead of a ClientHello.
    g = socket.create_connection(("127.0.0.1", port), timeout=5)
    g.sendall(os.urandom(3000))
    g.settimeout(5)
    try:
        while g.recv(4096):
            pass
    except ConnectionResetError:
        pass
    g.close()

    # Many handshakes that stop halfway: a partial ClientHello record header, then nothing.
    stalled = []
    for _ in range(40):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
        stalled.append(s)
    # Meanwhile the good client and new clients are served at once.
    t0 = time.time()
    good.sendall(b"get g\r\n")
    assert read_until(good, b"END\r\n") == b"VALUE g 0 2\r\nok\r\nEND\r\n"
    still_served(port, ctx)
    assert time.time() - t0 < 1.5
    # The stalled ones are closed by the handshake timeout (2 s here).
    deadline = time.time() + 10
    for s in stalled:
        s.settimeout(max(0.1, deadline - time.time()))
        try:
            assert s.recv(100) == b""
        except ConnectionResetError:
            pass
        s.close()
    assert time.time() < deadline
    st = stats(port, ctx)
    assert int(st["ssl_handshake_errors"]) >= 42
    good.sendall(b"get g\r\n")
    assert read_until(good, b"END\r\n") == b"VALUE g 0 2\r\nok\r\nEND\r\n"
    good.close()


def test_tls_client_on_plain_port_fails_alone(larder, certs):
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        tls_socket(larder.port, certs.client_context(), timeout=3)
    s = socket.create_connection(("127.0.0.1", larder.port), timeout=5)
    s.sendall(b"version\r\n")
    assert read_until(s, b"\r\n").startswith(b"VERSION ")


@pytest.mark.parametrize("mode", [2, 3])
def test_mutual_tls_required(certs, mode):
    server = Larder("-t", "2", *certs.server_args(f"ssl_ca_cert={certs.path('ca.crt')}", f"ssl_verify_mode={mode}"))
    try:
        port = server.port
        # A client certificate signed by ssl_ca_cert: served.
        still_served(port, certs.client_context("client"))
        # No certificate, or one from another CA: refused (TLS 1.3 reports it at the first read).
        for ctx in (certs.client_context(), certs.client_context("stranger")):
            with pytest.raises((ssl.SSLError, ConnectionError)):
                s = tls_socket(port, ctx)
                s.sendall(b"version\r\n")
                if not s.recv(100):
                    raise ConnectionError("closed")
        still_served(port, certs.client_context("client"))
    finally:
        assert server.stop() == 0


def test_mutual_tls_requested(certs):
    server = Larder("-t", "2", *certs.server_args(f"ssl_ca_cert={certs.path('ca.crt')}", "ssl_verify_mode=1"))
    try:
        still_served(server.port, certs.client_context())          # none: allowed
        still_served(server.port, certs.client_context("client"))  # good one: allowed
        with pytest.raises((ssl.SSLError, ConnectionError)):       # bad one: refused
            s = tls_socket(server.port, certs.client_context("stranger"))
            s.sendall(b"version\r\n")
            if not s.recv(100):
                raise ConnectionError("closed")
    finally:
        assert server.stop() == 0


def serial_seen(port, ctx):
    s = tls_socket(port, ctx)
    serial = s.getpeercert()["serialNumber"]
    s.close()
    return serial


@pytest.mark.parametrize("how", ["refresh_certs", "SIGHUP"])
def test_certificate_reload_keeps_connections(how):
    certs = Certs()
    server = Larder("-t", "2", *certs.server_args())
    try:
        ctx = certs.client_context()
        old = serial_seen(server.port, ctx)
        kept = tls_socket(server.port, ctx)
        kept.sendall(b"set r 0 0 1\r\n1\r\n")
        assert read_until(kept, b"\r\n") == b"STORED\r\n"
        # A new server certificate from the same CA, written over the old files.
        from tlsutil import make_cert
        make_cert(certs.dir, "server", "ca", "localhost", "DNS:localhost,IP:127.0.0.1")
        if os.getuid() == 0:
            for n in ("server.crt", "server.key"):
                os.chown(certs.path(n), 65534, -1)
        if how == "refresh_certs":
            kept.sendall(b"refresh_certs\r\n")
            assert read_until(kept, b"\r\n") == b"OK\r\n"
        else:
            server.proc.send_signal(signal.SIGHUP)
        deadline = time.time() + 10
        new = serial_seen(server.port, ctx)
        while new == old and time.time() < deadline:
            time.sleep(0.05)
            new = serial_seen(server.port, ctx)
        assert new != old
        # The connection opened before the reload goes on.
        kept.sendall(b"get r\r\n")
        assert read_until(kept, b"END\r\n") == b"VALUE r 0 1\r\n1\r\nEND\r\n"
        # A broken file is not taken: the old certificate stays and the reply says why.
        with open(certs.path("server.key"), "w") as f:
            f.write("not a key\n")
        kept.sendall(b"refresh_certs\r\n")
        reply = read_until(kept, b"\r\n")
        assert reply.startswith(b"Error loading the certificates") and b"ssl_key" in reply, reply
        assert serial_seen(server.port, ctx) == new
        kept.close()
    finally:
        assert server.stop() == 0
        certs.remove()


def test_refresh_certs_without_tls(larder):
    s = socket.create_connection(("127.0.0.1", larder.port), timeout=5)
    s.sendall(b"refresh_certs\r\n")
    assert read_until(s, b"\r\n") == b"Error TLS not enabled\r\n"


def refused(args, env=None):
    p = subprocess.run([larder_binary(), "-p", "0", "--metrics-port", "0",
                        *(["-u", "nobody"] if os.getuid() == 0 else []), *args],
                       capture_output=True, timeout=20, env=env)
    return p.returncode, p.stderr.decode()


def test_refused_configurations(certs, tmp_path):
    d = str(tmp_path)
    crt, key = certs.path("server.crt"), certs.path("server.key")
    # A private key readable by others: refused, saying how to fix it.
    open_key = os.path.join(d, "open.key")
    shutil.copy(key, open_key)
    os.chmod(open_key, 0o644)
    rc, err = refused(["-Z", "-o", f"ssl_chain_cert={crt},ssl_key={open_key}"])
    assert rc == 64 and "ssl_key" in err and f"chmod 600 {open_key}" in err, err
    os.chmod(open_key, 0o640)
    rc, err = refused(["-Z", "-o", f"ssl_chain_cert={crt},ssl_key={open_key}"])
    assert rc == 64 and "readable by group or others" in err, err
    # Missing files, each naming its setting.
    rc, err = refused(["-Z", "-o", f"ssl_chain_cert={d}/missing.crt,ssl_key={key}"])
    assert rc == 64 and "ssl_chain_cert" in err and "No such file" in err, err
    rc, err = refused(["-Z", "-o", f"ssl_chain_cert={crt},ssl_key={d}/missing.key"])
    assert rc == 64 and "ssl_key" in err, err
    # A key that does not match the certificate.
    rc, err = refused(["-Z", "-o", f"ssl_chain_cert={crt},ssl_key={certs.path('client.key')}"])
    assert rc == 64 and "does not match" in err, err
    # Not PEM at all.
    rc, err = refused(["-Z", "-o", f"ssl_chain_cert={certs.path('server.csr')},ssl_key={key}"])
    assert rc == 64 and "ssl_chain_cert" in err, err
    # Bad values and combinations.
    rc, err = refused([*certs.server_args("ssl_verify_mode=4")])
    assert rc == 64 and "ssl-verify-mode" in err, err
    rc, err = refused([*certs.server_args("ssl_verify_mode=2")])
    assert rc == 64 and "ssl_verify_mode" in err and "ssl_ca_cert" in err, err
    rc, err = refused([*certs.server_args("ssl_min_version=tlsv1.1")])
    assert rc == 64 and "ssl-min-version" in err, err
    rc, err = refused([*certs.server_args("ssl_ciphers=NOSUCHCIPHER")])
    assert rc == 64 and "ssl_ciphers" in err, err
    rc, err = refused(["-Z"])
    assert rc == 64 and "ssl_chain_cert" in err, err
    rc, err = refused(["-o", "ssl_nope=1"])
    assert rc == 64 and "unknown -o option 'ssl_nope'" in err, err


def test_tls_from_config_file_and_environment(certs, tmp_path):
    conf = tmp_path / "larder.conf"
    conf.write_text(f"-Z\n-o ssl_chain_cert={certs.path('server.crt')}\n"
                    f"-o ssl_key={certs.path('server.key')},ssl_min_version=tlsv1.3\n")
    server = Larder("-t", "1", "--config", str(conf))
    try:
        ctx = certs.client_context()
        s = tls_socket(server.port, ctx)
        assert s.version() == "TLSv1.3"
        s.close()
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        with pytest.raises(ssl.SSLError):
            tls_socket(server.port, ctx)
    finally:
        assert server.stop() == 0
    # The environment, overridden by a flag (flag > environment > file).
    env = {**os.environ, "LARDER_ENABLE_SSL": "true", "LARDER_SSL_CHAIN_CERT": certs.path("server.crt"),
           "LARDER_SSL_KEY": certs.path("server.key"), "LARDER_SSL_VERIFY_MODE": "2"}
    rc, err = refused([], env=env)
    assert rc == 64 and "ssl_ca_cert" in err, err


def test_metrics_over_https(certs):
    mport = free_port()
    server = Larder("-t", "1", *certs.server_args(f"ssl_ca_cert={certs.path('ca.crt')}", "ssl_verify_mode=2"),
                    "--metrics-port", str(mport), "--metrics-tls")
    try:
        still_served(server.port, certs.client_context("client"))
        url = f"https://localhost:{mport}/metrics"
        # The same certificate; no client certificate needed for the scrape. Ten scrapes: a
        # request arriving with the handshake's last message once hung half of them.
        for _ in range(10):
            p = subprocess.run(["curl", "-sS", "--max-time", "10", "--cacert", certs.path("ca.crt"), url],
                               capture_output=True, timeout=20)
            assert p.returncode == 0, p.stderr
            assert re.search(rb'larder_tls_handshakes_total\{result="ok"\} [1-9]', p.stdout), p.stdout[-500:]
        # Plain HTTP to it gets no metrics; an unknown CA is refused by curl.
        p = subprocess.run(["curl", "-sS", "--max-time", "5", f"http://127.0.0.1:{mport}/metrics"],
                           capture_output=True, timeout=20)
        assert b"larder_" not in p.stdout
        p = subprocess.run(["curl", "-sS", "--max-time", "5", "--cacert", certs.path("otherca.crt"), url],
                           capture_output=True, timeout=20)
        assert p.returncode != 0
    finally:
        assert server.stop() == 0


def test_tls_connections_are_charged_to_the_client_budget(tls_server, certs):
    """What OpenSSL holds per connection counts against --client-memory: 20 TLS connections
    raise client_memory by at least 20 x 40 KB (TLSContext.perConnectionBytes) over the
    plain per-connection charge, and give it back when they close."""
    ctx = certs.client_context()
    before = int(stats(tls_server.port, ctx)["client_memory"])
    conns = [tls_socket(tls_server.port, ctx) for _ in range(20)]
    for c in conns:
        c.sendall(b"version\r\n")
        assert read_until(c, b"\r\n").startswith(b"VERSION ")
    during = int(stats(tls_server.port, ctx)["client_memory"])
    assert during - before >= 20 * (40 * 1024 + 16 * 1024 + 3 * 1024), (before, during)
    for c in conns:
        c.close()
    deadline = time.time() + 10
    while int(stats(tls_server.port, ctx)["client_memory"]) > before and time.time() < deadline:
        time.sleep(0.05)
    assert int(stats(tls_server.port, ctx)["client_memory"]) <= before
    st = stats(tls_server.port, ctx)
    assert st["ssl_handshakes"] and int(st["ssl_handshakes"]) >= 22


def test_stats_settings_show_tls(tls_server, certs):
    s = tls_socket(tls_server.port, certs.client_context())
    s.sendall(b"stats settings\r\n")
    text = read_until(s, b"END\r\n").decode()
    assert "STAT ssl_enabled yes\r\n" in text and "STAT ssl_min_version tlsv1.2\r\n" in text
    assert f"STAT ssl_chain_cert {certs.path('server.crt')}\r\n" in text


def test_watch_is_refused_over_tls(certs):
    """`watch` hands the raw socket to the watcher thread, which writes plain text: over TLS
    that would corrupt the session, so it is refused there and works on a notls: listener."""
    plain_port = free_port()
    server = Larder("-t", "1", "-l", f"127.0.0.1,notls:127.0.0.1:{plain_port}", *certs.server_args())
    try:
        t = tls_socket(server.port, certs.client_context())
        t.sendall(b"watch\r\n")
        assert read_until(t, b"\r\n") == b"ERROR watch is not available over TLS; use a notls: listener\r\n"
        t.sendall(b"version\r\n")  # the session goes on
        assert read_until(t, b"\r\n").startswith(b"VERSION ")
        p = socket.create_connection(("127.0.0.1", plain_port), timeout=5)
        p.sendall(b"watch\r\n")
        assert read_until(p, b"\r\n") == b"OK\r\n"
    finally:
        assert server.stop() == 0


def test_auth_over_tls(certs):
    """-Y over -Z: the same refusals and the same STORED as in plain text, with pymemcache over
    an SSLContext once authenticated."""
    from test_auth import secret_file
    path = secret_file("alice:pw-over-tls\n")
    server = Larder("-t", "1", *certs.server_args(), "-Y", path)
    try:
        t = tls_socket(server.port, certs.client_context())
        t.sendall(b"get k\r\n")
        assert read_until(t, b"\r\n") == b"CLIENT_ERROR unauthenticated\r\n"
        t.sendall(b"set a 0 0 11\r\nalice wrong\r\n")
        assert read_until(t, b"\r\n") == b"CLIENT_ERROR authentication failure\r\n"
        t.sendall(b"set a 0 0 17\r\nalice pw-over-tls\r\nset k 0 0 2\r\nok\r\nget k\r\n")
        assert read_until(t, b"END\r\n") == b"STORED\r\nSTORED\r\nVALUE k 0 2\r\nok\r\nEND\r\n"
        c = Client(("localhost", server.port), tls_context=certs.client_context(), timeout=5)
        c.set("auth", b"alice pw-over-tls", noreply=False)
        assert c.get("k") == b"ok"
        c.close()
        # Four attempts (wrong, right, pymemcache, the stats connection), one failed.
        assert stats_after_auth(server.port, certs) == ("4", "1")
    finally:
        assert server.stop() == 0


def stats_after_auth(port, certs):
    s = tls_socket(port, certs.client_context())
    s.sendall(b"set a 0 0 17\r\nalice pw-over-tls\r\nstats\r\n")
    text = read_until(s, b"END\r\n").decode()
    s.close()
    st = dict(re.findall(r"STAT (\S+) (\S+)", text))
    return st.get("auth_cmds"), st.get("auth_errors")
