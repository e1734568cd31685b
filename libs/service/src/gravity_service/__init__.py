"""Gravity service anatomy: what every service would otherwise repeat.

- :mod:`~gravity_service.settings`: :class:`ServiceSettings`, the base of each service's settings;
- :mod:`~gravity_service.errors`: :class:`GravityError`, the contract's error body and its handlers;
- :mod:`~gravity_service.health`: ``/healthz`` and ``/readyz``;
- :mod:`~gravity_service.tasks`: the :class:`Supervisor` of a lifespan's background tasks;
- :mod:`~gravity_service.serve`: :func:`serve`, uvicorn as every service runs it.
"""

from gravity_service.errors import GravityError, error_body, install_error_handlers, json_response
from gravity_service.health import OK, Check, health_router
from gravity_service.serve import TASK_FAILURE, serve
from gravity_service.settings import ServiceSettings, weak_secret
from gravity_service.tasks import Supervisor, on_task_failure

__all__ = [
    "OK",
    "TASK_FAILURE",
    "Check",
    "GravityError",
    "ServiceSettings",
    "Supervisor",
    "error_body",
    "health_router",
    "install_error_handlers",
    "json_response",
    "on_task_failure",
    "serve",
    "weak_secret",
]
