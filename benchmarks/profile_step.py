"""A timeline of the train step on XLA:CPU: which ops run, on which threads.

    python benchmarks/profile_step.py --steps 3

Traces `--steps` synced steps of the real train step (batch 100, synthetic data,
as `throughput.py`) with `jax.profiler`, writes the trace (open
`perfetto_trace.json.gz` in https://ui.perfetto.dev, or the folder in
TensorBoard's profile tab), and reads it back:

- per step, how long 0, 1 or 2 (all) of XLA's executor threads were busy. A
  thread counts as busy inside a named op (a fusion, a copy) and inside a task
  the thread pool runs for another thread's op: YNNPACK splits one convolution
  over the pool, and those tasks carry no op name, so counting named ops alone
  makes a thread helping a convolution look idle;
- the process's CPU time over wall time, and its page faults per step;
- the ops by source layer (the `op_name` XLA keeps from the JAX program): total
  ms per step, the mean number of threads busy while they ran, and the ms during
  which nothing else ran (the part no other work overlapped).
"""

from __future__ import annotations

import argparse
import bisect
import collections
import glob
import gzip
import json
import os
import re
import resource
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from gan.config import Config  # noqa: E402
from gan.data import NUM_CLASSES  # noqa: E402
from gan.training import create_train_states, train_step_on_data  # noqa: E402

POOL_THREAD = "XLAEigen"           # XLA:CPU's intra-op pool (jax 0.10 names)
TASK_START = "ThreadpoolListener::StartRegion"
TASK_STOP = "ThreadpoolListener::StopRegion"
# Trace events that are bookkeeping, not work: markers and wrappers of ops.
NOT_OPS = ("ThreadpoolListener", "end:", "ThunkExecutor", "SlinkyThreadPool")


def trace_steps(config: Config, steps: int, trace_dir: str) -> dict:
    """Runs `steps` traced, synced train steps; returns CPU and fault counts."""
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.integers(0, 256, (1000, 28, 28), dtype=np.uint8))
    labels = jnp.asarray(rng.integers(0, NUM_CLASSES, 1000).astype(np.int32))
    g, d = create_train_states(config, jax.random.key(0))
    key = jax.random.key(1)
    step = train_step_on_data.lower(g, d, images, labels, key,
                                    batch_size=config.batch_size).compile()
    for _ in range(2):                                        # warm-up
        g, d, m = step(g, d, images, labels, key)
    jax.block_until_ready(m)
    usage0, cpu0, t0 = resource.getrusage(resource.RUSAGE_SELF), os.times(), time.time()
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
        for _ in range(steps):
            g, d, m = step(g, d, images, labels, key)
            jax.block_until_ready(m)
    usage1, cpu1, t1 = resource.getrusage(resource.RUSAGE_SELF), os.times(), time.time()
    cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    return {"hlo": step.as_text(), "cpu_per_wall": cpu / (t1 - t0),
            "system_share": (cpu1.system - cpu0.system) / cpu,
            "page_faults_per_step": (usage1.ru_minflt - usage0.ru_minflt) / steps}


def source_ops(hlo: str) -> dict[str, str]:
    """HLO instruction name -> the JAX op it came from (`op_name` metadata),
    without the `jit(...)/` prefix. A fusion without metadata of its own takes
    that of the first op in its fused computation, or else names the op and
    shape it computes."""
    bodies, current = {}, None
    for line in hlo.splitlines():                 # computation name -> its text
        head = re.match(r"^(?:ENTRY )?%?([\w.-]+) .*\{$", line)
        if head:
            current = bodies.setdefault(head.group(1), [])
        elif current is not None:
            current.append(line)
    first_op = {}
    for name, lines in bodies.items():
        m = re.search(r'op_name="([^"]*)"', "\n".join(lines))
        root = re.search(r"ROOT %?([a-z-]+)[\w.-]* = (\w+\[[\d,]*\])", "\n".join(lines))
        if m:
            first_op[name] = m.group(1)
        elif root:   # no metadata (XLA-made ops): say what and which shape
            first_op[name] = f"({root.group(1)} to {root.group(2)})"
    ops = {}
    for m in re.finditer(r"^\s*(?:ROOT )?%?([\w.-]+) = (.*)$", hlo, re.M):
        own = re.search(r'op_name="([^"]*)"', m.group(2))
        calls = re.search(r"calls=%?([\w.-]+)", m.group(2))
        name = own.group(1) if own else first_op.get(calls.group(1)) if calls else None
        if name:
            ops[m.group(1)] = re.sub(r"^jit\([^)]*\)/", "", name)
    return ops


def busy_spans(events: list[dict], threads: set) -> dict[int, list]:
    """Per pool thread: (start, end, op name or None for a pool task), in us."""
    spans, task_start = collections.defaultdict(list), {}
    for e in events:
        tid, name = e["tid"], e["name"]
        if tid not in threads:
            continue
        if name == TASK_START:
            task_start[tid] = e["ts"]
        elif name == TASK_STOP and tid in task_start:
            spans[tid].append((task_start.pop(tid), e["ts"], None))
        elif not name.startswith(NOT_OPS):
            spans[tid].append((e["ts"], e["ts"] + e["dur"], name))
    return spans


