"""What a process counts and measures, in Prometheus form (served at ``/metrics``, see engine/runtime/http.py).

Each Metrics object has its own registry, not prometheus_client's global one, so a test (or one process
hosting several engines) can build as many as it likes and read each one alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from engine.contract import ModelTime

# Seconds. Time to first token spans a warm short prompt on a GPU (tens of ms) to a long prompt queued
# behind others on a CPU (many seconds); a whole answer runs up to minutes.
TTFT_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("parley_requests", "Requests to answer, by front end", ["platform"], registry=r)
        self.errors = Counter(
            "parley_errors", "Requests that ended in an error, by front end and kind", ["platform", "kind"], registry=r
        )
        self.tokens_in = Counter("parley_tokens_in", "Prompt tokens the model read", ["platform"], registry=r)
        self.tokens_out = Counter("parley_tokens_out", "Tokens the model wrote", ["platform"], registry=r)
        self.time_to_first_token = Histogram(
            "parley_time_to_first_token_seconds",
            "From a request's arrival at the engine to the first text shown",
            ["platform"],
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.latency = Histogram(
            "parley_request_duration_seconds",
            "From a request's arrival at the engine to its finished answer",
            ["platform"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge("parley_queue_depth", "Generation requests waiting for the model", registry=r)
        self.generations_running = Gauge("parley_generations_running", "Generations in progress", registry=r)
        self.active_conversations = Gauge(
            "parley_active_conversations", "Conversations with an answer being written", registry=r
        )
        self.rate_limit_waits = Counter(
            "parley_rate_limit_waits",
            "Platform calls held back by a rate limit (cause: 429 from the platform, or throttle by the client)",
            ["platform", "cause"],
            registry=r,
        )
        # Incremented by `parley worker` when it takes over a job whose worker died (XAUTOCLAIM).
        self.jobs_reclaimed = Counter("parley_jobs_reclaimed", "Worker jobs reclaimed from a dead worker", registry=r)
        self.jobs_dropped = Counter(
            "parley_jobs_dropped", "Worker jobs dropped because their requester stopped waiting", registry=r
        )

    def watch_generator(self, stats: Callable[[], Mapping[str, int]]) -> None:
        """Read queue depth and running generations from ``stats()`` at each scrape."""
        self.queue_depth.set_function(lambda: stats()["waiting"])
        self.generations_running.set_function(lambda: stats()["running"])

    def watch_model_time(self, spent: Callable[[], ModelTime]) -> None:
        """Where the model's time goes, read at each scrape from the generator running it in this process."""
        self.registry.register(_ModelTimeCollector(spent))

    @contextmanager
    def request(self, platform: str) -> Iterator[Observation]:
        """Count a request; an exception leaving the block is counted as an error of its class. A
        request abandoned by its caller (GeneratorExit, CancelledError) is not an error."""
        self.requests.labels(platform).inc()
        try:
            yield Observation(self, platform)
        except Exception as exc:
            self.errors.labels(platform, type(exc).__name__).inc()
            raise

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _ModelTimeCollector(Collector):
    def __init__(self, spent: Callable[[], ModelTime]) -> None:
        self.spent = spent

    def collect(self) -> Iterator[CounterMetricFamily]:
        t = self.spent()
        seconds = CounterMetricFamily(
            "parley_model_seconds", "Time the model computed: decode steps and prompt chunks", labels=["phase"]
        )
        tokens = CounterMetricFamily(
            "parley_model_tokens", "Reply tokens from decode steps, prompt tokens read", labels=["phase"]
        )
        for phase, secs, count in (
            ("decode", t.decode_seconds, t.decode_tokens),
            ("prefill", t.prefill_seconds, t.prefill_tokens),
        ):
            seconds.add_metric([phase], secs)
            tokens.add_metric([phase], count)
        # decode tokens / decode steps = how many answers a step served on average (the batch's use).
        steps = CounterMetricFamily("parley_decode_steps", "Decode steps (one token for every answer in the batch)")
        steps.add_metric([], t.decode_steps)
        yield from (seconds, tokens, steps)


class Observation:
    """One request's timings and tokens, reported as they happen."""

    def __init__(self, metrics: Metrics, platform: str) -> None:
        self.metrics, self.platform = metrics, platform
        self.started = time.perf_counter()
        self.first_shown = False

    def shown(self) -> None:
        """Text reached the caller; the first time is the time to first token."""
        if not self.first_shown:
            self.first_shown = True
            self.metrics.time_to_first_token.labels(self.platform).observe(time.perf_counter() - self.started)

    def finished(self, prompt_tokens: int, completion_tokens: int) -> None:
        m = self.metrics
        m.latency.labels(self.platform).observe(time.perf_counter() - self.started)
        m.tokens_in.labels(self.platform).inc(prompt_tokens)
        m.tokens_out.labels(self.platform).inc(completion_tokens)
