"""Starts the real larder binary on an ephemeral 127.0.0.1 port for the Python client tests."""
import os
import re
import select
import signal
import socket
import subprocess
import time

import pytest

from netutil import free_port  # noqa: F401  (tests import it from here)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def larder_binary():
    return os.environ.get("LARDER_BIN") or os.path.join(ROOT, ".build", "debug", "larder")


class Larder:
    def __init__(self, *args):
        env = {k: v for k, v in os.environ.items() if not k.startswith("LARDER_")}
        self.proc = subprocess.Popen(
            [larder_binary(), "-p", "0", "--metrics-port", "0",
             *(["-u", "nobody"] if os.getuid() == 0 and "-u" not in args else []), *args],
            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env)
        text = b""
        deadline = time.time() + 20
        while time.time() < deadline:
            r, _, _ = select.select([self.proc.stderr], [], [], 0.2)
            if r:
                chunk = os.read(self.proc.stderr.fileno(), 4096)
                if not chunk:
                    break
                text += chunk
                m = re.search(rb"listening on \S+:(\d+)", text)
                if m:
                    self.port = int(m.group(1))
                    self.log = text.decode(errors="replace")
                    return
        self.proc.kill()
        raise RuntimeError("larder did not start: %r" % text)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=10)


@pytest.fixture
def larder():
    server = Larder("-t", "2")
    yield server
    assert server.stop() == 0
