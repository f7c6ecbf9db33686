"""Reaching an MLflow tracking store within seconds, or saying in one line why not.

MLflow's HTTP client retries a dead server for about four minutes before it gives up
(docs/stack.md §4), and a store it cannot use fails with a multi-line message or a traceback.
Before :func:`analysis.load.from_mlflow` reads anything, :func:`probe` asks an ``http(s)``
server for ``/health`` with a short timeout, and :func:`within` runs the first real request in a
thread it waits on for a few seconds only (:func:`run_within`, which the sweep's tracking uses
too: ``sweeps/tracking/store.py``). :data:`HTTP_LIMITS` are the settings the entry point
gives MLflow's client for the rest (:func:`limit_http`), unless the user set them.

An unreachable store raises :class:`~analysis.errors.TrackingUnreachableError` (exit status 3);
a store that answers but cannot be used (a file store MLflow refuses, an unknown scheme) raises
:class:`~analysis.errors.AnalysisInputError` (exit status 2).
"""

from __future__ import annotations

import os
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, MutableMapping
from types import MappingProxyType
from typing import Any, TypeVar
from urllib.parse import urlparse

from analysis.errors import AnalysisInputError, TrackingUnreachableError

__all__ = [
    "HTTP_LIMITS",
    "PROBE_TIMEOUT_S",
    "SCHEMES",
    "Overdue",
    "limit_http",
    "one_line",
    "probe",
    "run_within",
    "within",
]

T = TypeVar("T")

#: URI schemes MLflow's tracking client accepts (others fail with a page of text).
SCHEMES = frozenset(
    ("http", "https", "sqlite", "postgresql", "mysql", "mssql", "file", "databricks", "uc")
)
#: Seconds the ``/health`` probe and the first request may take.
PROBE_TIMEOUT_S = 4.0
#: MLflow's HTTP client settings for a one-shot read: one retry, ten seconds per request.
HTTP_LIMITS: Mapping[str, str] = MappingProxyType(
    {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    }
)


def limit_http(environ: MutableMapping[str, str] = os.environ) -> None:
    """Give MLflow's HTTP client :data:`HTTP_LIMITS`, keeping any the user set (entry points)."""
    for key, value in HTTP_LIMITS.items():
        environ.setdefault(key, value)


def one_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (MLflow's run to many), cut to ``limit``."""
    message = getattr(exc, "message", None) or str(exc)
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def probe(uri: str, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Fail within ``timeout`` seconds when an ``http(s)`` tracking server does not answer
    ``/health`` with 200 OK; other stores are left to :func:`within`."""
    scheme = urlparse(uri).scheme
    if scheme not in SCHEMES:
        raise AnalysisInputError(
            f"tracking URI {uri!r}: "
            + (f"the scheme {scheme!r} is not one MLflow serves" if scheme else "no scheme")
            + "; pass http(s)://host:port or sqlite:////abs/path/mlflow.db"
        )
    if scheme not in ("http", "https"):
        return
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            status = resp.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TrackingUnreachableError(
            f"MLflow tracking server {uri} is unreachable ({reason}); start it, or read the "
            "sweep's results.parquet with --parquet"
        ) from None
    if status != 200:
        raise TrackingUnreachableError(
            f"{uri} answered {status} to GET /health: not an MLflow tracking server (or not "
            "ready); check the URI"
        )


class Overdue(TimeoutError):
    """A call given a time limit by :func:`run_within` did not return within it."""


def run_within(fn: Callable[[], T], seconds: float, name: str = "mlflow-call") -> T:
    """``fn()`` in a daemon thread, waited on for ``seconds``: its value, or its exception raised
    again here; :class:`Overdue` when it is still running (the thread is left to finish on its
    own; as a daemon it does not keep the process alive).

    The one time limit around MLflow calls: the report's first request (:func:`within`) and the
    sweep's tracking setup (``sweeps.tracking.store.with_timeout``) each say in their own terms
    what a failure means.
    """
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True, name=name)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise Overdue(f"no answer within {seconds:.0f} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


def within(fn: Callable[[], T], uri: str, seconds: float = 10.0) -> T:
    """``fn()`` (the first request to the store) given ``seconds`` (:func:`run_within`).

    Too slow: :class:`TrackingUnreachableError`. An :class:`AnalysisInputError` raised by
    ``fn`` passes unchanged; any other failure becomes one that says the store cannot be used.
    """
    try:
        return run_within(fn, seconds, name="mlflow-probe")
    except Overdue:
        raise TrackingUnreachableError(
            f"MLflow at {uri} did not answer within {seconds:.0f} s; check that the store is up"
        ) from None
    except AnalysisInputError:
        raise
    except Exception as error:
        raise AnalysisInputError(f"MLflow at {uri} cannot be used: {one_line(error)}") from None
