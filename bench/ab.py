#!/usr/bin/env python3
"""Quick A/B of eddy builds against `wasmtime serve`, for tuning: not recorded anywhere.

Every round measures each eddy binary, then `wasmtime serve` in each variant, with wrk at
each concurrency; rounds alternate so a slow minute hits all alike. Prints every run and
the median over rounds, with the server's CPU per request (from /proc/PID/stat).

  PYTHONPATH=bench WASMTIME_BIN=~/.cache/eddy-bench/wasmtime-48.0.8/bin/wasmtime \
  AB_EDDY_BINS=/tmp/eddy-a,/tmp/eddy-b AB_WASMTIME_VARIANTS=";-O pooling-pagemap-scan=n" \
  python3 bench/ab.py

Environment: AB_GUEST (rust | python | js), AB_CONNS (64), AB_ROUNDS (3), AB_EDDY_BINS (the
release build), AB_REUSE=1 (deploy with `--reuse`), AB_EDDY_CONFIG (node TOML, default: the
harness's per-guest config), AB_WASMTIME_VARIANTS (extra `wasmtime serve` options,
`;`-separated; empty string for none), BENCH_WRK_DURATION_S, BENCH_WRK_SCHED.
"""

import os
import statistics
import tempfile
from pathlib import Path

import bench as b

GUEST = os.environ.get("AB_GUEST", "rust")
CONNS = [int(c) for c in os.environ.get("AB_CONNS", "64").split(",")]
ROUNDS = int(os.environ.get("AB_ROUNDS", "3"))
EDDY_BINS = [Path(p) for p in os.environ.get("AB_EDDY_BINS", str(b.EDDY)).split(",")]
EDDY_CONFIG = os.environ.get("AB_EDDY_CONFIG", b.EDDY_CONFIGS[GUEST]["eddy"][0])
VARIANTS = os.environ.get("AB_WASMTIME_VARIANTS", "").split(";")
DEPLOY_CONFIG = b.REUSE if os.environ.get("AB_REUSE") == "1" else {}


def run(results, name, pid, url):
    for c in CONNS:
        cpu_before = b.cpu_seconds(pid)
        r = b.wrk(url, c)
        requests = r["rps"] * (b.WRK_DURATION_S + b.WRK_WARMUP_S)
        r["cpu_us"] = (b.cpu_seconds(pid) - cpu_before) * 1e6 / max(requests, 1)
        results.setdefault((name, c), []).append(r)
        print(f"{name:32} c={c:3}: {r['rps']:8.0f} req/s  p99 {r['p99_ms']:7.2f} ms  "
              f"cpu/req {r['cpu_us']:5.0f} us", flush=True)


def main():
    component = b.GUESTS / b.GUEST_FILES[GUEST]
    results = {}
    base_options = list(b.WASMTIME_OPTIONS[GUEST])
    try:
        with tempfile.TemporaryDirectory(prefix="eddy-ab-") as tmp:
            for round_ in range(ROUNDS):
                for i, binary in enumerate(EDDY_BINS):
                    b.EDDY = binary
                    node = b.Node(Path(tmp) / f"{round_}-{i}", EDDY_CONFIG).start()
                    node.deploy("hello", component.read_bytes(), DEPLOY_CONFIG)
                    run(results, f"eddy {binary}", node.proc.pid, node.url("/hello"))
                    node.stop()
                for extra in VARIANTS:
                    b.WASMTIME_OPTIONS[GUEST] = base_options + extra.split()
                    proc, url = b.wasmtime_serve(GUEST, component)
                    run(results, f"wasmtime {extra}".strip(), proc.pid, url)
                    b.stop(proc)
    finally:
        b.stop_all()
    print(f"median of {ROUNDS} rounds:")
    for (name, c), runs in results.items():
        print(f"  {name:32} c={c:3}: {statistics.median(r['rps'] for r in runs):8.0f} req/s  "
              f"p99 {statistics.median(r['p99_ms'] for r in runs):7.2f} ms  "
              f"cpu/req {statistics.median(r['cpu_us'] for r in runs):5.0f} us  "
              f"rounds {[round(r['rps']) for r in runs]}")


if __name__ == "__main__":
    main()
