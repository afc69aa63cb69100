"""The one client of the Toxiproxy-style control API, for every fault point: a real Toxiproxy,
chaosml's proxy, the in-service point. The game day drives its fault points with it
(``chaosml.gameday.faultpoints``), and ``ToxiproxyTarget`` is it for library users.

Each client holds its own address, token and timeout (several targets in one process, each call
bounded); a refused request raises ``ControlRefused`` (4xx, an ``InputError``) and a failed or
unreachable one ``ControlFailed`` (an ``UnreachableError``), both with the status and the API's
own words. ``ToxiproxyTarget.remove_toxic`` falls back to ``/reset`` if the delete fails, so a
fault is never left behind.
"""

from __future__ import annotations

import contextlib
import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from chaosml.errors import InputError, UnreachableError


class ControlRefused(InputError):
    """The control API refused a request (HTTP 4xx)."""

    def __init__(self, message: str, *, status: int, detail: str, body: str) -> None:
        super().__init__(message)
        self.status, self.detail, self.body = status, detail, body


class ControlFailed(UnreachableError):
    """The control API could not be reached, or failed a request (HTTP 5xx; ``status`` 0 when
    nothing answered)."""

    def __init__(self, message: str, *, status: int = 0, detail: str = "", body: str = "") -> None:
        super().__init__(message)
        self.status, self.detail, self.body = status, detail, body


def path(*parts: str) -> str:
    """``/proxies/my%20model/toxics``: each part percent-encoded, slashes included."""
    return "/" + "/".join(urllib.parse.quote(p, safe="") for p in parts)


@dataclass(frozen=True, kw_only=True)
class ControlClient:
    """A Toxiproxy-style control API at ``address`` (``host:port``)."""

    address: str
    token: str | None = None
    timeout: float = 5.0

    def send(self, method: str, where: str, body: Any = None) -> bytes:
        """The answer's body to ``method where`` (with ``body`` as JSON)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"http://{self.address}{where}", data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return bytes(response.read())
        except urllib.error.HTTPError as exc:
            text = exc.read().decode(errors="replace").strip()
            detail = text
            with contextlib.suppress(ValueError, AttributeError):
                detail = json.loads(text).get("error", text)
            message = f"{method} {where}: HTTP {exc.code}: {detail}"
            kind = ControlRefused if 400 <= exc.code < 500 else ControlFailed
            raise kind(message, status=exc.code, detail=str(detail), body=text) from exc
        except (urllib.error.URLError, OSError) as exc:
            raise ControlFailed(f"unreachable: {getattr(exc, 'reason', exc)}") from exc

    def request(self, method: str, where: str, body: Any = None) -> Any:
        """The answer to ``method where`` as JSON (None if it has no body)."""
        text = self.send(method, where, body)
        return json.loads(text) if text else None

    def version(self) -> str:
        return self.send("GET", "/version").decode(errors="replace")

    def proxies(self) -> dict[str, Any]:
        return dict(self.request("GET", "/proxies") or {})

    def proxy(self, name: str) -> dict[str, Any]:
        return dict(self.request("GET", path("proxies", name)))

    def create_proxy(self, name: str, upstream: str, listen: str) -> dict[str, Any]:
        body = {"name": name, "upstream": upstream, "listen": listen}
        return dict(self.request("POST", "/proxies", body))

    def add_toxic(self, proxy: str, toxic: dict[str, Any]) -> dict[str, Any]:
        return dict(self.request("POST", path("proxies", proxy, "toxics"), toxic))

    def renew(self, proxy: str, toxic: str, lease: float) -> None:
        """Extend a toxic's lease (a chaosml fault point drops it when its lease runs out)."""
        self.request(
            "POST", path("proxies", proxy, "toxics", toxic), {"attributes": {"lease": lease}}
        )

    def toxics(self, proxy: str) -> list[dict[str, Any]]:
        return list(self.request("GET", path("proxies", proxy, "toxics")) or [])

    def remove_toxic(self, proxy: str, toxic: str) -> None:
        self.request("DELETE", path("proxies", proxy, "toxics", toxic))

    def evidence(self, proxy: str, toxic: str) -> dict[str, Any] | None:
        """What a chaosml fault point says the toxic did; None if it keeps no such record."""
        try:
            found = self.request("GET", path("proxies", proxy, "toxics", toxic, "evidence"))
        except ControlRefused as exc:
            if exc.status == 404:
                return None
            raise
        return found if isinstance(found, dict) else None

    def set_shadow(
        self,
        proxy: str,
        candidate: str,
        codec: str,
        folder: str,
        route: str | None = None,
        *,
        feedback: str | None = None,
        live: bool = False,
        lease: float | None = None,
    ) -> dict[str, Any]:
        """Copy the proxy's answered requests to ``candidate`` (chaosml's own endpoint); with
        ``feedback`` (a path), the labels POSTed there are recorded too; ``live``: each flush
        is also written as a part for a live view; ``lease``: the proxy removes the shadow
        unless it is renewed (``renew_shadow``) within that many seconds."""
        body: dict[str, Any] = {"candidate": candidate, "codec": codec, "folder": folder}
        body.update({"path": route, "live": live, "lease": lease})
        if feedback is not None:
            body["feedback"] = feedback
        answer: dict[str, Any] = self.request("POST", path("proxies", proxy, "shadow"), body)
        return answer

    def shadow(self, proxy: str) -> dict[str, Any]:
        answer: dict[str, Any] = self.request("GET", path("proxies", proxy, "shadow"))
        return answer

    def renew_shadow(self, proxy: str, lease: float | None = None) -> dict[str, Any]:
        """Renew the shadow's lease (for ``lease`` seconds, if given)."""
        body = {} if lease is None else {"lease": lease}
        answer: dict[str, Any] = self.request("PATCH", path("proxies", proxy, "shadow"), body)
        return answer

    def remove_shadow(self, proxy: str) -> dict[str, Any]:
        """Stop copying; the final counts."""
        answer: dict[str, Any] = self.request("DELETE", path("proxies", proxy, "shadow"))
        return answer

    def set_split(
        self,
        proxy: str,
        candidate: str,
        weight: float,
        *,
        key: dict[str, str] | None = None,
        lease: float | None = None,
        folder: str | None = None,
        codec: str | None = None,
        feedback: str | None = None,
    ) -> dict[str, Any]:
        """Send a sticky share ``weight`` of the proxy's requests to ``candidate`` (``host:port``)
        by ``key`` (``{"header": NAME}``, ``{"column": NAME}``, None: the client's address), under
        a ``lease`` of seconds; with ``folder``, each answered request is recorded there, and with
        ``feedback`` (a path) the labels POSTed there (chaosml's own endpoint). The split's
        state."""
        body: dict[str, Any] = {"candidate": candidate, "weight": weight, "key": key}
        extra = {"lease": lease, "folder": folder, "codec": codec, "feedback": feedback}
        body.update({k: v for k, v in extra.items() if v is not None})
        answer: dict[str, Any] = self.request("POST", path("proxies", proxy, "split"), body)
        return answer

    def change_split(
        self, proxy: str, *, weight: float | None = None, lease: float | None = None
    ) -> dict[str, Any]:
        """A new weight and/or lease; with neither, the lease is only renewed."""
        body = {k: v for k, v in (("weight", weight), ("lease", lease)) if v is not None}
        answer: dict[str, Any] = self.request("PATCH", path("proxies", proxy, "split"), body)
        return answer

    def split(self, proxy: str) -> dict[str, Any]:
        answer: dict[str, Any] = self.request("GET", path("proxies", proxy, "split"))
        return answer

    def remove_split(self, proxy: str) -> dict[str, Any]:
        """All traffic back to the primary; the final state, the recording written whole."""
        answer: dict[str, Any] = self.request("DELETE", path("proxies", proxy, "split"))
        return answer

    def promote_split(self, proxy: str) -> dict[str, Any]:
        """All traffic to the candidate, which becomes the proxy's upstream without a restart of
        its listener; the split's final state."""
        answer: dict[str, Any] = self.request("POST", path("proxies", proxy, "split", "promote"))
        return answer

    def reset(self) -> None:
        """Remove every toxic and re-enable every proxy."""
        self.request("POST", "/reset")


