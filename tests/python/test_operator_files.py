"""promtool checks: the live /metrics page and the operator files in Config/."""
import os
import socket
import subprocess
import urllib.request

from conftest import ROOT, Larder, free_port


def test_promtool_accepts_live_metrics():
    mport = free_port()
    server = Larder("-t", "2", "--metrics-port", str(mport))
    try:
        # Some traffic first so histograms and counters are non-trivial.
        s = socket.create_connection(("127.0.0.1", server.port))
        s.sendall(b"set a 0 0 1\r\nx\r\nget a\r\ndelete a\r\ndelete a\r\nincr n 1\r\nbogus\r\n")
        s.recv(4096)
        s.close()
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % mport, timeout=5) as r:
            assert r.status == 200
            assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            body = r.read()
        out = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True, timeout=30)
        assert out.returncode == 0, out.stdout + out.stderr
        assert out.stdout.strip() == b"" and out.stderr.strip() == b"", "promtool warned: %r" % (out.stdout + out.stderr)
        assert b'larder_deletes_total{outcome="deleted"} 1' in body
        assert b'larder_deletes_total{outcome="not_found"} 1' in body
    finally:
        assert server.stop() == 0


def test_promtool_accepts_config_and_rules():
    cfg = os.path.join(ROOT, "Config", "prometheus.yml")
    rules = os.path.join(ROOT, "Config", "larder-rules.yml")
    out = subprocess.run(["promtool", "check", "config", cfg], capture_output=True, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr
    out = subprocess.run(["promtool", "check", "rules", rules], capture_output=True, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr
    assert b"SUCCESS: 7 rules found" in out.stdout, out.stdout
