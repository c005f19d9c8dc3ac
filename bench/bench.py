#!/usr/bin/env python3
"""eddy's benchmark: eddy side by side with `wasmtime serve` and a native hyper server.

Run through bench/run, which builds everything and installs the reference tools first.
Every process this script starts is stopped by its PID when it ends, however it ends.
Results are printed and prepended to bench/RESULTS.md (older results stay below).
"""

import asyncio
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EDDY = Path(os.environ.get("EDDY_BIN", ROOT / "target/release/eddy"))
# BENCH_BASELINE_BIN=<another eddy>: the cold-start section runs that binary and EDDY_BIN in
# turn, every repetition (order alternating), and reports them side by side, so drift on a
# shared machine falls on both alike.
BASELINE = Path(os.environ["BENCH_BASELINE_BIN"]) if os.environ.get("BENCH_BASELINE_BIN") else None
NATIVE = ROOT / "target/release/native-hello"
GUEST_CALL = ROOT / "target/release/guest-call"
GUESTS = ROOT / "target/guests"
WASMTIME = Path(os.environ["WASMTIME_BIN"])
RESULTS = ROOT / "bench/RESULTS.md"

# Load: wrk's duration per measurement, and the concurrency levels compared.
WRK_DURATION_S = int(os.environ.get("BENCH_WRK_DURATION_S", "5"))
WRK_WARMUP_S = 1
CONCURRENCY = [1, 64, 256]
# The scheduling policy wrk runs under. wrk shares the two cores with the server it loads,
# so by default (`other`) each response that wakes a wrk thread also lets it preempt the
# server's worker, which remote clients never do; on this harness's VMs a server paying more
# CPU per request pays superlinearly for it (eddy: 0.4 preemptions per request against
# native hyper's 0.03, on 2026-11-27). `batch` (SCHED_BATCH, `chrt --batch 0`, no privilege
# needed) keeps wrk from preempting on wake-up; it still gets its full share of the CPU.
# Every server is measured under the same policy; RESULTS.md says which.
# Each policy: (the command wrk runs under, how RESULTS.md describes it).
WRK_POLICIES = {
    "batch": (["chrt", "--batch", "0"],
              " under SCHED_BATCH (`chrt --batch 0`: it does not preempt the server when a response wakes it)"),
    "other": ([], ", default scheduling (SCHED_OTHER)"),
}
WRK_SCHED = os.environ.get("BENCH_WRK_SCHED", "batch")
if WRK_SCHED not in WRK_POLICIES:
    sys.exit(f"bench: BENCH_WRK_SCHED must be one of {', '.join(WRK_POLICIES)}, not {WRK_SCHED!r}")
WRK_PREFIX, WRK_POLICY_TEXT = WRK_POLICIES[WRK_SCHED]
# Cold starts: repetitions per measurement (medians and p99 are taken over them).
COLD_REPETITIONS = int(os.environ.get("BENCH_COLD_REPETITIONS", "20"))
# Cost of waiting: concurrent requests, each waiting this long on the host clock.
WAITERS = 1000
WAIT_MS = 1000
# The window (seconds after the requests were sent) in which all are waiting: the node's
# CPU use there is the cost of waiting itself.
STEADY_WAIT_FROM_S = 0.45
STEADY_WAIT_TO_S = 0.95
# Density: idle functions deployed on one node.
DENSITY_FUNCTIONS = int(os.environ.get("BENCH_DENSITY_FUNCTIONS", "1000"))
# Bounded waits for processes to come up.
READY_TIMEOUT_S = 60
# `wasmtime serve`'s best configuration we know, per guest: TOOLCHAIN.md's pooling
# settings (8 MiB memory, 1 MiB tables, 2 MiB async stacks kept resident; wasmtime takes
# bytes), plus what this harness measured on 2026-11-23: `PAGEMAP_SCAN` resets raise the
# Rust hello's requests/s by about 8% but halve the Python hello's, and interpreters
# touch more memory per instance, so Python keeps 64 MiB resident without page-map scans.
MIB = 1024 * 1024
WASMTIME_OPTIONS = {
    "rust": ["-O", "pooling-allocator=y",
             "-O", f"pooling-memory-keep-resident={8 * MIB}",
             "-O", f"pooling-table-keep-resident={1 * MIB}",
             "-O", f"pooling-async-stack-keep-resident={2 * MIB}",
             "-O", "pooling-pagemap-scan=y"],
    "python": ["-O", "pooling-allocator=y",
               "-O", f"pooling-memory-keep-resident={64 * MIB}",
               "-O", f"pooling-table-keep-resident={1 * MIB}",
               "-O", f"pooling-async-stack-keep-resident={2 * MIB}"],
}
# The JS hello (componentize-js, also an interpreter) runs like the Python one.
WASMTIME_OPTIONS["js"] = WASMTIME_OPTIONS["python"]
# eddy's node configuration per guest: its defaults for Rust; for Python both its
# defaults and the settings a node serving only Python would use (docs/limits.md).
# Each entry: (node config, deploy config). `--reuse` keeps instances warm (issue 4): the
# interpreters start once per instance instead of once per request.
INTERPRETER_NODE = f"[pooling]\nmemory_keep_resident_bytes = {64 * MIB}\npagemap_scan = false\n"
REUSE = {"reuse": True}
EDDY_CONFIGS = {
    "rust": {"eddy": ("", {}), "eddy --reuse": ("", REUSE)},
    "python": {
        "eddy": (INTERPRETER_NODE, {}),
        "eddy (defaults)": ("", {}),
        "eddy --reuse": (INTERPRETER_NODE, REUSE),
    },
    "js": {
        "eddy": (INTERPRETER_NODE, {}),
        "eddy --reuse": (INTERPRETER_NODE, REUSE),
    },
}
# A path just under the node's default request_target_bytes_max (8 KiB): routing looks only
# at a path's first ROUTE_BYTES_MAX bytes, so it should cost what a short one does. Measured
# on the Rust hello, eddy's defaults, as its own row.
LONG_PATH = "/hello" + "/x" * ((8000 - len("/hello")) // 2)
LONG_PATH_SERVER = f"eddy ({len(LONG_PATH):,}-byte path)"
# Throughput rounds: every server is measured once per round, rounds interleaved, and the
# median round is reported, so a slow minute on a shared machine hits all servers alike.
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))

PROCESSES = []


