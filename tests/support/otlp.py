"""A tiny OTLP/HTTP trace receiver for tests that run real service processes with tracing on: it takes
``POST /v1/traces`` (an ``ExportTraceServiceRequest`` in protobuf) and keeps every span with its resource's
attributes, so a test can ask which service recorded what in which trace."""

from __future__ import annotations

from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

__all__ = ["OtlpReceiver"]


class OtlpReceiver:
    """A tiny OTLP/HTTP trace receiver: POST /v1/traces with an ExportTraceServiceRequest (protobuf)."""

    def __init__(self) -> None:
        self.spans: list[tuple[dict[str, Any], Any]] = []  # (resource attributes, span)
        self.app = Starlette(routes=[Route("/v1/traces", self._export, methods=["POST"])])

    async def _export(self, request: Request) -> Response:
        assert request.headers["content-type"] == "application/x-protobuf"
        export = ExportTraceServiceRequest()
        export.ParseFromString(await request.body())
        for resource_spans in export.resource_spans:
            resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                self.spans.extend((resource, span) for span in scope_spans.spans)
        body = ExportTraceServiceResponse().SerializeToString()
        return Response(body, media_type="application/x-protobuf")

    def of_trace(self, trace_id: str) -> list[tuple[dict[str, Any], Any]]:
        """The spans of one trace (hex id), each with its resource's attributes."""
        return [(r, s) for r, s in self.spans if s.trace_id.hex() == trace_id]

    def services_in(self, trace_id: str) -> set[str]:
        """The ``service.name`` of every resource that sent a span of the trace."""
        return {r.get("service.name", "") for r, _ in self.of_trace(trace_id)}
