"""The HTTP API: read-only lookups of recommendations, model info, health and metrics.

=====================================================  ==========================================
``GET /users/{user_id}/recommendations?n=10&genre=``   the user's top n (1..100), optionally of
                                                       one genre; unknown users get the popular
                                                       list with ``source: popular``;
                                                       ``&explain=true`` adds each movie's
                                                       "because you rated …"
``GET /movies/{movie_id}/similar?n=10``                the movie's n nearest movies (1..100) by
                                                       the current model's item factors
``GET /model``                                         the current model and its evaluation
``GET /pipeline?batches=60``                           the job's newest micro-batches and totals
``GET /healthz``                                       200 when Redis answers and a model is
                                                       published, else 503 with the reason
``GET /metrics``                                       Prometheus text format
``GET /console`` (``/`` redirects there)               the live console in a browser
``POST /recommendations``                              a list for a visitor without an id, from
                                                       the movies (and stars) they give
``POST /ratings``                                      one rating or a list, sent to the ratings
                                                       topic (202 with their event ids); needs
                                                       the ingest token, off without one
=====================================================  ==========================================

Bad parameters answer 422 with a message naming what is allowed; Redis down, Kafka down
(for a write) or no model answer 503 with ``Retry-After``; a value in Redis that does
not follow the layout answers 502. Answers never carry internals (addresses, key names,
tracebacks): those go to the log, and any other error is logged and answered 500 with a
fixed message. Metrics are per process (with several workers, each worker counts its
own requests).
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.resources import files
from typing import Annotated, Any

from fastapi import FastAPI, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi_offline import FastAPIOffline
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from producer.settings import KafkaSettings
from recstream_base.ids import MAX_ID
from serving.anonymous import VisitorRequest
from serving.answers import (
    MAX_N,
    Health,
    ModelInfo,
    PipelineView,
    Recommendations,
    SimilarMovies,
    VisitorRecommendations,
)
from serving.client import AsyncRecommendationClient
from serving.errors import RedisUnavailableError, ServingError
from serving.ingest import (
    RATINGS_BODY,
    Accepted,
    RatingSender,
    check_token,
    events_from_body,
    json_body,
)
from serving.layout import PIPELINE_KEPT
from serving.settings import ApiSettings, RedisSettings

__all__ = ["app_from_env", "create_app"]

_log = logging.getLogger("recstream.serving")


class _Metrics:
    """The Prometheus series of one app (own registry, so tests can build many apps)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "recstream_http_requests", "HTTP requests answered.", ["route", "status"],
            registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "recstream_http_request_seconds", "Time to answer a request.", ["route"],
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=self.registry,
        )  # fmt: skip
        self.redis_errors = Counter(
            "recstream_redis_errors", "Redis calls that failed (down, refused, or bad data).",
            ["kind"], registry=self.registry,
        )  # fmt: skip
        self.model_version = Gauge(
            "recstream_model_version", "Current model version (-1: none).",
            registry=self.registry,
        )  # fmt: skip
        self.model_age = Gauge(
            "recstream_model_age_seconds", "Seconds since the current model was trained.",
            registry=self.registry,
        )  # fmt: skip


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status, headers=headers)


def _allowed(error: dict[str, Any]) -> str:
    where = ".".join(str(part) for part in error.get("loc", ()) if part not in ("path", "query"))
    rules = {
        "user_id": f"user_id must be an integer in 1..{MAX_ID}",
        "movie_id": f"movie_id must be an integer in 1..{MAX_ID}",
        "n": f"n must be an integer in 1..{MAX_N}",
        "batches": f"batches must be an integer in 1..{PIPELINE_KEPT}",
        "genre": "genre must be 1-64 characters, e.g. Comedy",
        "explain": "explain must be true or false",
    }
    return rules.get(where, f"{where}: {error.get('msg', 'invalid')}")


_METRICS_EXAMPLE = (
    'recstream_http_requests_total{route="/users/{user_id}/recommendations",status="200"} 1523.0\n'
    "recstream_model_version 12.0\n"
)
_CONSOLE = files("serving").joinpath("console.html").read_text(encoding="utf-8")


