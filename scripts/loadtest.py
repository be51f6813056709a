"""Side-by-side load test of Larder and memcached with larder-bench (see scripts/loadtest)."""
import argparse
import datetime
import json
import os
import socket
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "python"))
from netutil import free_port  # noqa: E402
from tlsutil import Certs  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LARDER = os.path.join(ROOT, ".build", "release", "larder")
BENCH = os.path.join(ROOT, ".build", "release", "larder-bench")
THREADS = 2

# name, server memory MB, larder-bench arguments
WORKLOADS = [
    ("A", "100 B values, 100k keys, 1:10, 100 conns, pipeline 1", 1024,
     ["--value-size", "100", "--keys", "100000", "--ratio", "1:10", "--connections", "100", "--pipeline", "1"]),
    ("B", "as A with pipeline 16", 1024,
     ["--value-size", "100", "--keys", "100000", "--ratio", "1:10", "--connections", "100", "--pipeline", "16"]),
    ("C", "100 KB values, 2000 keys, 1:10, 50 conns", 1024,
     ["--value-size", "102400", "--keys", "2000", "--ratio", "1:10", "--connections", "50", "--pipeline", "1"]),
    ("D", "Zipf 0.99 over 1M keys, -m 32 (evicting), 1:10, 100 conns", 32,
     ["--value-size", "100", "--keys", "1000000", "--distribution", "zipf", "--ratio", "1:10", "--connections", "100", "--pipeline", "1"]),
]


def wait_port(port, proc, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("server exited early")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("server did not start on port %d" % port)


def start(server, memory, certs=None):
    """With `certs`, both servers serve TLS (-Z) with the same certificate and key."""
    port = free_port()
    if server == "larder":
        cmd = [LARDER, "-p", str(port), "-t", str(THREADS), "-m", str(memory), "--metrics-port", "0"]
        if os.getuid() == 0:
            cmd += ["-u", "nobody"]
    else:
        cmd = ["memcached", "-p", str(port), "-l", "127.0.0.1", "-U", "0", "-t", str(THREADS), "-m", str(memory)]
        if os.getuid() == 0:
            cmd += ["-u", "nobody"]
    if certs:
        cmd += certs.server_args()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, proc)
    return proc, port


def bench(port, args, duration, warmup, preload, label, certs=None):
    cmd = [BENCH, "--port", str(port), "--threads", str(THREADS), "--duration", str(duration),
           "--warmup", str(warmup), "--json", "--label", label] + args
    if certs:
        cmd += ["--tls", "--tls-ca", certs.path("ca.crt")]
    if preload:
        cmd.append("--preload")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + warmup + 300)
    lines = [l for l in out.stdout.splitlines() if l.startswith("{")]
    if not lines:
        raise RuntimeError("larder-bench gave no result: %s %s" % (out.stdout, out.stderr))
    r = json.loads(lines[-1])
    r["exit"] = out.returncode
    return r


def svg_chart(results, path):
    """Two grouped bar charts: throughput and p99, Larder beside memcached, per workload."""
    names = [w[0] for w in WORKLOADS if w[0] in results]
    width, height, pad = 760, 300, 50
    out = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">' % (width, height * 2 + 40)]
    colors = {"larder": "#2b7bb9", "memcached": "#e08a2b"}
    for row, (metric, title, unit) in enumerate([("ops_per_sec", "Throughput (ops/s, higher is better)", ""),
                                                 ("p99_us", "p99 latency (us, lower is better)", "")]):
        top = row * (height + 20) + 20
        vmax = max(results[n][s][metric] for n in names for s in ("larder", "memcached")) or 1
        out.append('<text x="%d" y="%d" font-weight="bold">%s</text>' % (pad, top, title))
        base = top + height - 30
        out.append('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#333"/>' % (pad, base, width - 20, base))
        group = (width - pad - 40) / max(1, len(names))
        for i, n in enumerate(names):
            for j, s in enumerate(("larder", "memcached")):
                v = results[n][s][metric]
                h = (height - 70) * v / vmax
                x = pad + 10 + i * group + j * (group / 2 - 5)
                out.append('<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"/>' % (x, base - h, group / 2 - 15, h, colors[s]))
                out.append('<text x="%.1f" y="%.1f" font-size="10">%s</text>' % (x, base - h - 3, "{:,.0f}".format(v)))
            out.append('<text x="%.1f" y="%d">%s</text>' % (pad + 10 + i * group + group / 2 - 20, base + 15, n))
    ly = height * 2 + 30
    for k, (s, c) in enumerate(colors.items()):
        out.append('<rect x="%d" y="%d" width="12" height="12" fill="%s"/><text x="%d" y="%d">%s</text>' % (pad + k * 120, ly, c, pad + k * 120 + 16, ly + 11, s))
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="short runs; checks only that everything works")
    ap.add_argument("--duration", type=float, default=None)
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--only", default="", help="workload letters to run, e.g. AB")
    ap.add_argument("--no-record", action="store_true", help="do not append to docs/BENCHMARKS.md")
    ap.add_argument("--tls", action="store_true",
                    help="both servers with -Z and one test certificate, larder-bench --tls (default --only AB)")
    a = ap.parse_args()
    certs = Certs() if a.tls else None
    if a.tls and not a.only:
        a.only = "AB"
    try:
        run(a, certs)
    finally:
        if certs:
            certs.remove()


