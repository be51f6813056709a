"""A writer that keeps a model of what the server acknowledged, and the check after a restart.

Used by tests/python/test_restart.py and scripts/crash-restart (no pytest here). Every value
names its key and carries a checksum, so a value no client wrote for that key (torn, stale
bytes, another key's value) is recognised wherever it turns up.
"""
import random
import socket
import threading
import zlib


def make_value(key, version, pad):
    body = "%s:%d:%s" % (key, version, "p" * pad)
    return "%s:%08x" % (body, zlib.crc32(body.encode()))


def self_consistent(key, value):
    """True if `value` is one a client could have written for `key` (set, or set + appends)."""
    parts = value.split("|")
    for part in parts:
        body, _, crc = part.rpartition(":")
        if not body.startswith(key + ":") or crc != "%08x" % zlib.crc32(body.encode()):
            return False
    return True


class Conn:
    """One text-protocol connection, request/response."""

    def __init__(self, port, timeout=5.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""

    def close(self):
        self.sock.close()

    def line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk
        l, _, self.buf = self.buf.partition(b"\r\n")
        return l.decode()

    def exact(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk
        d, self.buf = self.buf[:n], self.buf[n:]
        return d

    def cmd(self, text, data=None):
        payload = text.encode() + b"\r\n"
        if data is not None:
            payload += data.encode() + b"\r\n"
        self.sock.sendall(payload)
        return self.line()

    def gets(self, key):
        """(value, flags, cas) or None."""
        self.sock.sendall(("gets %s\r\n" % key).encode())
        l = self.line()
        if l == "END":
            return None
        _, _, flags, n, cas = l.split()
        v = self.exact(int(n) + 2)[:-2].decode()
        assert self.line() == "END"
        return v, int(flags), int(cas)


class Writer(threading.Thread):
    """Random sets, overwrites, deletes, appends (on `s` keys) and incr (on `n` keys) until the
    connection dies or `stop` is set. `model[key]` is the last acknowledged value (None:
    deleted or never written); `pending[key]` the value an operation in flight would leave."""

    def __init__(self, port, prefix, keys, seed, model, stop):
        super().__init__(daemon=True)
        self.port, self.prefix, self.keys = port, prefix, keys
        self.rng = random.Random(seed)
        self.model, self.stop = model, stop
        self.pending = {}
        self.ops = 0
        self.version = 0

    def run(self):
        try:
            c = Conn(self.port)
        except OSError:
            return
        try:
            while not self.stop.is_set():
                self.one(c)
                self.ops += 1
        except (OSError, ConnectionError, ValueError):
            pass
        finally:
            c.close()

    def one(self, c):
        r = self.rng.random()
        numeric = r < 0.1
        key = "%s%s%d" % (self.prefix, "n" if numeric else "s", self.rng.randrange(self.keys))
        old = self.model.get(key)
        self.version += 1
        if numeric:
            if old is None or r < 0.02:
                v = str(self.rng.randrange(1000))
                self.pending[key] = v
                assert c.cmd("set %s 0 0 %d" % (key, len(v)), v) == "STORED"
            else:
                self.pending[key] = None  # unknown until the reply: incr's result
                reply = c.cmd("incr %s 3" % key)
                v = reply if reply.isdigit() else None
                assert v is not None, reply
            self.model[key] = v
        elif r < 0.25:
            self.pending[key] = None
            reply = c.cmd("delete %s" % key)
            assert reply in ("DELETED", "NOT_FOUND"), reply
            self.model[key] = None
        elif r < 0.4 and old is not None and len(old) < 1500:
            part = make_value(key, self.version, self.rng.randrange(20))
            self.pending[key] = old + "|" + part
            reply = c.cmd("append %s 0 0 %d" % (key, len(part) + 1), "|" + part)
            assert reply == "STORED", reply
            self.model[key] = old + "|" + part
        else:
            v = make_value(key, self.version, self.rng.randrange(150))
            self.pending[key] = v
            exptime = 3600 if r > 0.9 else 0
            assert c.cmd("set %s %d %d %d" % (key, self.version % 7, exptime, len(v)), v) == "STORED"
            self.model[key] = v
        self.pending.pop(key, None)


def check(port, writers):
    """Reads every key any writer touched. Returns (checked, lost, resurrected, wrong,
    in_flight_used): lost = an acknowledged value missing; resurrected = a deleted key served;
    wrong = a value that is neither the last acknowledged one nor the one in flight."""
    c = Conn(port)
    checked = lost = resurrected = wrong = in_flight_used = 0
    problems = []
    for w in writers:
        for key, want in list(w.model.items()):
            got = c.gets(key)
            value = got[0] if got else None
            checked += 1
            allowed = {want}
            if key in w.pending:
                # The operation in flight at the stop: its result or the previous one. An incr
                # in flight may have produced any count; a delete in flight may have removed.
                p = w.pending[key]
                allowed |= {p, None}
                if p is None and want is not None and want.isdigit() and value is not None and value.isdigit():
                    allowed.add(value)
            if value in allowed:
                if value != want:
                    in_flight_used += 1
                    w.model[key] = value
                continue
            if value is None:
                lost += 1
            elif want is None:
                resurrected += 1
            else:
                wrong += 1
            if len(problems) < 10:
                corrupt = value is not None and not value.isdigit() and not self_consistent(key, value)
                problems.append("%s: got %r%s, acknowledged %r" % (
                    key, (value or "")[:60], " (CORRUPT)" if corrupt else "", (want or "")[:60]))
        w.pending.clear()
    c.close()
    return dict(checked=checked, lost=lost, resurrected=resurrected, wrong=wrong,
                in_flight_used=in_flight_used, problems=problems)
