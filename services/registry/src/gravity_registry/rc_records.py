"""What the registry reads out of RingCentral's answers and a tenant's ``serverUrl``, as plain functions:
which server URLs it will call, and RingCentral's message ids in the one string form the gateway stores."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import httpx

__all__ = ["message_id_of", "normalised_record", "server_url_problem"]

_MAX_ID_LENGTH = 128


def server_url_problem(url: str, *, production: bool, allowed_hosts: Collection[str]) -> str | None:
    """Why the gateway will not call ``url`` (a tenant's ``serverUrl``), or None when it will.

    Development accepts any http(s) base URL with a host (the simulator runs on loopback); production
    only ``https`` to one of ``allowed_hosts``.
    """
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError, TypeError):
        return "serverUrl is not a valid URL"
    if parsed.scheme not in ("http", "https") or not parsed.host:
        return "serverUrl must be an http(s) URL with a host"
    if parsed.userinfo or parsed.query or parsed.fragment:
        return "serverUrl must be a base URL without credentials, query or fragment"
    if not production:
        return None
    if parsed.scheme != "https":
        return "serverUrl must use https in production"
    host = parsed.host.lower().rstrip(".")
    if host not in allowed_hosts:
        return "serverUrl must name a RingCentral platform host (GRAVITY_RC_ALLOWED_HOSTS)"
    return None


def message_id_of(record: Any) -> str | None:
    """RingCentral's message id as the gateway stores it: the string of the instant notification's
    ``body.id``, or the JSON integer the message-store list API gives for the same message; None when
    ``record`` carries neither."""
    if not isinstance(record, dict):
        return None
    value = record.get("id")
    if isinstance(value, int) and not isinstance(value, bool):
        text = str(value)
    elif isinstance(value, str) and value:
        text = value
    else:
        return None
    if len(text) > _MAX_ID_LENGTH or any(ch < " " or ch == "\x7f" for ch in text):
        return None
    return text


def normalised_record(record: dict[str, Any], rc_id: str) -> dict[str, Any]:
    """A list-API record shaped like a notification body: ids as strings."""
    out = {**record, "id": rc_id}
    conversation_id = out.get("conversationId")
    if isinstance(conversation_id, int) and not isinstance(conversation_id, bool):
        out["conversationId"] = str(conversation_id)
    conversation = out.get("conversation")
    if isinstance(conversation, dict):
        inner = conversation.get("id")
        if isinstance(inner, int) and not isinstance(inner, bool):
            out["conversation"] = {**conversation, "id": str(inner)}
    return out
