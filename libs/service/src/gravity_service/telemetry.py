"""A service process's logs and traces, set up once at its entry point with :func:`setup`.

Tracing follows the standard OpenTelemetry variables. Spans are recorded and exported over OTLP
http/protobuf only when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set
and ``OTEL_SDK_DISABLED`` is not true; the exporter reads the rest (``OTEL_EXPORTER_OTLP_HEADERS``,
``_TIMEOUT``, ``OTEL_BSP_*``, ``OTEL_TRACES_SAMPLER``, ``OTEL_RESOURCE_ATTRIBUTES``). ``service.name`` is
``gravity-<service>``. Then outgoing httpx requests and asyncpg queries get client spans too (the
OpenTelemetry instrumentations), so fanout's webhook POSTs and the registry's PostgreSQL batches appear.

Without the endpoint no SDK provider is installed: the API's no-op tracer costs next to nothing, nothing
is exported, and trace context is passed through unchanged (see :mod:`gravity_events.tracing`).

The provider is process-wide (OpenTelemetry allows one), which is why it is installed here, at the entry
point, and never by ``create_app``: tests build many apps in one process.
"""

from __future__ import annotations

import importlib.util
import logging
import os

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from gravity_events import logs, tracing
from gravity_events.settings import KafkaSettings
from gravity_service.settings import ServiceSettings

__all__ = ["configure_tracing", "service_name", "setup", "shutdown_tracing", "tracing_requested"]

log = logging.getLogger(__name__)

_provider: TracerProvider | None = None


def service_name(service: str) -> str:
    """``gravity-<service>``: the ``service.name`` of its spans and the ``service`` of its JSON log lines."""
    return service if service.startswith("gravity-") else f"gravity-{service}"


def tracing_requested() -> bool:
    """True when the environment asks for spans to be exported (an OTLP endpoint, the SDK not disabled)."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return bool(
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )


def configure_tracing(service: str) -> bool:
    """Install the SDK provider with a batching OTLP http/protobuf exporter, if :func:`tracing_requested`.

    Returns whether spans are now recorded. Idempotent: a second call keeps the first provider.
    """
    global _provider
    if _provider is not None:
        return True
    if not tracing_requested():
        tracing.set_recording(False)
        return False
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service_name(service)}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _provider = provider
    tracing.set_recording(True)
    _instrument_clients(provider)
    log.info("exporting traces over OTLP as %s", service_name(service))
    return True


def _instrument_clients(provider: TracerProvider) -> None:
    """Client spans (and ``traceparent`` on every request) for httpx, and spans for asyncpg queries."""
    if importlib.util.find_spec("httpx") is not None:
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

        HTTPXClientInstrumentor().instrument(tracer_provider=provider)
    if importlib.util.find_spec("asyncpg") is not None:
        from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor

        AsyncPGInstrumentor().instrument(tracer_provider=provider)  # type: ignore[no-untyped-call]


def shutdown_tracing() -> None:
    """Export what is still buffered and stop the exporter (:func:`~gravity_service.serve.serve` calls it
    after the server stopped); nothing to do when tracing is off."""
    if _provider is not None:
        _provider.shutdown()


def setup(settings: ServiceSettings, *, service: str) -> None:
    """Logs (``GRAVITY_LOG_LEVEL``, ``GRAVITY_LOG_FORMAT``) and traces (the OTel variables) of the process
    serving ``service`` (``"ingest"``, ``"registry"``, ``"fanout"``, ``"realtime"``); call it first thing in
    ``main()``, before ``create_app``."""
    logs.configure(settings.log_level, log_format=settings.log_format, service=service_name(service))
    configure_tracing(service)
    if isinstance(settings, KafkaSettings):
        settings.warn_if_plaintext(production=settings.production)
