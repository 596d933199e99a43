"""The server's micro-batcher and metrics, apart from HTTP and the model.

A `Batcher` owns one endpoint's bounded queue of requests and the worker that gathers them (up to
max_batch texts, or until the oldest has waited max_wait_ms), runs them in the inference thread as
forward passes of similar lengths (`length_groups`), and hands each request its own rows back.
`Metrics` keeps prometheus_client's counters and histograms; everything here is updated on the event loop only.
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass

GROUP_SLACK = 16  # tokens of padding a forward may always absorb (below it, one more forward costs more)


def length_groups(lengths: list[int], max_batch: int, cap: int) -> list[list[int]]:
    """Indices in forward passes: sorted by length (capped at the truncation limit), at most max_batch
    each, a new pass when a text is over twice the pass's shortest + GROUP_SLACK tokens, so padding
    at most doubles a pass's work."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    groups: list[list[int]] = []
    for i in order:
        if groups and len(groups[-1]) < max_batch and min(lengths[i], cap) <= 2 * min(lengths[groups[-1][0]], cap) + GROUP_SLACK:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


class MemoryTrim:
    """Hands freed heap memory back to the OS (glibc's malloc_trim), at most once per `every` seconds.

    glibc keeps what a thread frees in that thread's arena, and batches of ever-new shapes (batch size
    x length) then grow the RSS for thousands of batches: +28% over 400 random batches of
    all-MiniLM-L6-v2, +4% with a trim after each. A call takes ~2 ms; off glibc it does nothing.
    """

    def __init__(self, every: float = 1.0):
        import ctypes

        try:
            self.trim = ctypes.CDLL(None).malloc_trim
        except (AttributeError, OSError):
            self.trim = None
        self.every, self.last = every, 0.0

    def __call__(self) -> None:
        if self.trim is not None and time.monotonic() - self.last >= self.every:
            self.trim(0)
            self.last = time.monotonic()


def run_grouped(backend, endpoint: str, items: list, max_batch: int, trim=None) -> tuple[list[dict], list[int], float]:
    """(rows in item order, texts per forward, seconds): the whole job of the inference thread."""
    t0 = time.perf_counter()
    lengths = backend.lengths(endpoint, items)
    out: list = [None] * len(items)
    groups = length_groups(lengths, max_batch, backend.max_length)
    for g in groups:
        for i, row in zip(g, backend.run(endpoint, [items[i] for i in g], [lengths[i] for i in g])):
            out[i] = row
    if trim is not None:
        trim()
    return out, [len(g) for g in groups], time.perf_counter() - t0


# ---- batching ----------------------------------------------------------------------------------


@dataclass
class Pending:
    items: list
    future: asyncio.Future
    t0: float  # loop time of arrival
    tokens: int = 0  # its inputs' tokens (each capped at the model's length): what the token budget counts


