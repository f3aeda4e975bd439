"""Latency of the web page's answer: `python benchmarks/web_latency.py`.

Starts the page (app.py's) on a free local port and asks it, over HTTP with
Gradio's own client, for a number N times; prints the median and the spread, and
the same for `webapp.render` called directly (the model's share).
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--number", default="2026")
    p.add_argument("--styles", type=int, default=8)
    p.add_argument("--repeats", type=int, default=20)
    args = p.parse_args()
    from gradio_client import Client

    from gan import webapp
    from gan.digit_writer import DigitWriter

    writer = DigitWriter.load()
    folder = tempfile.mkdtemp()
    direct = []
    for i in range(args.repeats + 1):
        t = time.perf_counter()
        webapp.render(writer, args.number, args.styles, i, False, folder)
        direct.append(time.perf_counter() - t)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    page = webapp.build(writer, folder)
    page.launch(server_port=port, prevent_thread_lock=True, quiet=True)
    client = Client(f"http://127.0.0.1:{port}/", verbose=False)
    http = []
    for i in range(args.repeats + 1):
        t = time.perf_counter()
        client.predict(args.number, args.styles, i, False, None, None, webapp.READ_IT,
                       api_name="/write")
        http.append(time.perf_counter() - t)
    page.close()
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), platform.processor())
    print(f"{cpu}, {os.cpu_count()} cores; {args.number!r} x {args.styles} styles, "
          f"{args.repeats} requests after one warm-up")
    for name, times in (("render (model + PNG)", direct[1:]), ("HTTP round trip", http[1:])):
        ms = sorted(1000 * t for t in times)
        print(f"{name:22s} median {statistics.median(ms):6.1f} ms   min {ms[0]:6.1f}   "
              f"max {ms[-1]:6.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
