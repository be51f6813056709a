#!/usr/bin/env python3
"""The loop behind scripts/crash-restart: kill -9 (every fifth round SIGUSR1) at a random moment
under two writers, restart on the same file, check every key. Bounded by the given seconds."""
import os
import random
import signal
import sys
import threading
import time
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "python"))
from conftest import Larder  # noqa: E402
from restart_check import Writer, check  # noqa: E402


def main():
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 120
    seed = int(os.environ.get("RESTART_SEED", random.randrange(1 << 30)))
    print("seed", seed, flush=True)
    rng = random.Random(seed)
    path = "/dev/shm/larder-crash-%s" % uuid.uuid4().hex[:12]
    # The key space fits in -m 64 (2 x 3000 keys of under 2 KB), so no key is evicted and a
    # missing one is a lost write; overwrites and deletes still make compaction run.
    args = ("-t", "2", "-m", "64", "-e", path)
    models = [{}, {}]
    totals = dict(rounds=0, checked=0, lost=0, resurrected=0, wrong=0, in_flight_used=0)
    end = time.monotonic() + seconds
    server = Larder(*args)
    try:
        while time.monotonic() < end:
            stop = threading.Event()
            ws = [Writer(server.port, "w%d-" % i, 3000, rng.randrange(1 << 30), models[i], stop) for i in range(2)]
            for w in ws:
                w.start()
            time.sleep(rng.uniform(0.05, 1.5))
            graceful = totals["rounds"] % 5 == 4
            if graceful:
                server.proc.send_signal(signal.SIGUSR1)
                rc = server.proc.wait(timeout=30)
                assert rc == 0, rc
            else:
                server.proc.kill()
                server.proc.wait()
            stop.set()
            for w in ws:
                w.join(timeout=10)
            server = Larder(*args)
            r = check(server.port, ws)
            totals["rounds"] += 1
            for k in ("checked", "lost", "resurrected", "wrong", "in_flight_used"):
                totals[k] += r[k]
            print("round %d (%s, %d ops): %s" % (totals["rounds"], "SIGUSR1" if graceful else "SIGKILL",
                                                 sum(w.ops for w in ws),
                                                 {k: r[k] for k in ("checked", "lost", "resurrected", "wrong")}),
                  flush=True)
            if r["lost"] or r["resurrected"] or r["wrong"]:
                print("\n".join(r["problems"]))
                sys.exit(1)
    finally:
        server.proc.kill()
        server.proc.wait()
        if os.path.exists(path):
            os.unlink(path)
    print("totals:", totals)


if __name__ == "__main__":
    main()
