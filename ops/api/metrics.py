"""`/metrics`: the Prometheus exposition, optionally behind a token, and when the API runs in a process of
its own (`ops.api.process`) one exposition for both processes (`merge`), so a scrape still sees everything
`serve` counts."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Iterable

from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from chargeops.settings import Settings

Render = Callable[[], Awaitable[bytes]]
# Families whose samples count something: two processes' samples of the same series add up.
_ADDITIVE = frozenset({"counter", "histogram", "summary"})


async def this_process() -> bytes:
    return generate_latest()


def metrics_endpoint(
    token: str | None, render: Render = this_process
) -> Callable[[Request], Awaitable[Response]]:
    """Prometheus exposition at exactly `/metrics` (a mounted app would redirect to `/metrics/`); with a
    `token`, only for `Authorization: Bearer <token>` (compared in constant time)."""
    expected = f"Bearer {token}".encode() if token else None

    async def metrics(request: Request) -> Response:
        if expected is not None:
            given = request.headers.get("authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                return Response("metrics need the metrics token\n", status_code=401)
        return Response(await render(), media_type=CONTENT_TYPE_LATEST)

    return metrics


def add_metrics(app: FastAPI, settings: Settings, render: Render = this_process) -> None:
    token = settings.metrics_token.get_secret_value() if settings.metrics_token else None
    app.add_api_route("/metrics", metrics_endpoint(token, render), methods=["GET"], include_in_schema=False)


def metrics_app(settings: Settings, render: Render = this_process) -> FastAPI:
    """`/metrics` alone, for its own listener (`metrics_port`)."""
    app = FastAPI(title="chargeops metrics", openapi_url=None, docs_url=None, redoc_url=None)
    add_metrics(app, settings, render)
    return app


class _Families:
    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self._families


def merge(first: bytes, second: bytes) -> bytes:
    """One exposition of two processes' (text format): every family of either; a series both have (same
    sample name and labels) is added up when it counts (counter, histogram, summary; not `_created`), else
    `first`'s value is kept (a gauge both export is `first`'s, the gateway's)."""
    families: dict[str, Metric] = {}
    for text in (first, second):
        for family in text_string_to_metric_families(text.decode()):
            have = families.setdefault(family.name, family)
            if have is family:
                continue
            index = {(s.name, tuple(sorted(s.labels.items()))): i for i, s in enumerate(have.samples)}
            for sample in family.samples:
                i = index.get((sample.name, tuple(sorted(sample.labels.items()))))
                if i is None:
                    have.samples.append(sample)
                elif have.type in _ADDITIVE and not sample.name.endswith("_created"):
                    old = have.samples[i]
                    have.samples[i] = old._replace(value=old.value + sample.value)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families.values()))
    return generate_latest(registry)
