"""The operator kit in Config/: Grafana dashboard, systemd unit, twemproxy config."""
import json
import os
import re
import shutil
import subprocess
import urllib.request

from conftest import ROOT, Larder, free_port


def exported_families():
    mport = free_port()
    server = Larder("-t", "1", "--metrics-port", str(mport))
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % mport, timeout=5) as r:
            body = r.read().decode()
    finally:
        server.stop()
    names = set()
    for line in body.splitlines():
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            names.add(name)
            if kind == "histogram":
                names.update({name + "_bucket", name + "_sum", name + "_count"})
    return names


def test_grafana_dashboard_is_valid_and_uses_only_exported_metrics():
    with open(os.path.join(ROOT, "Config", "grafana-dashboard.json")) as f:
        dash = json.load(f)
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    assert len(dash["panels"]) >= 8
    used = set()
    for e in exprs:
        used.update(re.findall(r"\b((?:larder|process)_[a-z_]+)\b", e))
    exported = exported_families()
    missing = used - exported
    assert not missing, "dashboard uses metrics Larder does not export: %s" % sorted(missing)
    for needed in ["larder_commands_total", "larder_deletes_total", "larder_evictions_total",
                   "larder_command_duration_seconds_bucket", "larder_limit_bytes", "larder_connections"]:
        assert needed in used


def test_systemd_unit_verifies():
    unit = os.path.join(ROOT, "Config", "larder.service")
    text = open(unit).read()
    for opt in ["NoNewPrivileges=yes", "PrivateTmp=yes", "ProtectSystem=strict", "User=larder", "MemoryMax="]:
        assert opt in text
    if shutil.which("systemd-analyze"):
        out = subprocess.run(["systemd-analyze", "verify", unit], capture_output=True, text=True, timeout=60)
        # The binary path and user need not exist on a build machine; anything else is an error.
        problems = [l for l in (out.stdout + out.stderr).splitlines()
                    if l.strip() and "/usr/local/bin/larder" not in l and "larder.service" in l and "Command" not in l]
        assert not problems, problems


def test_twemproxy_config_parses():
    out = subprocess.run(["nutcracker", "-t", "-c", os.path.join(ROOT, "Config", "twemproxy.yml")],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr
