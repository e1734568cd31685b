"""Gravity service anatomy: what every service would otherwise repeat.

- :mod:`~gravity_service.settings`: :class:`ServiceSettings`, the base of each service's settings;
- :mod:`~gravity_service.errors`: :class:`GravityError`, the contract's error body and its handlers;
- :mod:`~gravity_service.health`: ``/healthz`` and ``/readyz``;
- :mod:`~gravity_service.tasks`: the :class:`Supervisor` of a lifespan's background tasks;
- :mod:`~gravity_service.serve`: :func:`serve`, uvicorn as every service runs it;
- :mod:`~gravity_service.metrics`: ``GET /metrics``, the HTTP middleware, each service's metric objects;
- :mod:`~gravity_service.telemetry`: :func:`setup`, the process's log format and OTLP trace export.
"""

from gravity_service.errors import GravityError, error_body, install_error_handlers, json_response
from gravity_service.health import OK, Check, health_router
from gravity_service.metrics import (
    FanoutMetrics,
    HTTPMetricsMiddleware,
    IngestMetrics,
    RealtimeMetrics,
    RegistryMetrics,
    ServiceMetrics,
    install_metrics,
    metrics_router,
)
from gravity_service.serve import TASK_FAILURE, serve
from gravity_service.settings import ServiceSettings, weak_secret
from gravity_service.tasks import Supervisor, on_task_failure
from gravity_service.telemetry import setup

__all__ = [
    "OK",
    "TASK_FAILURE",
    "Check",
    "FanoutMetrics",
    "GravityError",
    "HTTPMetricsMiddleware",
    "IngestMetrics",
    "RealtimeMetrics",
    "RegistryMetrics",
    "ServiceMetrics",
    "ServiceSettings",
    "Supervisor",
    "error_body",
    "health_router",
    "install_error_handlers",
    "install_metrics",
    "json_response",
    "metrics_router",
    "on_task_failure",
    "serve",
    "setup",
    "weak_secret",
]
