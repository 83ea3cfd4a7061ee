"""Prometheus metrics of one app (its own ``CollectorRegistry``: two apps in one process never mix)."""

from __future__ import annotations

from typing import Any

__all__ = ["Metrics"]

_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """Requests, latency per route and per stage, batch sizes, queue depth and cache hits."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("embedstack_requests", "HTTP requests by route and status code",
                                ["route", "status"], registry=r)
        self.latency = Histogram("embedstack_request_seconds", "request latency by route", ["route"],
                                 buckets=_LATENCY, registry=r)
        self.stage = Histogram("embedstack_stage_seconds", "seconds per search stage (encode, search, fusion, rerank)",
                               ["stage"], buckets=_LATENCY, registry=r)
        self.batch_inputs = Histogram("embedstack_batch_inputs", "inputs per merged model batch", ["model"],
                                      buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048), registry=r)
        self.batch_requests = Histogram("embedstack_batch_requests", "requests merged into one model batch", ["model"],
                                        buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=r)
        self.batch_seconds = Histogram("embedstack_batch_seconds", "model time per merged batch", ["model"],
                                       buckets=_LATENCY, registry=r)
        self.inputs = Counter("embedstack_inputs", "inputs (texts or pairs) run through each model", ["model"], registry=r)
        self.tokens = Counter("embedstack_tokens", "tokens run through each model", ["model"], registry=r)
        self.queue = Gauge("embedstack_queue_depth", "inputs waiting per model", ["model"], registry=r)
        self.in_flight = Gauge("embedstack_requests_in_flight", "requests being handled", registry=r)
        self.cache_hits = Counter("embedstack_cache_hits", "query-embedding cache hits", ["model"], registry=r)
        self.cache_misses = Counter("embedstack_cache_misses", "query-embedding cache misses", ["model"], registry=r)
        self.cache_hit_rate = Gauge("embedstack_cache_hit_rate", "hits / lookups of the query-embedding cache",
                                    registry=r)
        self.rejected = Counter("embedstack_rejected", "requests refused because a model queue was full", ["model"],
                                registry=r)
        self.abandoned = Counter("embedstack_abandoned", "requests whose client left before the answer; their "
                                 "work was cancelled", registry=r)

    def observe_batch(self, model: str, n_inputs: int, n_tokens: int, n_requests: int, seconds: float) -> None:
        self.batch_inputs.labels(model).observe(n_inputs)
        self.batch_requests.labels(model).observe(n_requests)
        self.batch_seconds.labels(model).observe(seconds)
        self.inputs.labels(model).inc(n_inputs)
        self.tokens.labels(model).inc(n_tokens)

    def observe_cache(self, model: str, hits: int, misses: int) -> None:
        if hits:
            self.cache_hits.labels(model).inc(hits)
        if misses:
            self.cache_misses.labels(model).inc(misses)

    def render(self, queues: dict[str, int], hit_rate: float) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        for name, depth in queues.items():
            self.queue.labels(name).set(depth)
        self.cache_hit_rate.set(hit_rate)
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def stages(self, timings: dict[str, Any]) -> None:
        for stage, seconds in timings.items():
            self.stage.labels(stage.split(":")[0]).observe(float(seconds))