def run(a, certs):
    duration = a.duration or (1.0 if a.quick else 8.0)
    warmup = 0.3 if a.quick else 1.0
    rounds = a.rounds or (1 if a.quick else 2)
    record = not (a.quick or a.no_record)
    results = {}
    errors = 0
    for name, desc, memory, args in WORKLOADS:
        if a.only and name not in a.only:
            continue
        if a.quick and name == "D":
            args = [x if x != "1000000" else "100000" for x in args]
        runs = {"larder": [], "memcached": []}
        for r in range(rounds):
            for server in ("larder", "memcached"):
                proc, port = start(server, memory, certs)
                try:
                    res = bench(port, args, duration, warmup, True, "%s-%s" % (name, server), certs)
                finally:
                    proc.terminate()
                    proc.wait(timeout=10)
                errors += res["errors"] + (1 if res["exit"] not in (0,) else 0)
                runs[server].append(res)
                print("  %s %-9s round %d: %12s ops/s  p99 %9s us  errors %d" % (
                    name, server, r + 1, "{:,.0f}".format(res["ops_per_sec"]), "{:,.0f}".format(res["p99_us"]), res["errors"]), file=sys.stderr)
        results[name] = {s: {"ops_per_sec": statistics.median(x["ops_per_sec"] for x in v),
                             "p99_us": statistics.median(x["p99_us"] for x in v),
                             "runs": v} for s, v in runs.items()}
        results[name]["description"] = desc
    print()
    print("| workload | Larder ops/s | memcached ops/s | ratio | Larder p99 us | memcached p99 us |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, desc, _, _ in WORKLOADS:
        if name not in results:
            continue
        l, m = results[name]["larder"], results[name]["memcached"]
        ratio = l["ops_per_sec"] / m["ops_per_sec"] if m["ops_per_sec"] else 0
        results[name]["ratio"] = ratio
        print("| %s: %s | %s | %s | %.2fx | %.0f | %.0f |" % (name, desc, "{:,.0f}".format(l["ops_per_sec"]),
              "{:,.0f}".format(m["ops_per_sec"]), ratio, l["p99_us"], m["p99_us"]))
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    os.makedirs(os.path.join(ROOT, "bench-results"), exist_ok=True)
    jpath = os.path.join(ROOT, "bench-results", "loadtest-%s.json" % stamp)
    spath = os.path.join(ROOT, "bench-results", "loadtest-%s.svg" % stamp)
    with open(jpath, "w") as f:
        json.dump({"time": stamp, "duration": duration, "rounds": rounds, "threads": THREADS, "results": results}, f, indent=1)
    svg_chart(results, spath)
    print("\nresults: %s\nchart:   %s" % (jpath, spath))
    if record:
        row = "| %s | %s | %s |\n" % (datetime.date.today().isoformat(), "scripts/loadtest%s (%gs x %d rounds)" % (" --tls" if certs else "", duration, rounds),
                                      " | ".join("%.2fx (p99 %.0f / %.0f us)" % (results[n]["ratio"], results[n]["larder"]["p99_us"], results[n]["memcached"]["p99_us"])
                                                 if n in results else "-" for n in "ABCD"))
        path = os.path.join(ROOT, "docs", "BENCHMARKS.md")
        with open(path) as f:
            text = f.read()
        marker = "<!-- loadtest tls rows -->" if certs else "<!-- loadtest rows -->"
        if marker not in text:
            title = "TLS load test history (`scripts/loadtest --tls`: both servers -Z, same certificate)" if certs \
                else "Load test history (`scripts/loadtest`)"
            text += "\n## " + title + "\nThroughput ratio Larder / memcached (`-t 2`, same memory), with p99 Larder / memcached.\n\n| date | command | A | B | C | D |\n| --- | --- | --- | --- | --- | --- |\n" + marker + "\n"
        text = text.replace(marker, row.rstrip("\n") + "\n" + marker)
        with open(path, "w") as f:
            f.write(text)
        print("appended a row to docs/BENCHMARKS.md")
    if errors:
        print("FAILED: %d errors" % errors, file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
