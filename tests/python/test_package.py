"""The Debian package, end to end: scripts/package builds it (lintian must report no error),
`dpkg -i` installs it, /usr/bin/larder runs as the `larder` user under `env -i` with no Swift
toolchain on its library path and answers over a socket, and `dpkg -P` removes every file it
installed (the `larder` system user stays, as Debian policy advises).

Needs root (or passwordless sudo) for dpkg; skipped otherwise, and skipped when a larder
package is already installed on this machine (the test never replaces a real install)."""
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def as_root(cmd):
    return cmd if os.getuid() == 0 else ["sudo", "-n"] + cmd


def can_be_root():
    if os.getuid() == 0:
        return True
    return shutil.which("sudo") is not None and subprocess.run(
        ["sudo", "-n", "true"], capture_output=True).returncode == 0


def installed(pkg):
    out = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True)
    return out.returncode == 0 and "ok installed" in out.stdout


def start(argv):
    """Starts argv; returns (process, port) once it logs 'listening on ...:PORT'."""
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    text = b""
    deadline = time.time() + 20
    while time.time() < deadline:
        r, _, _ = select.select([proc.stderr], [], [], 0.2)
        if r:
            chunk = os.read(proc.stderr.fileno(), 4096)
            if not chunk:
                break
            text += chunk
            m = re.search(rb"listening on 127\.0\.0\.1:(\d+)", text)
            if m:
                return proc, int(m.group(1))
    proc.kill()
    raise AssertionError("packaged larder did not start: %r" % text)


def request(port, data, until):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(data)
        buf = b""
        while not buf.endswith(until):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
        return buf


@pytest.mark.skipif(not can_be_root(), reason="dpkg -i needs root or passwordless sudo")
def test_deb_installs_runs_as_larder_without_toolchain_and_purges_clean(tmp_path):
    if installed("larder"):
        pytest.skip("a larder package is installed on this machine; not replacing it")
    env = dict(os.environ, LARDER_PACKAGE_DIR=str(tmp_path))
    built = subprocess.run([os.path.join(ROOT, "scripts", "package")], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=900)
    assert built.returncode == 0, built.stdout + built.stderr
    deb = built.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r".*/larder_\d+\.\d+\.\d+_[a-z0-9]+\.deb", deb), deb
    assert not re.search(r"^E: ", built.stderr, re.M), built.stderr

    inst = subprocess.run(as_root(["dpkg", "-i", deb]), capture_output=True, text=True, timeout=120)
    try:
        assert inst.returncode == 0, inst.stdout + inst.stderr
        files = [f for f in subprocess.run(["dpkg-query", "-L", "larder"], capture_output=True,
                                           text=True, check=True).stdout.splitlines() if f.strip()]
        for f in ["/usr/bin/larder", "/usr/bin/larder-bench", "/etc/larder/larder.conf",
                  "/lib/systemd/system/larder.service", "/usr/share/man/man1/larder.1.gz",
                  "/usr/share/man/man1/larder-bench.1.gz", "/usr/share/doc/larder/copyright"]:
            assert f in files and os.path.exists(f), f
        conffiles = subprocess.run(["dpkg-query", "-W", "-f=${Conffiles}", "larder"],
                                   capture_output=True, text=True, check=True).stdout
        assert "/etc/larder/larder.conf" in conffiles
        unit = open("/lib/systemd/system/larder.service").read()
        assert "ExecStart=/usr/bin/larder --config /etc/larder/larder.conf" in unit
        assert "NoNewPrivileges=yes" in unit and "User=larder" in unit
        uid = int(subprocess.run(["id", "-u", "larder"], capture_output=True, text=True,
                                 check=True).stdout)
        assert uid != 0

        # No Swift toolchain anywhere: empty environment, a library path of the system's
        # directories only, and nothing from the toolchain in ldd's answer.
        libpath = "/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu:/lib:/usr/lib"
        ldd = subprocess.run(["env", "-i", "LD_LIBRARY_PATH=" + libpath, "/usr/bin/ldd",
                              "/usr/bin/larder"], capture_output=True, text=True, check=True).stdout
        assert "not found" not in ldd and "swift" not in ldd.lower(), ldd
        version = subprocess.run(["env", "-i", "/usr/bin/larder", "--version"],
                                 capture_output=True, text=True, check=True).stdout
        assert re.match(r"larder \d+\.\d+\.\d+ \(memcached text protocol 1\.6\.\d+\)", version), version
        assert version.split()[1] in deb

        # As the larder user (setpriv, before exec), with the packaged config file.
        argv = ["env", "-i", "LD_LIBRARY_PATH=" + libpath,
                "/usr/bin/setpriv", "--reuid=larder", "--regid=larder", "--clear-groups",
                "/usr/bin/larder", "--config", "/etc/larder/larder.conf", "-p", "0", "--metrics-port", "0"]
        if os.getuid() != 0:
            argv = ["sudo", "-n"] + argv
        proc, port = start(argv)
        try:
            pid = proc.pid if os.getuid() == 0 else int(subprocess.run(
                ["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()[0])
            status = open("/proc/%d/status" % pid).read()
            assert re.search(r"^Uid:\s+%d\s" % uid, status, re.M), status
            maps = open("/proc/%d/maps" % pid).read()
            assert "swift" not in maps.lower(), [l for l in maps.splitlines() if "swift" in l.lower()]
            assert request(port, b"set pkg 0 0 5\r\nhello\r\nget pkg\r\n", b"END\r\n") == \
                b"STORED\r\nVALUE pkg 0 5\r\nhello\r\nEND\r\n"
            assert request(port, b"version\r\n", b"\r\n").startswith(b"VERSION 1.6.")
            stats = request(port, b"stats\r\n", b"END\r\n")
            # -m 64 comes from /etc/larder/larder.conf.
            assert b"STAT limit_maxbytes 67108864\r\n" in stats, stats
        finally:
            subprocess.run(as_root(["kill", "-TERM", str(proc.pid)]))
            assert proc.wait(timeout=15) == 0
    finally:
        purge = subprocess.run(as_root(["dpkg", "-P", "larder"]), capture_output=True, text=True, timeout=120)
    assert purge.returncode == 0, purge.stdout + purge.stderr
    assert not installed("larder")
    # Files (and links to files) are gone; shared directories such as /usr/share/man stay.
    left = [f for f in files if os.path.lexists(f) and not os.path.isdir(f)]
    assert not left, left
    for d in ["/etc/larder", "/usr/share/doc/larder"]:
        assert not os.path.exists(d), d
