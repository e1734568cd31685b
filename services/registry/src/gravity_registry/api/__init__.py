"""The registry's HTTP API (contract: Registry API), one module per domain, each a thin router:
authenticate, parse, call :mod:`gravity_registry.handlers`, answer with what they return.

- :mod:`.tenants` tenants (admin) and API keys; :mod:`.apps` apps; :mod:`.deliveries` the delivery log;
  :mod:`.connection` the RingCentral connection; :mod:`.messages` messages; :mod:`.dev` development
  helpers
- :mod:`.deps` what routes depend on; :mod:`.schema` shared shapes and the documented error body

Every route refuses a path or query value with a NUL character before it reaches SQL (422,
:func:`.deps.require_storable_parameters`). ``/healthz`` and ``/readyz`` come from
:func:`gravity_service.health.health_router`, wired in the app.
"""

from fastapi import APIRouter, Depends

from gravity_registry.api import apps, connection, deliveries, deps, dev, messages, tenants

__all__ = ["router"]

router = APIRouter()
for _domain in (tenants, apps, deliveries, connection, messages, dev):
    router.include_router(_domain.router, dependencies=[Depends(deps.require_storable_parameters)])