class Batcher:
    """One endpoint's bounded queue and the worker that turns its requests into forward passes."""

    def __init__(self, endpoint: str, backend, executor, metrics: Metrics, max_batch: int, max_wait_ms: float, max_queue: int,
                 trim: MemoryTrim | None = None, max_tokens: int | None = None):
        self.endpoint, self.backend, self.executor, self.metrics, self.trim = endpoint, backend, executor, metrics, trim
        self.max_batch, self.max_wait, self.max_tokens = max_batch, max_wait_ms / 1000, max_tokens
        self.queue: asyncio.Queue[Pending] = asyncio.Queue(max_queue)
        self.carry: Pending | None = None  # taken from the queue but left for the next batch (too big)
        self.running: asyncio.Future | None = None  # the batch in the inference thread now
        self.formed: list[Pending] = []  # the next batch, formed, waiting for the thread
        self.largest_tokens = 0  # the most tokens any batch held (tests check it against the budget)

    def submit(self, items: list) -> asyncio.Future:
        """Queue a request; asyncio.QueueFull when the queue is full. Its tokens are counted here (the budget's unit)."""
        loop = asyncio.get_running_loop()
        if self.depth() >= self.queue.maxsize:  # waiting requests, the formed next batch included, stay bounded
            raise asyncio.QueueFull
        tokens = sum(min(n, self.backend.max_length) for n in self.backend.lengths(self.endpoint, items)) if self.max_tokens else 0
        p = Pending(items, loop.create_future(), loop.time(), tokens)
        self.queue.put_nowait(p)
        return p.future

    def depth(self) -> int:
        """Requests waiting: queued, held over, or in the next batch formed while the current one runs."""
        return self.queue.qsize() + (self.carry is not None) + len(self.formed)

    async def next_request(self) -> Pending:
        """The oldest request whose client still waits (one that went away is skipped, never run)."""
        while True:
            p = self.carry if self.carry is not None else await self.queue.get()
            self.carry = None
            if not p.future.done():
                return p

    async def gather(self) -> list[Pending]:
        """The oldest request, then more until max_batch texts or the token budget (--max-batch-tokens) is full,
        or the oldest has waited max_wait_ms; while the previous batch still runs, requests keep joining this
        one (the next batch forms during the current one: the one inference thread is never idle for a timer)."""
        loop = asyncio.get_running_loop()
        first = await self.next_request()
        batch, n, tokens = [first], len(first.items), first.tokens
        deadline = first.t0 + self.max_wait
        while n < self.max_batch and (self.max_tokens is None or tokens < self.max_tokens):
            if self.queue.empty():
                busy = self.running is not None and not self.running.done()
                wait = None if busy else deadline - loop.time()
                if wait is not None and wait <= 0:
                    break
                getter = asyncio.ensure_future(self.queue.get())
                done, _ = await asyncio.wait({getter, *([self.running] if busy else [])}, timeout=wait,
                                             return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:  # the previous batch ended, or the deadline came: go with what we have
                    getter.cancel()
                    if busy and self.max_wait and loop.time() < deadline:
                        continue  # the thread is free now; the oldest may still wait for company until its deadline
                    break
                nxt = getter.result()
            else:
                nxt = self.queue.get_nowait()
            if nxt.future.done():
                continue
            over_tokens = self.max_tokens is not None and tokens + nxt.tokens > self.max_tokens
            if n + len(nxt.items) > self.max_batch or over_tokens:
                self.carry = nxt
                break
            batch.append(nxt)
            n, tokens = n + len(nxt.items), tokens + nxt.tokens
        self.largest_tokens = max(self.largest_tokens, tokens)
        return batch

    async def work(self) -> None:
        while True:
            batch = await self.gather()
            if self.running is not None:
                self.formed = batch
                await self.running  # one inference thread: this batch goes when the previous one is done
                self.formed = []
            self.running = asyncio.ensure_future(self.run(batch))

    async def run(self, batch: list[Pending]) -> None:
        loop = asyncio.get_running_loop()
        batch = [p for p in batch if not p.future.done()]  # clients that left while the batch waited
        if not batch:
            return
        items = [x for p in batch for x in p.items]
        try:
            rows, sizes, seconds = await loop.run_in_executor(
                self.executor, run_grouped, self.backend, self.endpoint, items, self.max_batch, self.trim)
        except Exception as e:  # a bug or out of memory, not bad input (inputs are checked before queueing)
            self.metrics.failed(self.endpoint)
            print(f"bertkit serve: {self.endpoint}: a batch of {len(batch)} requests failed ({type(e).__name__}: {e})"
                  + ("; running them one by one" if len(batch) > 1 else ""), file=sys.stderr)
            if len(batch) == 1:
                batch[0].future.done() or batch[0].future.set_exception(BatchFailed(e))
            else:  # alone, each request gets its own answer: only the one(s) the model cannot run fail
                for p in batch:
                    await self.run([p])
            return
        self.metrics.forward(self.endpoint, sizes, seconds, sum(r.get("truncated", False) for r in rows))
        start = 0
        for p in batch:
            if not p.future.done():  # the client may have gone away
                p.future.set_result(rows[start:start + len(p.items)])
            start += len(p.items)


class BatchFailed(Exception):
    """The model raised on a request's inputs: its answer is a 500 saying so; the server goes on."""

    def __init__(self, cause: Exception):
        super().__init__(f"the model failed on this request ({type(cause).__name__}: {cause}); other requests are unaffected.")


# ---- metrics -----------------------------------------------------------------------------------


class Metrics:
    """The server's metrics in a prometheus_client registry of its own (two servers in one process keep theirs apart),
    with prometheus_client's ProcessCollector (process_resident_memory_bytes, process_cpu_seconds_total, open fds...).
    Queue depths and readiness are read when scraped, from the function `watch` is given. Updated on the event loop."""

    LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
    SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256)

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

        self.registry = r = CollectorRegistry()
        self.requests = Counter("bertkit_requests", "HTTP requests answered, by path and status code.", ["path", "code"], registry=r)
        self.errors = Counter("bertkit_errors", "HTTP requests answered with a 4xx or 5xx code.", ["path", "code"], registry=r)
        self.latency = Histogram("bertkit_request_duration_seconds", "Time from the request's arrival to its response.", ["path"],
                                 buckets=self.LATENCY, registry=r)
        self.batch = Histogram("bertkit_batch_size", "Texts per forward pass.", ["endpoint"], buckets=self.SIZES, registry=r)
        self.batch_seconds = Histogram("bertkit_batch_seconds", "Inference time of a gathered batch (tokenising and all its forward passes).",
                                       ["endpoint"], buckets=self.LATENCY, registry=r)
        self.texts = Counter("bertkit_texts", "Texts run through the model.", ["endpoint"], registry=r)
        self.truncated = Counter("bertkit_truncated_texts", "Texts cut to the model's maximum length.", ["endpoint"], registry=r)
        self.failures = Counter("bertkit_batch_failures", "Gathered batches whose inference raised (their requests got a 500).",
                                ["endpoint"], registry=r)
        self.inflight = Gauge("bertkit_inflight_requests", "Requests received and not yet answered.", registry=r)
        ProcessCollector(registry=r)
        self._now = lambda: ({}, 0, False)
        r.register(self)  # collect() below: the values read at scrape time

    def watch(self, now) -> None:
        """now() -> ({endpoint: queue depth}, queue capacity, ready)."""
        self._now = now

    def describe(self):
        return []  # nothing to check at registration: collect() reads live values

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        depths, capacity, ready = self._now()
        depth = GaugeMetricFamily("bertkit_queue_depth", "Requests waiting for a batch.", labels=["endpoint"])
        for e, n in sorted(depths.items()):
            depth.add_metric([e], n)
        yield depth
        yield GaugeMetricFamily("bertkit_queue_capacity", "Requests an endpoint's queue holds before answering 503.", value=capacity)
        yield GaugeMetricFamily("bertkit_ready", "1 when the model is loaded and the server is not draining.", value=int(ready))

    def request(self, path: str, code: int, seconds: float) -> None:
        self.requests.labels(path, str(code)).inc()
        if code >= 400:
            self.errors.labels(path, str(code)).inc()
        self.latency.labels(path).observe(seconds)

    def forward(self, endpoint: str, sizes: list[int], seconds: float, truncated: int) -> None:
        batch = self.batch.labels(endpoint)
        for n in sizes:
            batch.observe(n)
        self.batch_seconds.labels(endpoint).observe(seconds)
        self.texts.labels(endpoint).inc(sum(sizes))
        self.truncated.labels(endpoint).inc(truncated)

    def failed(self, endpoint: str) -> None:
        self.failures.labels(endpoint).inc()

    def render(self) -> bytes:
        """The text format (prometheus_client.CONTENT_TYPE_LATEST)."""
        from prometheus_client import generate_latest

        return generate_latest(self.registry)
