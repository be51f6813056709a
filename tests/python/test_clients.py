"""Real clients against the real server: pymemcache and netcat."""
import subprocess

from pymemcache.client.base import Client


def test_pymemcache_roundtrip(larder):
    c = Client(("127.0.0.1", larder.port), connect_timeout=5, timeout=5)
    items = {"key%d" % i: ("value-%d" % i).encode() * (i % 7 + 1) for i in range(300)}
    assert c.set_many(items) == []
    got = c.get_many(list(items) + ["absent"])
    assert got == items

    c.set("counter", "10")
    assert c.incr("counter", 5) == 15
    assert c.decr("counter", 100) == 0
    assert c.incr("missing", 1) is None

    value, cas = c.gets("key1")
    assert value == items["key1"]
    assert c.cas("key1", b"new", cas) is True
    assert c.cas("key1", b"newer", cas) is False
    assert c.get("key1") == b"new"

    assert c.delete("key2") is True
    assert c.delete("key2", noreply=False) is False
    assert c.get("key2") is None

    assert c.add("key3", b"x", noreply=False) is False
    assert c.replace("nothere", b"x", noreply=False) is False
    assert c.append("key4", b"-tail", noreply=False) is True
    assert c.get("key4").endswith(b"-tail")
    assert c.touch("key4", 100, noreply=False) is True

    big = bytes(range(256)) * 4000
    c.set("big", big)
    assert c.get("big") == big

    stats = c.stats()
    assert stats[b"curr_items"] >= 290
    assert stats[b"cmd_set"] >= 300
    c.close()


def test_netcat_session(larder):
    out = subprocess.run(
        ["nc", "-q", "1", "127.0.0.1", str(larder.port)],
        input=b"set a 0 0 1\r\nx\r\nget a\r\n", capture_output=True, timeout=10)
    assert out.stdout == b"STORED\r\nVALUE a 0 1\r\nx\r\nEND\r\n"


def test_pymemcache_admin_commands(larder):
    """pymemcache's own integration suite sends these (stats cachedump, cache_memlimit)."""
    c = Client(("127.0.0.1", larder.port), connect_timeout=5, timeout=5)
    c.set("dumped", b"abc", expire=0)
    dump = c.stats("cachedump", "1", "0")
    assert dump[b"dumped"] == b"[3 b; 0 s]"
    assert c.stats("cachedump", "2", "1") == {}
    assert c.cache_memlimit(32) is True
    assert c.stats()[b"limit_maxbytes"] == 32 * 1024 * 1024
    assert c.cache_memlimit(64) is True
    assert c.stats("settings")[b"maxbytes"] == 64 * 1024 * 1024
    c.close()


def test_meta_stampede_session_over_netcat(larder):
    """The README's stampede-protection session, byte for byte."""
    out = subprocess.run(
        ["nc", "-q", "1", "127.0.0.1", str(larder.port)],
        input=b"mg page N30 v t\r\nmg page N30 v t\r\nms page 5 T300\r\nhello\r\nmg page v t\r\n",
        capture_output=True, timeout=10)
    assert out.stdout == (b"VA 0 t30 W\r\n\r\nVA 0 t30 Z\r\n\r\nHD\r\nVA 5 t300\r\nhello\r\n")
