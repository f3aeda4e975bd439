"""The web page under load: `python benchmarks/web_load.py`.

Starts app.py on a free local port (its own process, as a user runs it), then
for 1, 4, 16 and 32 concurrent clients (Gradio's own client, one thread each)
sends requests of many shapes (numbers of 1 to 12 digits, 1 to 16
handwritings: every request shape the page could compile) and some hostile
values the widgets never send (a seed "abc" or null, handwritings "8", null
or [8], verify "false", a null number), and prints per level: requests, errors (a request that got no answer
or an unexpected one), p50 and p95 latency, requests per second, and the
server's resident memory (RSS) before and after. Linux (reads /proc).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# (NaN and infinity cannot be sent: JSON has no such numbers; tests/test_web.py
# gives them to the handler directly.)
HOSTILE = [("2026", 8, "abc", False), ("2026", 8, None, False),
           ("2026", "8", 0, False), ("2026", None, 0, False), ("2026", [8], 0, False),
           ("2026", 8, 0, "false"), (None, 8, 0, False)]


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return kb / 1024


def one_client(url: str, requests: int, seed: int, latencies: list[float],
               errors: list[str]) -> None:
    from gradio_client import Client
    client = Client(url, verbose=False)
    rng = random.Random(seed)
    for i in range(requests):
        hostile = i % 10 == 9
        if hostile:
            text, styles, s, verify = HOSTILE[rng.randrange(len(HOSTILE))]
        else:
            text = "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 12)))
            styles, s, verify = rng.randint(1, 16), rng.randrange(2**32), False
        t = time.perf_counter()
        try:
            _, _, status, _ = client.predict(text, styles, s, verify, None, None,
                                             "read it for me", api_name="/write")
            ok = ("⚠" in status) if hostile else (text in status)
            if not ok:
                errors.append(f"unexpected answer to {text!r}: {status[:80]}")
        except Exception as e:  # noqa: BLE001 - any failure counts as an error
            errors.append(f"{type(e).__name__}: {e}"[:120])
        latencies.append(time.perf_counter() - t)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", default="1,4,16,32")
    p.add_argument("--requests", type=int, default=160,
                   help="requests per level, shared by its clients")
    args = p.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/"
    tmp = tempfile.mkdtemp(prefix="web-load-")
    server = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "app.py"), "--port", str(port)],
        env=dict(os.environ, TMPDIR=tmp), stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            try:
                urllib.request.urlopen(url, timeout=2).close()
                break
            except OSError:
                if server.poll() is not None:
                    raise SystemExit(server.stderr.read())
                time.sleep(0.5)
        cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                    if line.startswith("model name")), platform.processor())
        print(f"{cpu}, {os.cpu_count()} cores; app.py at {url}; "
              f"{args.requests} requests per level, 1 in 10 hostile")
        print(f"{'clients':>7} {'requests':>8} {'errors':>6} {'p50 ms':>7} "
              f"{'p95 ms':>7} {'req/s':>6} {'RSS MB before':>13} {'after':>6}")
        start_rss = rss_mb(server.pid)
        for clients in [int(c) for c in args.clients.split(",")]:
            latencies: list[float] = []
            errors: list[str] = []
            before = rss_mb(server.pid)
            per = max(1, args.requests // clients)
            threads = [threading.Thread(target=one_client,
                                        args=(url, per, 1000 * clients + c, latencies,
                                              errors)) for c in range(clients)]
            t = time.perf_counter()
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            wall = time.perf_counter() - t
            ms = sorted(1000 * x for x in latencies)
            p95 = ms[min(len(ms) - 1, int(0.95 * len(ms)))]
            print(f"{clients:>7} {len(ms):>8} {len(errors):>6} "
                  f"{statistics.median(ms):>7.0f} {p95:>7.0f} {len(ms) / wall:>6.1f} "
                  f"{before:>13.0f} {rss_mb(server.pid):>6.0f}", flush=True)
            for e in errors[:3]:
                print("   ", e)
        print(f"RSS growth over all levels: {rss_mb(server.pid) - start_rss:.0f} MB")
    finally:
        server.terminate()
        server.wait(timeout=60)
    left = [os.path.join(d, f) for d, _, fs in os.walk(tmp) for f in fs]
    print(f"files left in the server's temp folder after it stopped: {len(left)}")
    stderr = server.stderr.read()
    print(f"tracebacks in the server log: {stderr.count('Traceback')}")
    if "Traceback" in stderr:
        start = stderr.index("Traceback")
        print(stderr[start:start + 3000])
    return 0


if __name__ == "__main__":
    sys.exit(main())