@dataclass(frozen=True)
class ToxiproxyTarget:
    """A Toxiproxy-compatible control API at ``host:port``."""

    host: str = "127.0.0.1"
    port: int = 8474
    timeout: float = 5.0

    @property
    def client(self) -> ControlClient:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return ControlClient(address=f"{host}:{self.port}", timeout=self.timeout)

    def _call(self, operation: str, *args: Any) -> Any:
        """``operation`` of the client, its errors worded for this target."""
        try:
            return getattr(self.client, operation)(*args)
        except ControlRefused as exc:
            raise ControlRefused(
                f"Toxiproxy API {self.host}:{self.port}: {exc.body}",
                status=exc.status,
                detail=exc.detail,
                body=exc.body,
            ) from exc
        except ControlFailed as exc:
            raise ControlFailed(
                f"Toxiproxy API {self.host}:{self.port}: {exc}",
                status=exc.status,
                detail=exc.detail,
                body=exc.body,
            ) from exc

    def version(self) -> str:
        return str(self._call("version"))

    def proxies(self) -> dict[str, Any]:
        return dict(self._call("proxies"))

    def ensure_proxy(self, name: str, upstream: str, listen: str = "127.0.0.1:0") -> dict[str, Any]:
        """The proxy ``name`` in front of ``upstream``, created if missing."""
        try:
            return dict(self._call("create_proxy", name, upstream, listen))
        except ControlRefused as exc:
            if exc.status != 409:
                raise
            return dict(self._call("proxy", name))

    def add_toxic(
        self,
        proxy: str,
        type: str,
        *,
        stream: str = "downstream",
        toxicity: float = 1.0,
        attributes: dict[str, Any] | None = None,
        name: str | None = None,
    ) -> str:
        """Add a toxic; returns its name (Toxiproxy's default ``<type>_<stream>``)."""
        body = {
            "name": name or f"{type}_{stream}",
            "type": type,
            "stream": stream,
            "toxicity": toxicity,
            "attributes": attributes or {},
        }
        return str(self._call("add_toxic", proxy, body)["name"])

    def renew(self, proxy: str, toxic: str, lease: float) -> None:
        """Extend a toxic's lease (chaosml's proxy drops it when the lease runs out)."""
        self._call("renew", proxy, toxic, lease)

    def toxics(self, proxy: str) -> list[dict[str, Any]]:
        return list(self._call("toxics", proxy))

    def remove_toxic(self, proxy: str, toxic: str) -> None:
        """Remove a toxic; if that fails for any reason but "already gone", reset everything."""
        try:
            self._call("remove_toxic", proxy, toxic)
        except ControlRefused as exc:
            if exc.status != 404:
                self.reset()
                raise
            if "toxic not found" not in exc.detail:
                self.reset()
        except Exception:
            self.reset()
            raise

    def reset(self) -> None:
        """Remove every toxic and re-enable every proxy."""
        self._call("reset")