def busy_counts(spans: dict[int, list], lo: float, hi: float, with_tasks: bool
                ) -> tuple[list[float], list[int]]:
    """Breakpoints and, between them, how many threads are busy, for the spans
    that start in [lo, hi); the first breakpoint is `lo` (none busy yet)."""
    edges = []
    for tid, items in spans.items():
        for s, e, name in items:
            if lo <= s < hi and (with_tasks or name is not None):
                edges += [(s, 1, tid), (e, -1, tid)]
    edges.sort(key=lambda p: (p[0], -p[1]))
    depth, times, counts = collections.Counter(), [lo], [0]
    for t, delta, tid in edges:
        depth[tid] += delta
        times.append(t)
        counts.append(sum(1 for v in depth.values() if v > 0))
    return times, counts


def time_at(times, counts, n: int, lo: float, hi: float) -> float:
    """us within [lo, hi) during which exactly n threads were busy."""
    total = 0.0
    for i in range(len(times) - 1):
        a, b = max(times[i], lo), min(times[i + 1], hi)
        if b > a and counts[i] == n:
            total += b - a
    return total


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--trace-dir", default="/tmp/cdcgan-trace")
    p.add_argument("--ema-decay", type=float, default=0.0,
                   help="as train.py (0: the seed's step, which the peers run)")
    p.add_argument("--top", type=int, default=12, help="rows in the op table")
    args = p.parse_args()
    info = trace_steps(Config(ema_decay=args.ema_decay), args.steps, args.trace_dir)
    path = sorted(glob.glob(os.path.join(args.trace_dir, "**", "perfetto_trace.json.gz"),
                            recursive=True), key=os.path.getmtime)[-1]
    events = json.load(gzip.open(path))["traceEvents"]
    names = {e["tid"]: e["args"]["name"] for e in events
             if e.get("ph") == "M" and e.get("name") == "thread_name"}
    pool = {tid for tid, n in names.items() if POOL_THREAD in n}
    if not pool:
        sys.exit(f"profile_step.py: no {POOL_THREAD} threads in the trace (another "
                 "JAX version names them otherwise?)")
    events = sorted((e for e in events if e.get("ph") == "X"), key=lambda e: e["ts"])
    calls = []                                  # outermost calls of the step
    for e in events:
        if e["name"].startswith("PjitFunction") and (
                not calls or e["ts"] > calls[-1]["ts"] + calls[-1]["dur"]):
            calls.append(e)
    if not calls:
        sys.exit("profile_step.py: no PjitFunction calls in the trace")
    bounds = [c["ts"] for c in calls] + [events[-1]["ts"] + events[-1]["dur"]]
    spans = busy_spans(events, pool)
    print(f"trace: {path}\n{len(pool)} pool threads; CPU time / wall "
          f"{info['cpu_per_wall']:.2f} (system {info['system_share']:.0%}); "
          f"{info['page_faults_per_step']:.0f} page faults per step")
    for i in range(len(calls)):
        # A step: from its call until its last op or task ends (dispatch included).
        lo = bounds[i]
        end = busy_counts(spans, lo, bounds[i + 1], True)[0][-1]
        wall = end - lo
        for with_tasks in (True, False):
            times, counts = busy_counts(spans, lo, bounds[i + 1], with_tasks)
            times, counts = times + [end], counts + [0]     # idle to the end
            busy = ", ".join(f"{n} busy {time_at(times, counts, n, lo, end) / 1e3:.0f} ms"
                             for n in range(len(pool) + 1))
            what = "ops and pool tasks" if with_tasks else "named ops only"
            print(f"step {i + 1}: {wall / 1e3:.0f} ms; {what}: {busy}")
    # Ops by source layer, over all traced steps.
    times, counts = busy_counts(spans, bounds[0], bounds[-1], True)
    src = source_ops(info["hlo"])
    total, weighted, alone = (collections.defaultdict(float) for _ in range(3))
    for items in spans.values():
        for s, e, name in items:
            if name is None:
                continue
            key = src.get(name, re.sub(r"\.\d+$", "", name))
            key = re.sub(r"/(conv_general_dilated|dot_general)$", r" \1", key)
            i = max(bisect.bisect_right(times, s) - 1, 0)
            while i < len(times) - 1 and times[i] < e:
                a, b = max(times[i], s), min(times[i + 1], e)
                if b > a:
                    weighted[key] += counts[i] * (b - a)
                    alone[key] += (b - a) if counts[i] == 1 else 0.0
                i += 1
            total[key] += e - s
    n = len(calls)
    print("\n| op (source) | ms per step | threads busy | ms alone |\n|---|---|---|---|")
    for key in sorted(total, key=total.get, reverse=True)[:args.top]:
        print(f"| {key} | {total[key] / n / 1e3:.0f} | "
              f"{weighted[key] / max(total[key], 1e-9):.2f} | {alone[key] / n / 1e3:.0f} |")
    rest = sorted(total, key=total.get, reverse=True)[args.top:]
    print(f"| {len(rest)} others | {sum(total[k] for k in rest) / n / 1e3:.0f} | | "
          f"{sum(alone[k] for k in rest) / n / 1e3:.0f} |")


if __name__ == "__main__":
    main()