def log(message):
    print(f"bench: {message}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd, **kwargs):
    """Start a process that is stopped by PID when the benchmark ends."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kwargs)
    PROCESSES.append(proc)
    return proc


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc in PROCESSES:
        PROCESSES.remove(proc)


def stop_all(*_):
    for proc in list(PROCESSES):
        stop(proc)


def wait_port(port, proc):
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited during start-up")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.01)
    raise RuntimeError(f"nothing listened on port {port} within {READY_TIMEOUT_S}s")


# The benchmark's own TLS nodes use a self-signed certificate: not verified here.
UNVERIFIED_TLS = ssl.create_default_context()
UNVERIFIED_TLS.check_hostname = False
UNVERIFIED_TLS.verify_mode = ssl.CERT_NONE


def get(url, timeout=30):
    context = UNVERIFIED_TLS if url.startswith("https:") else None
    with urllib.request.urlopen(url, timeout=timeout, context=context) as response:
        return response.status, response.read()


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime + stime
    return ticks / os.sysconf("SC_CLK_TCK")


def percentile(values, p):
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def with_custom_section(component: bytes, payload: bytes) -> bytes:
    """The same component with a custom section appended: a new digest, so a new compile."""
    name = b"eddy-bench"
    body = leb128(len(name)) + name + payload
    return component + b"\x00" + leb128(len(body)) + body


def leb128(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


class Node:
    """An `eddy serve` process on its own state directory."""

    def __init__(self, state_dir, config="", eddy=EDDY, token_file=None, tls=False):
        self.eddy = eddy
        self.scheme = "https" if tls else "http"
        self.token_file = token_file
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.state_dir / "node.toml"
        self.config_path.write_text(config)
        self.proc = None

    def start(self):
        self.port, self.admin = free_port(), free_port()
        started = time.monotonic()
        self.proc = start(
            [str(self.eddy), "--state-dir", str(self.state_dir / "state"), "serve",
             "--listen", f"127.0.0.1:{self.port}", "--admin", f"127.0.0.1:{self.admin}",
             "--config", str(self.config_path)],
            env={**os.environ, "EDDY_LOG": "warn"},
        )
        deadline = started + READY_TIMEOUT_S
        while True:
            try:
                get(f"{self.scheme}://127.0.0.1:{self.admin}/healthz", timeout=1)
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("eddy did not start")
                time.sleep(0.002)
        self.ready_s = time.monotonic() - started
        token_file = self.token_file or self.state_dir / "state/admin-token"
        self.token = Path(token_file).read_text().strip()
        return self

    def stop(self):
        stop(self.proc)

    def url(self, path):
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"

    def stats(self, function):
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.admin}/v1/functions/{function}/stats",
            headers={"Authorization": f"Bearer {self.token}"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def deploy(self, name, component: bytes, config=None):
        boundary = "eddybenchboundary"
        body = (
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"config\"\r\n"
            f"Content-Type: application/json\r\n\r\n{json.dumps(config or {})}\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"component\"; filename=\"c.wasm\"\r\n"
            f"Content-Type: application/wasm\r\n\r\n"
        ).encode() + component + f"\r\n--{boundary}--\r\n".encode()
        request = urllib.request.Request(
            f"{self.scheme}://127.0.0.1:{self.admin}/v1/functions/{name}/versions",
            data=body,
            method="POST",
            headers={
                "Authorization": f"Bearer {self.token}",
                "Content-Type": f"multipart/form-data; boundary={boundary}",
            },
        )
        context = UNVERIFIED_TLS if self.scheme == "https" else None
        with urllib.request.urlopen(request, timeout=120, context=context) as response:
            return json.loads(response.read())


def wrk(url, connections, extra=()):
    command = [*WRK_PREFIX, "wrk", f"-t{min(2, connections)}", f"-c{connections}", *extra]
    subprocess.run([*command, f"-d{WRK_WARMUP_S}s", url], check=True, capture_output=True)
    out = subprocess.run(
        [*command, f"-d{WRK_DURATION_S}s", "--latency", url],
        check=True, capture_output=True, text=True,
    ).stdout
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50_ms": latency_ms(out, "50%"),
        "p99_ms": latency_ms(out, "99%"),
        "errors": int(errors.group(1)) if errors else 0,
        "socket_errors": socket_errors.group(1).strip() if socket_errors else "",
    }


def latency_ms(out, label):
    match = re.search(rf"^\s*{re.escape(label)}\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
    value, unit = float(match.group(1)), match.group(2)
    return value * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


# `wasmtime serve` 48 can reuse instances too (`--max-instance-reuse-count`; its default for
# WASIp2 components is 1, a fresh instance per request): the like-for-like reference for
# eddy's `--reuse` rows.
WASMTIME_REUSE = ["--max-instance-reuse-count", "10000", "--idle-instance-timeout", "60s"]


def wasmtime_serve(guest, component, extra=()):
    port = free_port()
    proc = start([str(WASMTIME), "serve", "-Scli", *WASMTIME_OPTIONS[guest], *extra,
                  "--addr", f"127.0.0.1:{port}", str(component)])
    wait_port(port, proc)
    return proc, f"http://127.0.0.1:{port}/"


GUEST_FILES = {"rust": "hello-rust.wasm", "python": "hello-python.wasm", "js": "hello-js.wasm"}
# BENCH_GUESTS=rust (say) measures only those guests.
if os.environ.get("BENCH_GUESTS"):
    GUEST_FILES = {g: f for g, f in GUEST_FILES.items() if g in os.environ["BENCH_GUESTS"].split(",")}
if "js" in GUEST_FILES and not (GUESTS / GUEST_FILES["js"]).exists():
    # scripts/build-guests builds the JS hello only where Node.js and npm are installed.
    print("bench: no target/guests/hello-js.wasm (Node.js missing?): the JS rows are skipped",
          file=sys.stderr)
    del GUEST_FILES["js"]


def throughput(work):
    """{(guest, server): {conns: [result per round]}}, rounds interleaved."""
    results = {}
    state_dirs = {}

    def measure(guest, server, url):
        for c in CONCURRENCY:
            results.setdefault((guest, server), {}).setdefault(c, []).append(wrk(url, c))

    for round_ in range(ROUNDS):
        for guest, file in GUEST_FILES.items():
            component = GUESTS / file
            for server, (config, deploy_config) in EDDY_CONFIGS[guest].items():
                log(f"throughput round {round_ + 1}/{ROUNDS}: {server}, {guest} hello")
                # One state directory per configuration: later rounds restart the node
                # with the function (and its compiled code) already there.
                first = (guest, server) not in state_dirs
                state_dir = state_dirs.setdefault((guest, server), work / f"tput-{len(state_dirs)}")
                node = Node(state_dir, config).start()
                if first:
                    node.deploy("hello", component.read_bytes(), deploy_config)
                measure(guest, server, node.url("/hello"))
                if guest == "rust" and server == "eddy":
                    measure(guest, LONG_PATH_SERVER, node.url(LONG_PATH))
                node.stop()
            log(f"throughput round {round_ + 1}/{ROUNDS}: wasmtime serve, {guest} hello")
            proc, url = wasmtime_serve(guest, component)
            measure(guest, "wasmtime", url)
            stop(proc)
            log(f"throughput round {round_ + 1}/{ROUNDS}: wasmtime serve with reuse, {guest} hello")
            proc, url = wasmtime_serve(guest, component, WASMTIME_REUSE)
            measure(guest, "wasmtime --reuse", url)
            stop(proc)
            if guest == "rust":
                log(f"throughput round {round_ + 1}/{ROUNDS}: native hyper")
                port = free_port()
                proc = start([str(NATIVE), f"127.0.0.1:{port}"])
                wait_port(port, proc)
                measure(guest, "native", f"http://127.0.0.1:{port}/")
                stop(proc)
    return results


TLS_CONCURRENCY = [1, 64]
# wrk's `Connection: close`: a new connection (and, over TLS, a full handshake) per request.
NEW_CONNECTIONS = ("-H", "Connection: close")


def tls_throughput(work):
    """{(server, mode): {conns: [result per round]}}: eddy (Rust hello, fresh instance per
    request) over plain HTTP and over TLS (HTTP/1.1, the self-signed certificate), with kept
    connections and with a new connection per request, beside `wasmtime serve` and native
    hyper on plain HTTP, rounds interleaved."""
    results = {}
    component = GUESTS / GUEST_FILES["rust"]

    def measure(server, mode, url):
        extra = NEW_CONNECTIONS if mode == "new connection per request" else ()
        for c in TLS_CONCURRENCY:
            results.setdefault((server, mode), {}).setdefault(c, []).append(wrk(url, c, extra))

    deployed = set()
    for round_ in range(ROUNDS):
        for server, config in (("eddy http", ""), ("eddy https", "[tls]\nself_signed = true\n")):
            log(f"tls round {round_ + 1}/{ROUNDS}: {server}")
            node = Node(work / server.replace(" ", "-"), config, tls=server.endswith("https")).start()
            if server not in deployed:
                node.deploy("hello", component.read_bytes(), {})
                deployed.add(server)
            for mode in ("kept connections", "new connection per request"):
                measure(server, mode, node.url("/hello"))
            node.stop()
        log(f"tls round {round_ + 1}/{ROUNDS}: wasmtime serve, native hyper")
        proc, url = wasmtime_serve("rust", component)
        measure("wasmtime serve http", "kept connections", url)
        stop(proc)
        port = free_port()
        proc = start([str(NATIVE), f"127.0.0.1:{port}"])
        wait_port(port, proc)
        for mode in ("kept connections", "new connection per request"):
            measure("native hyper http", mode, f"http://127.0.0.1:{port}/")
        stop(proc)
    return results


def tls_report(results):
    lines = ["", "### TLS beside plain HTTP", "",
             f"Rust hello, fresh instance per request; median of {ROUNDS} interleaved rounds. "
             "`eddy https`: both listeners on the self-signed certificate (ECDSA P-256, rustls with "
             "ring, TLS 1.3), HTTP/1.1 (wrk speaks no HTTP/2). A new connection per request is "
             "wrk with `Connection: close`: over TLS, a full handshake each time.", "",
             "| server | connections | conns | req/s | req/s per round | p50 ms | p99 ms | errors | https/http | vs wasmtime serve | vs native |",
             "|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    for (server, mode), by_conns in results.items():
        for c, runs in by_conns.items():
            r = median_round(runs)
            plain = results.get(("eddy http", mode), {}).get(c)
            wasmtime = results.get(("wasmtime serve http", "kept connections"), {}).get(c)
            native = results.get(("native hyper http", mode), {}).get(c)
            ratio = f"{r['rps'] / median_round(plain)['rps']:.2f}×" if server == "eddy https" and plain else ""
            vs_w = (f"{r['rps'] / median_round(wasmtime)['rps']:.2f}×"
                    if server.startswith("eddy") and wasmtime and mode == "kept connections" else "")
            vs_n = f"{r['rps'] / median_round(native)['rps']:.3f}×" if server.startswith("eddy") and native else ""
            errors = sum(run["errors"] + (1 if run["socket_errors"] else 0) for run in runs)
            spread = ", ".join(f"{run['rps']:.0f}" for run in runs)
            lines.append(f"| {server} | {mode} | {c} | {r['rps']:.0f} | {spread} | {ms(r['p50_ms'])} | "
                         f"{ms(r['p99_ms'])} | {errors} | {ratio} | {vs_w} | {vs_n} |")
    return "\n".join(lines) + "\n"


def guest_calls():
    """{guest: {"wasmtime": us, "eddy": us}}: a warm request in process, no network."""
    results = {}
    for guest, file in GUEST_FILES.items():
        log(f"guest call in process: {guest} hello")
        out = subprocess.run([str(GUEST_CALL), str(GUESTS / file)], check=True,
                             capture_output=True, text=True).stdout
        results[guest] = {name: float(us) for name, us in (line.split() for line in out.splitlines())}
    return results


def median_round(runs):
    """The run with the median requests/s (its latencies belong to the same run)."""
    return sorted(runs, key=lambda r: r["rps"])[len(runs) // 2]


def timed_first_request(url):
    started = time.monotonic()
    status, _ = get(url)
    assert status == 200, status
    return (time.monotonic() - started) * 1000


def cold_starts(work, binaries):
    """{binary: {measurement: [ms]}}. Every repetition runs each binary in turn, the order
    alternating, each on its own state directories."""
    hello = (GUESTS / "hello-rust.wasm").read_bytes()
    python = (GUESTS / "hello-python.wasm").read_bytes()
    out = {b: {} for b in binaries}
    cold, restart = {}, {}
    for n, b in enumerate(binaries):
        # Without the incremental cache: every new component below compiles from nothing
        # (with it, the same functions in another component would come from the cache; the
        # redeploy section measures that).
        cold[b] = Node(work / f"cold-{n}", NO_INCREMENTAL_NODE, eddy=b).start()
        restart[b] = Node(work / f"restart-{n}", eddy=b).start()
        restart[b].deploy("hello", hello)
        restart[b].stop()

    def record(b, label, value):
        out[b].setdefault(label, []).append(value)

    log(f"cold start: {COLD_REPETITIONS} repetitions of: first request after deploy, "
        f"deploy-to-ready of a new Rust and Python component, node restart")
    for i in range(COLD_REPETITIONS):
        for b in (binaries if i % 2 == 0 else binaries[::-1]):
            node = cold[b]
            node.deploy(f"f{i}", hello)
            record(b, "first request after deploy (Rust)", timed_first_request(node.url(f"/f{i}")))
            for label, component, name in [("Rust", hello, "r"), ("Python", python, "p")]:
                fresh = with_custom_section(component, os.urandom(16))
                started = time.monotonic()
                result = node.deploy(f"{name}{i}", fresh)
                assert result["compiled"], result
                get(node.url(f"/{name}{i}"))
                record(b, f"deploy-to-ready, new component ({label})", (time.monotonic() - started) * 1000)
            node = restart[b]
            node.start()
            record(b, "node start to ready, 1 function (compiled code cached)", node.ready_s * 1000)
            record(b, "first request after restart (Rust)", timed_first_request(node.url("/hello")))
            node.stop()
    for b in binaries:
        cold[b].stop()
    return out


NO_INCREMENTAL_NODE = "[limits]\nincremental_cache_bytes_max = 0\n"
REDEPLOY_REPETITIONS = int(os.environ.get("BENCH_REDEPLOY_REPETITIONS", "5"))


def eddy_build(project):
    """Builds the function project `project` with `eddy build` (componentize-py from
    scripts/build-guests' install under target/tools/bin when it is not on PATH)."""
    env = {**os.environ, "PATH": f"{ROOT / 'target/tools/bin'}:{os.environ.get('PATH', '')}"}
    subprocess.run([str(EDDY), "build"], cwd=project, env=env, check=True, capture_output=True)


def python_variants(work):
    """The Python hello changed in one line, and another Python function (the template of
    `eddy new`), built with `eddy build`."""
    changed = work / "py-changed"
    shutil.copytree(ROOT / "examples/hello-python", changed)
    app = changed / "app.py"
    app.write_text(app.read_text().replace("Hello from Python", "Howdy from Python"))
    (changed / "eddy.toml").write_text('[functions.changed]\nlang = "python"\n')
    eddy_build(changed)
    subprocess.run([str(EDDY), "new", "second", "--lang", "python", "--dir", str(work / "py-second")],
                   check=True, capture_output=True)
    eddy_build(work / "py-second")
    return (changed / "build/changed.wasm").read_bytes(), (work / "py-second/build/second.wasm").read_bytes()


def timed_deploy(node, name, component):
    started = time.monotonic()
    node.deploy(name, component)
    get(node.url(f"/{name}"))
    return (time.monotonic() - started) * 1000


def redeploys(work):
    """Deploy-to-ready of a Python function after another Python function was deployed: the
    same function changed in one line, and a second function, on a node with and without
    the incremental compilation cache (a new state directory each repetition)."""
    log("redeploy: building the changed and the second Python function")
    first = (GUESTS / "hello-python.wasm").read_bytes()
    changed, second = python_variants(work)
    out = {}
    for label, config in [("without the incremental cache", NO_INCREMENTAL_NODE),
                          ("with the incremental cache", "")]:
        log(f"redeploy: {label} ({REDEPLOY_REPETITIONS}x)")
        rows = {"first Python function": [], "the same function, changed": [],
                "a second Python function": []}
        for i in range(REDEPLOY_REPETITIONS):
            node = Node(work / f"redeploy-{len(out)}-{i}", config).start()
            rows["first Python function"].append(timed_deploy(node, "hello", first))
            rows["the same function, changed"].append(timed_deploy(node, "hello", changed))
            rows["a second Python function"].append(timed_deploy(node, "second", second))
            node.stop()
        out[label] = rows
    return out


async def one_waiter(port, path):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nhost: bench\r\nconnection: close\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    return data.startswith(b"HTTP/1.1 200")


async def waiters(port, path, count):
    return await asyncio.gather(*(one_waiter(port, path) for _ in range(count)))


def cost_of_waiting(work):
    log(f"cost of waiting: {WAITERS} concurrent requests waiting {WAIT_MS} ms on the host clock")
    # All of them must wait at once: above the node's and the function's default
    # concurrency (750 and 100), which would admit them in waves.
    node = Node(work / "wait", f"[limits]\ninstances_max = {WAITERS * 2}\n"
                f"concurrency_max = {WAITERS}\n").start()
    node.deploy("mis", (GUESTS / "misbehave.wasm").read_bytes(), {"max_concurrency": WAITERS})
    get(node.url("/mis/sleep?ms=1"))
    pid = node.proc.pid
    rss_before = rss_bytes(pid)
    cpu_before = cpu_seconds(pid)
    peak = {"rss": rss_before}

    samples = []  # (seconds since start, node CPU seconds)

    async def run():
        sampler_stop = asyncio.Event()
        started = time.monotonic()

        async def sample():
            while not sampler_stop.is_set():
                peak["rss"] = max(peak["rss"], rss_bytes(pid))
                samples.append((time.monotonic() - started, cpu_seconds(pid)))
                await asyncio.sleep(0.05)

        sampler = asyncio.create_task(sample())
        oks = await waiters(node.port, f"/mis/sleep?ms={WAIT_MS}", WAITERS)
        elapsed = time.monotonic() - started
        sampler_stop.set()
        await sampler
        return oks, elapsed

    oks, elapsed = asyncio.run(run())
    cpu = cpu_seconds(pid) - cpu_before
    # What eddy metered for those invocations: guest CPU against wall time.
    metered = {}
    for _ in range(50):
        metered = node.stats("mis")
        if metered["invocations"] >= WAITERS + 1:
            break
        time.sleep(0.1)
    node.stop()
    # The steady wait: every request has started and none has finished yet.
    window = [(t, c) for t, c in samples if STEADY_WAIT_FROM_S <= t <= STEADY_WAIT_TO_S]
    steady_pct = (100 * (window[-1][1] - window[0][1]) / (window[-1][0] - window[0][0])
                  if len(window) >= 2 else float("nan"))
    return {
        "ok": sum(oks),
        "total_s": elapsed,
        "node_cpu_s": cpu,
        "node_cpu_pct_of_core": 100 * cpu / elapsed,
        "steady_cpu_pct_of_core": steady_pct,
        "rss_per_inflight_kib": (peak["rss"] - rss_before) / WAITERS / 1024,
        "rss_before_mib": rss_before / 2**20,
        "rss_peak_mib": peak["rss"] / 2**20,
        "metered_invocations": metered["invocations"],
        "metered_wall_ms": metered["wall_ms_total"],
        "metered_cpu_ms": metered["cpu_ms_total"],
    }


def density(work):
    log(f"density: {DENSITY_FUNCTIONS} idle functions on one node")
    hello = (GUESTS / "hello-rust.wasm").read_bytes()
    node = Node(work / "density").start()
    empty = rss_bytes(node.proc.pid)
    started = time.monotonic()
    for i in range(DENSITY_FUNCTIONS):
        node.deploy(f"d{i:04}", hello)
    deploy_s = time.monotonic() - started
    status, _ = get(node.url(f"/d{DENSITY_FUNCTIONS - 1:04}"))
    assert status == 200
    loaded = rss_bytes(node.proc.pid)
    overview = console_overview(node)
    node.stop()
    node.start()
    restarted = rss_bytes(node.proc.pid)
    restart_ready_s = node.ready_s
    node.stop()
    return {
        "rss_empty_mib": empty / 2**20,
        "rss_loaded_mib": loaded / 2**20,
        "rss_per_function_kib": (loaded - empty) / DENSITY_FUNCTIONS / 1024,
        "rss_after_restart_mib": restarted / 2**20,
        "deploy_all_s": deploy_s,
        "restart_ready_s": restart_ready_s,
        **overview,
    }


CONSOLE_REFRESHES = 20


def console_overview(node):
    """What one refresh of the console's overview costs with every function of the density
    run deployed and each called once: its two calls (`GET /v1/functions`, `GET /v1/stats`),
    timed one after the other, and the node's CPU for them."""
    for i in range(DENSITY_FUNCTIONS):
        get(node.url(f"/d{i:04}"))
    while True:  # every function's minute is in the store (the metering flush)
        stats = api_call(node, "GET", "/stats?since_ms=300000")["functions"]
        if sum(f["invocations"] for f in stats) >= DENSITY_FUNCTIONS:
            break
        time.sleep(0.2)
    listing, totals = [], []
    cpu_before = cpu_seconds(node.proc.pid)
    for _ in range(CONSOLE_REFRESHES):
        started = time.monotonic()
        api_call(node, "GET", "/functions")
        listing.append((time.monotonic() - started) * 1000)
        started = time.monotonic()
        answer = api_call(node, "GET", "/stats?since_ms=300000")
        totals.append((time.monotonic() - started) * 1000)
        assert len(answer["functions"]) == DENSITY_FUNCTIONS
    cpu_ms = (cpu_seconds(node.proc.pid) - cpu_before) * 1000 / CONSOLE_REFRESHES
    # The same figures one function at a time, as a client without `GET /v1/stats` gets them.
    cpu_before = cpu_seconds(node.proc.pid)
    started = time.monotonic()
    for i in range(DENSITY_FUNCTIONS):
        api_call(node, "GET", f"/functions/d{i:04}/stats?since_ms=300000")
    one_by_one_ms = (time.monotonic() - started) * 1000
    one_by_one_cpu_ms = (cpu_seconds(node.proc.pid) - cpu_before) * 1000
    return {
        "overview_one_by_one_ms": one_by_one_ms,
        "overview_one_by_one_cpu_ms": one_by_one_cpu_ms,
        "overview_functions_ms": statistics.median(listing),
        "overview_stats_ms": statistics.median(totals),
        "overview_stats_p99_ms": percentile(totals, 99),
        "overview_cpu_ms": cpu_ms,
    }


# Node config (top-level keys) letting functions reach this machine's loopback.
REACH_LOOPBACK = 'outbound_allow_networks = ["127.0.0.0/8"]\n'
QUEUE_BATCHES = {1: 20_000, 100: 200_000}
QUEUE_PUBLISHERS = 2
QUEUE_PUBLISH_CHUNK = 1000
QUEUE_CONSUMER_CONCURRENCY = 32
QUEUE_LATENCY_MESSAGES = 1000
QUEUE_LATENCY_RATE = 200


def api_call(node, method, path, body=None, raw=None, headers=None):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(
        f"http://127.0.0.1:{node.admin}/v1{path}", data=data, method=method,
        headers={"Authorization": f"Bearer {node.token}", "Content-Type": "application/json", **(headers or {})},
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        text = response.read()
        return json.loads(text) if text else None


def queue_throughput(work):
    """Publish -> consume -> ack of durable messages with a no-op consumer (the Rust hello,
    warm instances), publishers and consumer running at once; the clock stops when the
    queue is empty (every message acknowledged, so committed twice more)."""
    import threading
    results = {}
    # The latency part's consumer relays each delivery to a recorder on loopback, which only
    # the operator can open to functions.
    node = Node(work / "queues", config=REACH_LOOPBACK).start()
    try:
        node.deploy("sink", (GUESTS / "hello-rust.wasm").read_bytes(), {"reuse": True})
        for batch, total in QUEUE_BATCHES.items():
            name = f"tput-{batch}"
            api_call(node, "POST", "/queues", {"name": name})
            api_call(node, "PUT", f"/queues/{name}/consumer",
                     {"function": "sink", "batch_size": batch, "max_concurrency": QUEUE_CONSUMER_CONCURRENCY})
            payloads = [{"data": f"message {i}"} for i in range(QUEUE_PUBLISH_CHUNK)]

            def publish(count):
                for _ in range(count // QUEUE_PUBLISH_CHUNK):
                    api_call(node, "POST", f"/queues/{name}/batch", {"messages": payloads})

            started = time.monotonic()
            threads = [threading.Thread(target=publish, args=(total // QUEUE_PUBLISHERS,))
                       for _ in range(QUEUE_PUBLISHERS)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            published_s = time.monotonic() - started
            while True:
                stats = api_call(node, "GET", f"/queues/{name}")
                if stats["depth"] == 0 and stats["succeeded"] >= total:
                    break
                time.sleep(0.02)
            elapsed = time.monotonic() - started
            results[batch] = {
                "messages": total, "elapsed_s": elapsed, "published_s": published_s,
                "rate": total / elapsed, "publish_rate": total / published_s,
                "deliveries": stats["delivered"], "failed": stats["failed_attempts"],
            }
            log(f"queue batch {batch}: {total} messages in {elapsed:.2f} s = {total / elapsed:.0f}/s "
                f"(published in {published_s:.2f} s)")
        results["latency"] = queue_latency(node)
    finally:
        node.stop()
    return results


def relay_recorder(note):
    """A local HTTP server for what the misbehave guest's `relay` route forwards: calls
    `note(headers, monotonic_arrival)` with the relayed request's headers (lower-case names)
    for each POST. Returns the server (shut it down) and its port."""
    import http.server
    import threading

    class Recorder(http.server.BaseHTTPRequestHandler):
        def read_body(self):
            if "chunked" not in self.headers.get("transfer-encoding", ""):
                return self.rfile.read(int(self.headers.get("content-length", 0)))
            body = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return body
                body += self.rfile.read(size)
                self.rfile.readline()

        def do_POST(self):
            body = self.read_body().decode()
            now = time.monotonic()
            headers = {}
            for line in body.splitlines():
                if line.startswith("header: "):
                    name, _, value = line[len("header: "):].partition(": ")
                    headers[name.lower()] = value
            note(headers, now)
            self.send_response(200)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


def queue_latency(node):
    """Publish one message at a time at a steady rate; each delivery is relayed by the
    consumer to a local recorder, which notes when it arrived. Latency: publish answered
    (durable) -> delivery reached the recorder."""
    import threading
    arrived = {}
    lock = threading.Lock()

    def note(headers, now):
        with lock:
            if "ce-id" in headers:
                arrived[headers["ce-id"]] = now

    server, port = relay_recorder(note)
    try:
        node.deploy("relay", (GUESTS / "misbehave.wasm").read_bytes(),
                    {"reuse": True, "allow_outbound": [f"127.0.0.1:{port}"]})
        api_call(node, "POST", "/queues", {"name": "latency"})
        api_call(node, "PUT", "/queues/latency/consumer",
                 {"function": "relay", "path": f"/relay/relay?to=127.0.0.1:{port}/"})
        sent = {}
        interval = 1 / QUEUE_LATENCY_RATE
        next_at = time.monotonic()
        for i in range(QUEUE_LATENCY_MESSAGES):
            reply = api_call(node, "POST", "/queues/latency/messages", raw=f"m{i}".encode(),
                             headers={"Content-Type": "text/plain"})
            sent[reply["id"]] = time.monotonic()
            next_at += interval
            time.sleep(max(0.0, next_at - time.monotonic()))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with lock:
                if len(arrived) >= len(sent):
                    break
            time.sleep(0.05)
        with lock:
            latencies = [(arrived[i] - t) * 1000 for i, t in sent.items() if i in arrived]
        if not latencies:
            raise RuntimeError(f"queue latency: none of {len(sent)} deliveries reached the recorder "
                               f"on 127.0.0.1:{port} (is loopback open to functions?)")
        return {"count": len(latencies), "sent": len(sent),
                "p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99),
                "max_ms": max(latencies)}
    finally:
        server.shutdown()


WS_IDLE_TARGET = 100_000
WS_ACTIVE = 1000
WS_ROUNDS = 20
WS_IDLE_MEASURE_S = 10
WS_LOCAL_ADDRESSES = 8


def ws_frame(payload: bytes, opcode=1):
    """A client frame (masked), as RFC 6455 wants."""
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        header = bytes([0x80 | opcode, 0x80 | n])
    elif n < 65536:
        header = bytes([0x80 | opcode, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        header = bytes([0x80 | opcode, 0x80 | 127]) + n.to_bytes(8, "big")
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def ws_read_frame(reader):
    head = await reader.readexactly(2)
    n = head[1] & 0x7F
    if n == 126:
        n = int.from_bytes(await reader.readexactly(2), "big")
    elif n == 127:
        n = int.from_bytes(await reader.readexactly(8), "big")
    return head[0] & 0x0F, await reader.readexactly(n)


async def ws_open(port, index):
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, local_addr=(f"127.0.0.{1 + index % WS_LOCAL_ADDRESSES}", 0))
    writer.write(b"GET /chat/ws HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\n"
                 b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                 b"Sec-WebSocket-Version: 13\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(head.decode(errors="replace").splitlines()[0])
    return reader, writer


async def ws_scenario(node, idle):
    pid = node.proc.pid
    rss_before = rss_bytes(pid)
    gate = asyncio.Semaphore(200)

    async def open_one(i):
        async with gate:
            return await ws_open(node.port, i)

    started = time.monotonic()
    idle_conns = await asyncio.gather(*(open_one(i) for i in range(idle)))
    open_s = time.monotonic() - started
    await asyncio.sleep(2)
    rss_idle = rss_bytes(pid)
    cpu0 = cpu_seconds(pid)
    await asyncio.sleep(WS_IDLE_MEASURE_S)
    idle_cpu_s = cpu_seconds(pid) - cpu0
    active = await asyncio.gather(*(open_one(idle + i) for i in range(WS_ACTIVE)))
    rtts = []

    async def talk(reader, writer, k):
        for r in range(WS_ROUNDS):
            payload = f"m{k}-{r}".encode()
            sent = time.monotonic()
            writer.write(ws_frame(payload))
            while True:
                opcode, data = await ws_read_frame(reader)
                if opcode == 1 and data == payload:
                    break
            rtts.append((time.monotonic() - sent) * 1000)

    started = time.monotonic()
    await asyncio.gather(*(talk(r, w, k) for k, (r, w) in enumerate(active)))
    active_s = time.monotonic() - started
    for _, w in idle_conns + active:
        w.close()
    return {
        "idle": idle, "open_s": open_s,
        "rss_before_mib": rss_before / MIB, "rss_idle_mib": rss_idle / MIB,
        "rss_per_connection_kib": (rss_idle - rss_before) / idle / 1024,
        "idle_cpu_pct": 100 * idle_cpu_s / WS_IDLE_MEASURE_S,
        "messages": len(rtts), "active_s": active_s,
        "rtt_p50_ms": percentile(rtts, 50), "rtt_p99_ms": percentile(rtts, 99),
    }


def websockets(work):
    """Idle WebSocket connections held by one node (as many as the file limit allows, up to
    100,000), and message round trips on 1000 active ones beside them."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    idle = max(1000, min(WS_IDLE_TARGET, hard - WS_ACTIVE - 2000))
    total = idle + WS_ACTIVE + 10
    node = Node(work / "ws", f"[limits]\nwebsocket_connections_max = {total}\n"
                             f"websocket_connections_per_function_max = {total}\n").start()
    try:
        node.deploy("chat", (GUESTS / "misbehave.wasm").read_bytes(), {"websocket": True, "reuse": True})
        result = asyncio.run(ws_scenario(node, idle))
        result["file_limit"] = hard
        log(f"websockets: {json.dumps(result)}")
        return result
    finally:
        node.stop()


POSTGRES_URL = os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test")
CLUSTER_QUEUE_MESSAGES = {1: 20_000, 100: 100_000}


def psql(sql):
    subprocess.run(["psql", POSTGRES_URL, "-qAt", "-c", sql], check=True, capture_output=True)


def drain_queue(nodes, name, batch, total):
    """Publishes `total` messages through the nodes in turn (QUEUE_PUBLISHERS threads) to a
    queue every node consumes with the no-op Rust hello; seconds until all are acknowledged."""
    import threading
    api_call(nodes[0], "POST", "/queues", {"name": name})
    api_call(nodes[0], "PUT", f"/queues/{name}/consumer",
             {"function": "sink", "batch_size": batch, "max_concurrency": QUEUE_CONSUMER_CONCURRENCY})
    payloads = [{"data": f"message {i}"} for i in range(QUEUE_PUBLISH_CHUNK)]

    def publish(node, count):
        for _ in range(count // QUEUE_PUBLISH_CHUNK):
            api_call(node, "POST", f"/queues/{name}/batch", {"messages": payloads})

    # Every node has heard of the binding before the clock starts.
    time.sleep(1.5)
    started = time.monotonic()
    threads = [threading.Thread(target=publish, args=(nodes[i % len(nodes)], total // QUEUE_PUBLISHERS))
               for i in range(QUEUE_PUBLISHERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    while True:
        stats = api_call(nodes[0], "GET", f"/queues/{name}")
        if stats["depth"] == 0 and stats["succeeded"] >= total:
            break
        time.sleep(0.02)
    return time.monotonic() - started


CRON_PHASE_S = 10


def cron_lateness(work, pg, token):
    """Three nodes on Postgres run one one-second schedule of the misbehave guest's relay
    route, which forwards each tick to a local recorder. After CRON_PHASE_S seconds one
    node is killed (SIGKILL); it starts again CRON_PHASE_S later; ticks are counted for
    another CRON_PHASE_S. Lateness: a tick's scheduled time (its CloudEvent `ce-time`) to
    the moment its relayed request reached the recorder (wall clocks of one machine)."""
    import datetime
    import random
    import threading
    runs = {}
    lock = threading.Lock()

    def note(headers, _monotonic):
        now = time.time()
        if "ce-time" in headers:
            with lock:
                runs.setdefault(headers["ce-time"], []).append(now)

    server, port = relay_recorder(note)
    config = pg + REACH_LOOPBACK
    nodes = [Node(work / f"cron-{i}", config=config, token_file=token).start() for i in range(3)]
    try:
        nodes[0].deploy("ticker", (GUESTS / "misbehave.wasm").read_bytes(), {
            "allow_outbound": [f"127.0.0.1:{port}"],
            "schedule": {"cron": "* * * * * *", "path": f"/ticker/relay?to=127.0.0.1:{port}/"},
        })
        time.sleep(3)
        began = time.time()
        time.sleep(CRON_PHASE_S)
        victim = random.randrange(len(nodes))
        nodes[victim].proc.kill()
        nodes[victim].proc.wait()
        killed = time.time()
        log(f"cluster cron: node {victim} killed")
        time.sleep(CRON_PHASE_S)
        nodes[victim] = Node(work / f"cron-{victim}", config=config, token_file=token).start()
        back = time.time()
        time.sleep(CRON_PHASE_S)
        ended = time.time()
        # A tick whose runner died with it runs again once its lease ends (its timeout and
        # wait, plus 5 s): wait past that before counting.
        time.sleep(CRON_PHASE_S + 30)
    finally:
        for node in nodes:
            node.stop()
        server.shutdown()

    def scheduled(text):
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()

    with lock:
        seen = {scheduled(t): arrivals for t, arrivals in runs.items()}
    window = list(range(int(began) + 1, int(ended)))
    late = {"all": [], "down": []}
    for t in window:
        for arrival in seen.get(t, []):
            late["all"].append((arrival - t) * 1000)
            if killed <= t < back:
                late["down"].append((arrival - t) * 1000)
    result = {
        "ticks": len(window),
        "missing": sum(1 for t in window if t not in seen),
        "twice": sum(1 for t in window if len(seen.get(t, [])) > 1),
        "down_s": back - killed,
    }
    for part, values in late.items():
        if values:
            result[part] = {"p50_ms": percentile(values, 50), "p99_ms": percentile(values, 99),
                            "max_ms": max(values), "count": len(values)}
    log(f"cluster cron: {result}")
    return result


def cluster(work):
    """Nodes on one Postgres (the machine's): HTTP throughput of one node on Postgres against
    one on SQLite; time from a deploy on node A to the first 200 on node B; queue throughput
    on SQLite, one Postgres node and three."""
    import secrets
    schema = f"eddy_bench_{os.getpid()}"
    psql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    token, key = work / "cluster-token", work / "cluster-artifact-key"
    token.write_text(secrets.token_hex(32))
    key.write_text(secrets.token_hex(32))
    pg = (f'store = "{POSTGRES_URL}"\nstore_schema = "{schema}"\n'
          f'admin_token_file = "{token}"\nartifact_key_file = "{key}"\n')
    rust = (GUESTS / "hello-rust.wasm").read_bytes()
    results = {"http": {}, "first_200": {}, "queues": {}, "cron": None}
    try:
        # HTTP: the same function on a node of each store, rounds interleaved.
        for round_ in range(ROUNDS):
            for store, config, token_file in (("sqlite", "", None), ("postgres", pg, token)):
                log(f"cluster round {round_ + 1}/{ROUNDS}: HTTP, one node on {store}")
                node = Node(work / f"http-{store}", config=config, token_file=token_file).start()
                if round_ == 0:
                    node.deploy("hello", rust, {"reuse": True})
                results["http"].setdefault(store, []).append(wrk(node.url("/hello"), 64))
                node.stop()
        psql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        # Deploy on A, first 200 on B: B hears of the version and loads A's artifact.
        a, b = (Node(work / f"pair-{i}", config=pg, token_file=token).start() for i in range(2))
        try:
            for lang in ("rust", "python"):
                component = (GUESTS / GUEST_FILES.get(lang, f"hello-{lang}.wasm")).read_bytes()
                name = f"first-{lang}"
                started = time.monotonic()
                a.deploy(name, component)
                deployed = time.monotonic()
                while True:
                    try:
                        get(b.url(f"/{name}"), timeout=30)
                        break
                    except urllib.error.HTTPError:
                        time.sleep(0.002)
                first = time.monotonic()
                info = api_call(b, "GET", "/node")["compile_cache"]
                results["first_200"][lang] = {
                    "deploy_s": deployed - started, "to_first_200_s": first - deployed,
                    "b_loaded": info["hits"], "b_compiled": info["misses"],
                }
                log(f"cluster: {lang} deployed on A in {deployed - started:.2f} s, "
                    f"first 200 on B {first - deployed:.3f} s later")
        finally:
            a.stop()
            b.stop()
        psql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        # Queues: publish -> consume -> ack, no-op consumer on every node.
        for label, count, config, token_file in (("sqlite", 1, "", None), ("postgres", 1, pg, token),
                                                 ("postgres", 3, pg, token)):
            nodes = [Node(work / f"q-{label}-{count}-{i}", config=config, token_file=token_file).start()
                     for i in range(count)]
            try:
                nodes[0].deploy("sink", rust, {"reuse": True})
                for batch, total in CLUSTER_QUEUE_MESSAGES.items():
                    elapsed = drain_queue(nodes, f"c{batch}", batch, total)
                    results["queues"][(label, count, batch)] = {"messages": total, "elapsed_s": elapsed,
                                                                "rate": total / elapsed}
                    log(f"cluster queues: {label} x{count}, batch {batch}: {total / elapsed:.0f} msg/s")
            finally:
                for node in nodes:
                    node.stop()
            psql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        results["cron"] = cron_lateness(work, pg, token)
    finally:
        psql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    return results


def cluster_report(results):
    lines = ["", "### Cluster: nodes on Postgres", "",
             f"Postgres: the machine's ({POSTGRES_URL.split('@')[-1]}), synchronous_commit on.", "",
             "| HTTP, Rust hello, --reuse, 64 connections | req/s (median of rounds) | p99 ms | vs SQLite |",
             "|---|---:|---:|---:|"]
    med = {store: sorted(runs, key=lambda r: r["rps"])[len(runs) // 2] for store, runs in results["http"].items()}
    for store in ("sqlite", "postgres"):
        r = med[store]
        lines.append(f"| one node on {store} | {r['rps']:,.0f} | {r['p99_ms']:.2f} | "
                     f"{r['rps'] / med['sqlite']['rps']:.2f}x |")
    lines += ["", "| deploy on node A, then node B | deploy on A (compile) | A's answer to B's first 200 | B loaded / compiled |",
              "|---|---:|---:|---|"]
    for lang, r in results["first_200"].items():
        lines.append(f"| {lang} hello | {r['deploy_s']:.2f} s | {r['to_first_200_s'] * 1000:.0f} ms | "
                     f"{r['b_loaded']} / {r['b_compiled']} |")
    lines += ["", "| queue: publish -> consume -> ack | batch 1 | batch 100 |", "|---|---:|---:|"]
    for label, count in (("sqlite", 1), ("postgres", 1), ("postgres", 3)):
        cells = [f"{results['queues'][(label, count, b)]['rate']:,.0f} msg/s" for b in CLUSTER_QUEUE_MESSAGES]
        lines.append(f"| {count} node{'s' if count > 1 else ''} on {label} | {' | '.join(cells)} |")
    c = results["cron"]
    lines += ["", f"One-second cron on three nodes, one killed (SIGKILL) for {c['down_s']:.0f} s and started "
              f"again: lateness from the tick's scheduled time to its run reaching a local recorder.", "",
              "| ticks | p50 | p99 | max | while a node was down: p50 / p99 / max | missing | run twice |",
              "|---:|---:|---:|---:|---|---:|---:|"]
    a, d = c.get("all", {}), c.get("down", {})
    def cell(r, k):
        return f"{r[k]:.1f} ms" if k in r else "-"
    lines.append(f"| {c['ticks']} | {cell(a, 'p50_ms')} | {cell(a, 'p99_ms')} | {cell(a, 'max_ms')} | "
                 f"{cell(d, 'p50_ms')} / {cell(d, 'p99_ms')} / {cell(d, 'max_ms')} | {c['missing']} | {c['twice']} |")
    return "\n".join(lines) + "\n"


def machine():
    model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    def version(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True).stdout.strip().splitlines()[0]
        except (OSError, IndexError):
            return "unknown"
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cores": os.cpu_count(),
        "cpu": model,
        "kernel": platform.release(),
        "eddy": version(["git", "-C", str(ROOT), "describe", "--always", "--dirty"]),
        "rustc": version(["rustc", "--version"]),
        "wasmtime": version([str(WASMTIME), "--version"]),
        "wrk": version(["wrk", "--version"]) or "wrk",
    }


def ms(v):
    return f"{v:.2f}"


def describe_binary(path):
    """What `eddy --version` says of a binary (its build's commit where it records one)."""
    try:
        return subprocess.run([str(path), "--version"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "version unknown"


def report(info, tput, cold, wait, dens, calls=None, redeploy=None, queues=None, ws=None):
    lines = [f"## {info['date']} — {info['cores']} cores, {info['cpu']}", ""]
    lines.append(f"eddy `{info['eddy']}` (release), {info['wasmtime']}, {info['rustc']}, "
                 f"kernel {info['kernel']}; wrk `-d{WRK_DURATION_S}s` after a {WRK_WARMUP_S}s warm-up, "
                 f"load generator on the same two cores{WRK_POLICY_TEXT}. Fresh instance per request everywhere except "
                 "the `eddy --reuse` rows (warm instances, the function's opt-in).")
    lines.append("")
    if tput:
        lines.append("### Throughput and latency")
        lines.append("")
        lines.append(f"Median of {ROUNDS} interleaved rounds (req/s, and p50/p99 of that same round); "
                     "every round's req/s alongside. `wasmtime serve` options, Rust: "
                     f"`{' '.join(WASMTIME_OPTIONS['rust'])}`; Python: `{' '.join(WASMTIME_OPTIONS['python'])}`. "
                     "eddy node config for Python and JS: `" + INTERPRETER_NODE.strip().replace(chr(10), "; ") + "`.")
        lines.append("")
        lines.append("`wasmtime --reuse` is `wasmtime serve` with `" + " ".join(WASMTIME_REUSE) + "`; the "
                     "eddy/wasmtime ratio is always against `wasmtime serve` fresh per request, the last "
                     "column compares `eddy --reuse` with `wasmtime --reuse`.")
        lines.append("")
        lines.append("| guest | server | conns | req/s | req/s per round | p50 ms | p99 ms | errors | eddy/wasmtime req/s | eddy/native req/s | eddy --reuse/wasmtime --reuse |")
        lines.append("|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|")
        for guest in GUEST_FILES:
            long_path = [LONG_PATH_SERVER] if (guest, LONG_PATH_SERVER) in tput else []
            servers = [*EDDY_CONFIGS[guest], *long_path, "wasmtime", "wasmtime --reuse"] + (["native"] if guest == "rust" else [])
            for server in servers:
                for c in CONCURRENCY:
                    runs = tput[guest, server][c]
                    r = median_round(runs)
                    ratio_w = ratio_n = ratio_r = ""
                    if server.startswith("eddy"):
                        ratio_w = f"{r['rps'] / median_round(tput[guest, 'wasmtime'][c])['rps']:.2f}×"
                        if (guest, "native") in tput:
                            ratio_n = f"{r['rps'] / median_round(tput[guest, 'native'][c])['rps']:.3f}×"
                    if server == "eddy --reuse":
                        ratio_r = f"{r['rps'] / median_round(tput[guest, 'wasmtime --reuse'][c])['rps']:.2f}×"
                    errors = sum(run["errors"] + (1 if run["socket_errors"] else 0) for run in runs)
                    socket_errors = "; ".join(run["socket_errors"] for run in runs if run["socket_errors"])
                    spread = ", ".join(f"{run['rps']:.0f}" for run in runs)
                    lines.append(f"| {guest} hello | {server} | {c} | {r['rps']:.0f} | {spread} | {ms(r['p50_ms'])} | "
                                 f"{ms(r['p99_ms'])} | {errors}{' (' + socket_errors + ')' if socket_errors else ''} | {ratio_w} | {ratio_n} | {ratio_r} |")
        lines.append("")
    if calls:
        lines.append("### A warm request in process (no network, one thread)")
        lines.append("")
        lines.append("`target/release/guest-call`: one warm instance, `handle` called with a synthetic GET and "
                     "the body read to its end. `wasmtime` is bare Wasmtime with wasmtime-wasi-http (then with the epoch interruption eddy compiles in to enforce timeouts); `eddy` is "
                     "`Deployment::invoke` with reuse (limits, CPU metering, report, instance back to its pool). "
                     "A floor under any HTTP server running the guest.")
        lines.append("")
        lines.append("| guest | bare wasmtime µs/request | bare wasmtime with epoch interruption µs/request | eddy invoke µs/request | eddy's own µs/request (vs epoch) | guest CPU metered by eddy µs/request |")
        lines.append("|---|---:|---:|---:|---:|---:|")
        for guest, r in calls.items():
            lines.append(f"| {guest} hello | {r['wasmtime']:.2f} | {r['wasmtime-epoch']:.2f} | {r['eddy']:.2f} | "
                         f"{r['eddy'] - r['wasmtime-epoch']:.2f} | {r['eddy-metered-cpu']:.2f} |")
        lines.append("")
    if cold and len(cold) == 1:
        (values_of,) = cold.values()
        lines.append(f"### Cold start ({COLD_REPETITIONS} repetitions each)")
        lines.append("")
        lines.append("| measurement | median ms | p99 ms | min ms | max ms |")
        lines.append("|---|---:|---:|---:|---:|")
        for label, values in values_of.items():
            lines.append(f"| {label} | {ms(statistics.median(values))} | {ms(percentile(values, 99))} | "
                         f"{ms(min(values))} | {ms(max(values))} |")
        lines.append("")
    elif cold:
        base, this = cold.values()
        lines.append(f"### Cold start, two binaries interleaved ({COLD_REPETITIONS} repetitions each)")
        lines.append("")
        lines.append(f"Baseline `{BASELINE}` ({describe_binary(BASELINE)}) and this `{EDDY}` "
                     f"({describe_binary(EDDY)}) in turn every repetition, the order alternating.")
        lines.append("")
        lines.append("| measurement | baseline median ms | this median ms | this/baseline | baseline min–max ms | this min–max ms |")
        lines.append("|---|---:|---:|---:|---|---|")
        for label in base:
            b, t = base[label], this[label]
            lines.append(f"| {label} | {ms(statistics.median(b))} | {ms(statistics.median(t))} | "
                         f"{statistics.median(t) / statistics.median(b):.2f}× | "
                         f"{ms(min(b))}–{ms(max(b))} | {ms(min(t))}–{ms(max(t))} |")
        lines.append("")
    if redeploy:
        lines.append(f"### Redeploying a Python function ({REDEPLOY_REPETITIONS} repetitions, a new node each)")
        lines.append("")
        lines.append("Deploy-to-ready (upload, compile, first `200`) after the component is built: "
                     "the first Python function on a new node, then the same function with one line "
                     "of `app.py` changed, then another Python function (the `eddy new` template). "
                     "The cold-start section's new-component rows run without the incremental cache.")
        lines.append("")
        lines.append("| deploy | node | median ms | min ms | max ms |")
        lines.append("|---|---|---:|---:|---:|")
        for label, rows in redeploy.items():
            for what, values in rows.items():
                lines.append(f"| {what} | {label} | {ms(statistics.median(values))} | "
                             f"{ms(min(values))} | {ms(max(values))} |")
        lines.append("")
    if queues:
        lines.append("### Durable queues on SQLite (publish → consume → ack)")
        lines.append("")
        lines.append(f"{QUEUE_PUBLISHERS} publisher threads post batches of {QUEUE_PUBLISH_CHUNK} messages "
                     "to the control API while the consumer (the Rust hello, warm instances, "
                     f"max concurrency {QUEUE_CONSUMER_CONCURRENCY}) drains the queue; the clock runs from the "
                     "first publish until the queue is empty with every message acknowledged. Every "
                     "publish, claim and acknowledgement is committed with `synchronous = FULL` (fsync) "
                     "before it is answered; commits are grouped.")
        lines.append("")
        lines.append("| batch size | messages | messages/s (end to end) | publish only messages/s | messages delivered | failed attempts |")
        lines.append("|---:|---:|---:|---:|---:|---:|")
        for batch in QUEUE_BATCHES:
            r = queues[batch]
            lines.append(f"| {batch} | {r['messages']} | {r['rate']:.0f} | {r['publish_rate']:.0f} | "
                         f"{r['deliveries']} | {r['failed']} |")
        lines.append("")
        lat = queues["latency"]
        lines.append(f"Delivery latency: {lat['sent']} messages published one at a time at "
                     f"{QUEUE_LATENCY_RATE}/s, each relayed by the consumer (misbehave `relay`, warm) to a local "
                     f"recorder; from the publish being answered (on disk) to the delivery reaching the recorder: "
                     f"p50 {ms(lat['p50_ms'])} ms, p99 {ms(lat['p99_ms'])} ms, max {ms(lat['max_ms'])} ms "
                     f"({lat['count']} of {lat['sent']} arrived).")
        lines.append("")
    if ws:
        lines.append("### WebSockets held by the node")
        lines.append("")
        lines.append(f"{ws['idle']} idle connections to one function (misbehave `ws`, warm instances) opened by an asyncio "
                     f"client on the same machine; the open-file limit here is {ws['file_limit']} per process and both "
                     "ends of each connection are on this machine, so that is as many as it allows. Then "
                     f"{WS_ACTIVE} more connections each send {WS_ROUNDS} text messages one after another, each echoed "
                     "by the function (an invocation per message), beside the idle ones.")
        lines.append("")
        lines.append("| idle connections | opened in s | node RSS before → with them MiB | RSS per idle connection KiB | "
                     "projected for 100,000 MiB | node CPU while idle (% of one core) | messages | round trip p50 ms | p99 ms |")
        lines.append("|---:|---:|---|---:|---:|---:|---:|---:|---:|")
        lines.append(f"| {ws['idle']} | {ws['open_s']:.1f} | {ws['rss_before_mib']:.0f} → {ws['rss_idle_mib']:.0f} | "
                     f"{ws['rss_per_connection_kib']:.1f} | {ws['rss_per_connection_kib'] * 100_000 / 1024:.0f} | "
                     f"{ws['idle_cpu_pct']:.2f} | {ws['messages']} | {ms(ws['rtt_p50_ms'])} | {ms(ws['rtt_p99_ms'])} |")
        lines.append("")
    if wait:
        lines.append(f"### Cost of waiting ({WAITERS} concurrent requests, each waiting {WAIT_MS} ms on `wasi:clocks`)")
        lines.append("")
        lines.append("| succeeded | total s | node CPU s (whole run) | node CPU % of one core (whole run) | "
                     f"node CPU % of one core while all wait ({STEADY_WAIT_FROM_S}–{STEADY_WAIT_TO_S} s) | "
                     "RSS per in-flight invocation KiB | node RSS before → peak MiB |")
        lines.append("|---:|---:|---:|---:|---:|---:|---|")
        lines.append(f"| {wait['ok']}/{WAITERS} | {wait['total_s']:.2f} | {wait['node_cpu_s']:.2f} | "
                     f"{wait['node_cpu_pct_of_core']:.1f} | {wait['steady_cpu_pct_of_core']:.1f} | "
                     f"{wait['rss_per_inflight_kib']:.0f} | "
                     f"{wait['rss_before_mib']:.0f} → {wait['rss_peak_mib']:.0f} |")
        lines.append("")
        n = max(wait["metered_invocations"], 1)
        lines.append("Metered by eddy for the same invocations (`eddy stats`): "
                     f"{wait['metered_invocations']} invocations, wall {wait['metered_wall_ms'] / 1000:.1f} s in all "
                     f"({wait['metered_wall_ms'] / n:.1f} ms each), guest CPU {wait['metered_cpu_ms']:.1f} ms in all "
                     f"({wait['metered_cpu_ms'] / n * 1000:.1f} µs each): CPU is "
                     f"{100 * wait['metered_cpu_ms'] / max(wait['metered_wall_ms'], 1e-9):.3f}% of wall.")
        lines.append("")
    if dens:
        lines.append(f"### Density ({DENSITY_FUNCTIONS} idle Rust hello functions)")
        lines.append("")
        lines.append("| RSS empty MiB | RSS loaded MiB | RSS per function KiB | RSS after restart MiB | deploying all s | restart to ready s |")
        lines.append("|---:|---:|---:|---:|---:|---:|")
        lines.append(f"| {dens['rss_empty_mib']:.0f} | {dens['rss_loaded_mib']:.0f} | {dens['rss_per_function_kib']:.0f} | "
                     f"{dens['rss_after_restart_mib']:.0f} | {dens['deploy_all_s']:.1f} | {dens['restart_ready_s']:.2f} |")
        lines.append("")
        lines.append(f"The console's overview of those {DENSITY_FUNCTIONS} functions, each called once "
                     f"({CONSOLE_REFRESHES} refreshes, one after another; the page refreshes every 5 s):")
        lines.append("")
        lines.append("| `GET /v1/functions` median ms | `GET /v1/stats` median ms | `GET /v1/stats` p99 ms | node CPU per refresh ms | the same stats one function at a time: ms, node CPU ms |")
        lines.append("|---:|---:|---:|---:|---|")
        lines.append(f"| {dens['overview_functions_ms']:.1f} | {dens['overview_stats_ms']:.1f} | "
                     f"{dens['overview_stats_p99_ms']:.1f} | {dens['overview_cpu_ms']:.1f} | "
                     f"{dens['overview_one_by_one_ms']:.0f}, {dens['overview_one_by_one_cpu_ms']:.0f} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def prepend(section):
    header = "# Benchmark results\n\nProduced by `bench/run`; newest first. Raw figures next to the ratios.\n\n"
    old = RESULTS.read_text() if RESULTS.exists() else header
    body = old[len(header):] if old.startswith(header) else old
    RESULTS.write_text(header + section + "\n" + body)


def main():
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    try:
        with tempfile.TemporaryDirectory(prefix="eddy-bench-") as tmp:
            work = Path(tmp)
            info = machine()
            sections = os.environ.get("BENCH_SECTIONS", "throughput,guestcall,cold,redeploy,wait,density,queues,websockets,cluster,tls").split(",")
            tput = throughput(work) if "throughput" in sections else None
            binaries = [BASELINE, EDDY] if BASELINE else [EDDY]
            cold = cold_starts(work, binaries) if "cold" in sections else None
            redeploy = redeploys(work) if "redeploy" in sections else None
            wait = cost_of_waiting(work) if "wait" in sections else None
            dens = density(work) if "density" in sections else None
            calls = guest_calls() if "guestcall" in sections else None
            queues = queue_throughput(work) if "queues" in sections else None
            ws = websockets(work) if "websockets" in sections else None
            clustered = cluster(work) if "cluster" in sections else None
            tls = tls_throughput(work) if "tls" in sections else None
            section = report(info, tput, cold, wait, dens, calls, redeploy, queues, ws)
            if tls:
                section = section.rstrip("\n") + "\n" + tls_report(tls)
            if clustered:
                section = section.rstrip("\n") + "\n" + cluster_report(clustered)
            print(section)
            if os.environ.get("BENCH_NO_RECORD") != "1":
                prepend(section)
                log(f"recorded in {RESULTS.relative_to(ROOT)}")
    finally:
        stop_all()


if __name__ == "__main__":
    main()
