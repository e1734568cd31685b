"""The few S3 calls the developer stack makes against its own SeaweedFS (loopback, no identities).

Tansu's S3 engine keeps a cluster under ``clusters/<cluster-id>/``: ``meta.json`` (topics),
``topics/<topic>/partitions/<NNNNNNNNNN>/watermark.json`` (``{"high": …}``) and one object per record
batch under ``…/records/``, and consumer groups under ``groups/``. Reading those objects directly is how the
stack measures its partitions without a fetch, whose cost grows with the partition.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Iterator
from typing import Any
from xml.sax.saxutils import escape

import httpx

__all__ = ["Bucket"]

_KEY = re.compile(r"<Key>(.*?)</Key>")
_TOKEN = re.compile(r"<NextContinuationToken>(.*?)</NextContinuationToken>")


class Bucket:
    """One bucket of an S3 endpoint that needs no signature."""

    def __init__(self, endpoint: str, name: str = "tansu", *, timeout: float = 30) -> None:
        self._base = f"{endpoint}/{name}"
        self._http = httpx.Client(timeout=timeout)

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def keys(self, prefix: str, *, limit: int | None = None) -> Iterator[str]:
        """Keys under ``prefix`` in order, at most ``limit`` of them."""
        token: str | None = None
        seen = 0
        while True:
            params = {"list-type": "2", "prefix": prefix, "max-keys": "1000"}
            if token:
                params["continuation-token"] = token
            response = self._http.get(self._base, params=params)
            response.raise_for_status()
            for key in _KEY.findall(response.text):
                yield _unescape(key)
                seen += 1
                if limit is not None and seen >= limit:
                    return
            found = _TOKEN.search(response.text)
            if found is None:
                return
            token = _unescape(found.group(1))

    def get_json(self, key: str) -> Any:
        """The object at ``key`` decoded as JSON, or ``None`` when there is none."""
        response = self._http.get(f"{self._base}/{key}")
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return json.loads(response.content)

    def get_bytes(self, key: str) -> bytes:
        """The object at ``key`` (raises when there is none)."""
        response = self._http.get(f"{self._base}/{key}")
        response.raise_for_status()
        return response.content

    def copy(self, source: str, target: str) -> None:
        """Copy one object (read and write: SeaweedFS's server-side copy is not needed for a few)."""
        self._http.put(f"{self._base}/{target}", content=self.get_bytes(source)).raise_for_status()

    def delete(self, keys: list[str]) -> None:
        """Delete ``keys``, 1,000 per request (S3 DeleteObjects)."""
        for start in range(0, len(keys), 1000):
            chunk = keys[start : start + 1000]
            body = (
                "<Delete><Quiet>true</Quiet>"
                + "".join(f"<Object><Key>{escape(k)}</Key></Object>" for k in chunk)
                + "</Delete>"
            ).encode()
            digest = base64.b64encode(hashlib.md5(body).digest()).decode()  # noqa: S324 - S3 asks for MD5
            response = self._http.post(
                self._base, params={"delete": ""}, content=body, headers={"Content-MD5": digest}
            )
            response.raise_for_status()


def _unescape(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", '"').replace("&amp;", "&")