def create_app(
    redis_settings: RedisSettings | None = None,
    api_settings: ApiSettings | None = None,
    kafka_settings: KafkaSettings | None = None,
) -> FastAPI:
    """The API over the configured Redis (and Kafka, for writes).

    The Redis client opens with the app; the Kafka producer on the first write.
    """
    redis_settings = redis_settings or RedisSettings()
    api = api_settings or ApiSettings()
    sender = RatingSender(kafka_settings or KafkaSettings(), api.ingest_timeout_s)
    retry = {"Retry-After": str(api.retry_after_s)}
    metrics = _Metrics()
    state: dict[str, AsyncRecommendationClient] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        state["client"] = AsyncRecommendationClient(redis_settings)
        # What the app holds from its start on lives as long as it does: frozen, it is out
        # of the garbage collector's full passes. Unfrozen, two such passes (27 and 72 ms)
        # in a worker's first seconds under 500 req/s held requests up to 112 ms.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            await state.pop("client").close()
            await run_in_threadpool(sender.close)

    # FastAPIOffline: /docs and /redoc load Swagger UI and ReDoc from the package's own
    # files, not from a CDN, so they work without internet.
    app = FastAPIOffline(
        title="recstream",
        summary="Fresh movie recommendations, looked up by user id.",
        version="0.1.0",
        lifespan=lifespan,
    )

    def client() -> AsyncRecommendationClient:
        return state["client"]

    @app.exception_handler(RequestValidationError)
    async def bad_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, "; ".join(sorted({_allowed(e) for e in exc.errors()})))

    @app.exception_handler(ServingError)
    async def serving_error(_: Request, exc: ServingError) -> JSONResponse:
        if exc.metric_kind is not None:
            metrics.redis_errors.labels(exc.metric_kind).inc()
        _log.log(exc.log_level, "%s", exc)  # addresses and keys stay in the log
        message = str(exc) if exc.public_message is None else exc.public_message
        return _error(exc.status_code, message, retry if exc.retry_later else None)

    failures: dict[int | str, dict[str, Any]] = {
        422: {"description": "A parameter is out of range; the message says what is allowed."},
        502: {"description": "A value in Redis does not follow the layout."},
        503: {"description": "Redis is down or no model is published; see Retry-After."},
    }

    @app.get(
        "/users/{user_id}/recommendations",
        response_model=Recommendations,
        responses=failures,
    )
    async def recommendations(
        user_id: Annotated[int, Path(ge=1, le=MAX_ID, description="The user's id.")],
        n: Annotated[int, Query(ge=1, le=MAX_N, description="How many movies.")] = 10,
        genre: Annotated[
            str | None,
            Query(min_length=1, max_length=64, description="Only movies of this genre."),
        ] = None,
        explain: Annotated[
            bool,
            Query(description='Add each movie\'s "because you rated …" (its `because`).'),
        ] = False,
    ) -> Response:
        """The user's top n, best first, with titles; unknown users get the popular list.

        With `explain=true`, each of the first movies of a personal list names the user's
        rated movie that raised its score the most, from the ALS and short-term parts.
        """
        found = await client().recommendations(user_id, n, genre=genre, explain=explain)
        # Serialised once by pydantic-core; FastAPI would validate and encode it again.
        # Without explain, ``because`` is left out rather than null on every movie.
        unasked = None if explain else {"movies": {"__all__": {"because"}}}
        return Response(found.model_dump_json(exclude=unasked), media_type="application/json")

    @app.get(
        "/movies/{movie_id}/similar",
        response_model=SimilarMovies,
        responses={**failures, 404: {"description": "The current model has not learned it."}},
    )
    async def similar(
        movie_id: Annotated[int, Path(ge=1, le=MAX_ID, description="The movie's id.")],
        n: Annotated[int, Query(ge=1, le=MAX_N, description="How many movies.")] = 10,
    ) -> Response:
        """The movie's n nearest movies by the current model's item factors, nearest first."""
        found = await client().similar(movie_id, n)
        return Response(found.model_dump_json(), media_type="application/json")

    @app.post("/recommendations", response_model=VisitorRecommendations, responses=failures)
    async def for_visitor(request: VisitorRequest) -> Response:
        """A list for a visitor without a user id, folded in from the movies they give.

        Against the current version's item factors, on the request path (the job's
        fold-in for the same ratings); the popular list when the model knows none of
        the movies. Nothing is stored.
        """
        movies = [(movie.movie_id, movie.rating) for movie in request.movies]
        try:
            found = await client().for_visitor(movies, request.n)
        except ValueError as exc:  # a movie given twice
            return _error(422, str(exc))
        return Response(found.model_dump_json(), media_type="application/json")

    @app.get("/model", response_model=ModelInfo, responses=failures)
    async def model() -> Response:
        """The current model version, when it was trained, its size and evaluation."""
        info = await client().model_info()
        return Response(info.model_dump_json(), media_type="application/json")

    @app.get("/pipeline", response_model=PipelineView, responses=failures)
    async def pipeline(
        batches: Annotated[
            int, Query(ge=1, le=PIPELINE_KEPT, description="How many of the newest batches.")
        ] = 60,
    ) -> Response:
        """The streaming job's newest micro-batches and what they add up to.

        Per batch: ratings stored and set aside, seconds, lag, model version, retrains,
        the live check against the served lists; over the window: ratings/s and the live
        hit rate beside the popular list's.
        """
        view = await client().pipeline(batches)
        return Response(view.model_dump_json(), media_type="application/json")

    @app.get("/healthz", response_model=Health, responses={503: {"model": Health}})
    async def healthz() -> Response:
        """200 when Redis answers and a model is published; otherwise 503 with the reason."""
        health = await client().health()
        if not health.redis:
            metrics.redis_errors.labels("unavailable").inc()
            _log.warning("%s", health.reason)
            health = health.model_copy(update={"reason": RedisUnavailableError.public_message})
        status = 200 if health.ok else 503
        headers = None if health.ok else retry
        return JSONResponse(health.model_dump(), status_code=status, headers=headers)

    @app.post(
        "/ratings",
        status_code=202,
        response_model=Accepted,
        openapi_extra={"requestBody": RATINGS_BODY},
        responses={
            401: {"description": "No or another ingest token (Authorization: Bearer …)."},
            403: {"description": "Rating over HTTP is off: RECSTREAM_API_INGEST_TOKEN unset."},
            422: {"description": "A rating is refused; the message names it and the field."},
            503: {"description": "Kafka did not take the ratings in time; see Retry-After."},
        },
    )
    async def post_ratings(request: Request) -> Response:
        """Send one rating or a list to the ratings topic; the streaming job takes them in.

        Checked with the streaming job's own rules; one bad rating refuses the whole
        body and nothing is sent. Answers 202 with the event ids (derived from source,
        user, movie and timestamp: a resend with the same timestamps is stored once).
        """
        check_token(api.ingest_token, request.headers.get("authorization"))
        events = events_from_body(
            await json_body(request),
            default_source=api.ingest_source,
            now_s=int(time.time()),
        )
        await run_in_threadpool(sender.send, events)
        accepted = Accepted(accepted=len(events), event_ids=[e.event_id for e in events])
        return Response(accepted.model_dump_json(), status_code=202, media_type="application/json")

    @app.get("/console", response_class=HTMLResponse, include_in_schema=False)
    async def console() -> HTMLResponse:
        """The live console: a user's list, rating it, similar movies, the pipeline."""
        return HTMLResponse(_CONSOLE)

    @app.get("/", include_in_schema=False)
    async def home() -> RedirectResponse:
        """The console."""
        return RedirectResponse("/console")

    @app.get(
        "/metrics",
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE_LATEST: {"example": _METRICS_EXAMPLE}}}},
    )
    async def prometheus() -> Response:
        """Request counts and latencies, Redis errors, model version and age."""
        try:
            info = await client().model_info()
            metrics.model_version.set(info.version)
            metrics.model_age.set(info.age_s)
        except ServingError:
            metrics.model_version.set(-1)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(_Measure, metrics=metrics)
    return app


class _Measure:
    """ASGI wrapper counting and timing every HTTP request by route and status.

    A plain ASGI layer rather than an ``@app.middleware``: Starlette's BaseHTTPMiddleware
    costs a task and a stream per request. It also turns an error that escaped every
    handler into a fixed 500 answer (logged here), so no traceback ever reaches a client.
    """

    def __init__(self, app: ASGIApp, metrics: _Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status = 500
        started = False

        async def sending(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status = message["status"]
                started = True
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception:  # a bug of ours: log it, answer without internals
            _log.exception("unhandled error answering %s", scope.get("path"))
            status = 500
            if not started:
                await _error(500, "internal error; it has been logged")(scope, receive, send)
        route = getattr(scope.get("route"), "path", "unmatched")
        self.metrics.requests.labels(route, str(status)).inc()
        self.metrics.latency.labels(route).observe(time.perf_counter() - began)


def app_from_env() -> FastAPI:
    """The API with settings from the environment.

    ``uvicorn --factory serving.api:app_from_env`` (each worker process builds its own).
    """
    return create_app()
