"""W3C trace context on Kafka records and HTTP requests, on the OpenTelemetry API only.

Every service uses these helpers; none of them needs the SDK. Which mode a process is in is decided once
at start by :func:`gravity_service.tracing.configure_tracing`:

- **recording** (``OTEL_EXPORTER_OTLP_ENDPOINT`` set, an SDK provider installed): :func:`span` starts real
  spans, children of the trace context the record or request carried, and the headers written downstream
  name the new span as parent.
- **pass-through** (the default: no SDK, the API's no-op tracer): nothing is recorded, but a trace context
  that arrived (a ``traceparent`` header on the webhook request, or on a consumed record) is made current,
  so the records and requests made under it carry the same ``traceparent``/``tracestate`` on. A trace
  started upstream stays one trace through the gateway even where no copy records spans. Without an
  incoming context nothing is added to any header: there is no trace to continue, and inventing ids no one
  records would cost time on every request.

Headers are written through the globally configured propagator (``OTEL_PROPAGATORS``, by default W3C
``tracecontext`` and ``baggage``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping, Sequence

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind

__all__ = [
    "TRACEPARENT",
    "TRACESTATE",
    "Headers",
    "SpanKind",
    "context_from_headers",
    "current_trace_id",
    "http_headers",
    "record_trace_headers",
    "recording",
    "set_recording",
    "span",
    "trace_headers",
    "trace_id_of",
    "tracer",
]

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"

Headers = Mapping[str, bytes] | Sequence[tuple[str, bytes]]
"""Kafka record headers: a dict (as :class:`~gravity_events.kafka.Envelope` has them) or the pairs."""

_recording = False


def set_recording(value: bool) -> None:
    """Tell the helpers an SDK provider is installed (called by ``gravity_service.tracing``)."""
    global _recording
    _recording = value


def recording() -> bool:
    """True when spans are recorded and exported; False in pass-through mode."""
    return _recording


def tracer() -> trace.Tracer:
    """The Gravity tracer of the global provider (the no-op tracer when none is installed)."""
    return trace.get_tracer("gravity")


def _pairs(headers: Headers) -> Iterable[tuple[str, bytes]]:
    return headers.items() if isinstance(headers, Mapping) else headers


def context_from_headers(headers: Headers) -> Context | None:
    """The trace context that record headers carry, or None when they carry none (the cheap, usual case)."""
    carrier: dict[str, str] = {}
    for name, value in _pairs(headers):
        if name in (TRACEPARENT, TRACESTATE) and value is not None:
            carrier[name] = bytes(value).decode("latin-1")
    if TRACEPARENT not in carrier:
        return None
    extracted = propagate.extract(carrier)
    if not trace.get_current_span(extracted).get_span_context().is_valid:
        return None  # a malformed traceparent is ignored, as W3C asks
    return extracted


def trace_headers(context: Context | None = None) -> list[tuple[str, bytes]]:
    """``traceparent``/``tracestate`` record headers of ``context`` (default: the current one); empty when
    no valid span is current."""
    if not trace.get_current_span(context).get_span_context().is_valid:
        return []
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=context)
    return [(name, value.encode("latin-1")) for name, value in carrier.items()]


def record_trace_headers(headers: Headers) -> list[tuple[str, bytes]]:
    """The trace headers of a consumed record, unchanged: to copy onto a record derived from it when no
    span is started in between (the outbox case: the registry stores them beside the row)."""
    return [(n, bytes(v)) for n, v in _pairs(headers) if n in (TRACEPARENT, TRACESTATE) and v is not None]


def http_headers(context: Context | None = None) -> dict[str, str]:
    """``traceparent``/``tracestate`` HTTP headers of ``context`` (default: the current one), e.g. for the
    webhook POST; empty when no valid span is current."""
    if not trace.get_current_span(context).get_span_context().is_valid:
        return {}
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=context)
    return carrier


def trace_id_of(headers: Headers) -> str | None:
    """The trace id record headers carry, as :func:`current_trace_id` gives it, or None."""
    context = context_from_headers(headers)
    if context is None:
        return None
    return format(trace.get_current_span(context).get_span_context().trace_id, "032x")


def current_trace_id() -> str | None:
    """The current trace id as 32 lowercase hex digits (what log lines carry as ``traceId``), or None."""
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None


@contextlib.contextmanager
def span(
    name: str,
    *,
    parent: Headers | Context | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, str | int | float | bool] | None = None,
) -> Iterator[Span]:
    """Run the block in a span named ``name``, the child of ``parent`` (record headers or a context;
    default: whatever is current).

    Recording: a real span, current for the block, ended (with the exception, if one escapes) at its end.
    Pass-through: the parent's context, if there is one, is made current for the block so headers written
    inside carry it on; otherwise nothing happens. Yields the span (a non-recording one in pass-through, on
    which ``set_attribute`` is a no-op).
    """
    parent_context = parent if parent is None or isinstance(parent, Context) else context_from_headers(parent)
    if _recording:
        with tracer().start_as_current_span(
            name, context=parent_context, kind=kind, attributes=dict(attributes or {})
        ) as current:
            yield current
        return
    if parent_context is None:
        yield trace.get_current_span()
        return
    token = otel_context.attach(parent_context)
    try:
        yield trace.get_current_span(parent_context)
    finally:
        otel_context.detach(token)
