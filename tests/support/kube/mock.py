"""kmock with the realism the operator needs: a stateful API server over `ClusterState`.

Stock kmock 0.8 answers discovery well but lacks uids, resourceVersions, resumable watches, 422 on
failed patch tests, the namespaces route and garbage collection (see shared/testing-kubernetes.md).
Resource requests are therefore served here from `ClusterState`; discovery and anything else fall
through to kmock. Leans on kmock internals (`KubernetesScaffold`, `_requests`): pin kmock==0.8.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import deque
from dataclasses import dataclass
from typing import Any

import aiohttp.web
import attrs
import kmock

from .recorder import OPERATOR_AGENTS, ApiCall, ApiRequestRecorder, rbac_verb
from .resources import builtin_kinds, crd_kind, load_crds
from .state import ApiError, ClusterState, Kind, Validator

_PATH = re.compile(r"^/(?:api/(?P<core>v1)|apis/(?P<group>[^/]+)/(?P<version>[^/]+))(?P<rest>(?:/[^/]+)*)/?$")
NAMESPACE_SUBRESOURCES = {"status", "finalize"}
DISCONNECT_POLL = 0.2  # seconds between checks that a watching client is still there
CUSTOM_GROUPS = {"kubetune.dev"}  # the operator must never write the spec of these (users own it)


@dataclass(frozen=True)
class Route:
    """A request on a resource path, parsed."""

    kind: Kind
    namespace: str | None
    name: str | None
    subresource: str | None


def parse_route(state: ClusterState, path: str) -> Route | None:
    """Split a resource URL into kind/namespace/name/subresource; None for discovery and non-API paths."""
    match = _PATH.match(path)
    if match is None:
        return None
    group = "" if match["core"] else match["group"]
    parts = [part for part in (match["rest"] or "").split("/") if part]
    namespace = None
    if group == "" and parts[:1] == ["namespaces"] and (len(parts) <= 2 or parts[2] in NAMESPACE_SUBRESOURCES):
        name = parts[1] if len(parts) > 1 else None
        sub = parts[2] if len(parts) > 2 else None
        return Route(state.kind("", "namespaces"), None, name, sub)
    if parts[:1] == ["namespaces"] and len(parts) >= 3:
        namespace, parts = parts[1], parts[2:]
    if not parts:
        return None
    kind = state.kinds.get((group, parts[0]))
    if kind is None:
        raise ApiError(404, "NotFound", f"the server could not find the requested resource ({path})")
    name = parts[1] if len(parts) > 1 else None
    subresource = "/".join(parts[2:]) or None
    return Route(kind, namespace, name, subresource)


@attrs.define(kw_only=True)
class RealisticKubernetes(kmock.KubernetesScaffold):
    """The mock API server: kmock's HTTP, discovery and request log, plus a faithful object store."""

    request_log_limit: int = 200
    bookmark_interval: float = 5.0
    state: ClusterState = attrs.field(init=False)
    recorder: ApiRequestRecorder = attrs.field(factory=ApiRequestRecorder)
    validator: Validator | None = None
    validate_agents: tuple[str, ...] = OPERATOR_AGENTS
    recent: deque[str] = attrs.field(factory=lambda: deque(maxlen=500), init=False)
    closing: bool = attrs.field(default=False, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        array, kinds = builtin_kinds()
        for resource in array:
            self.resources[resource] = array[resource]
        for crd in load_crds():
            key, info, kind = crd_kind(crd)
            self.resources[key] = info
            kinds.append(kind)
        self.state = ClusterState(kinds)
        self.state.create(self.state.kind("", "namespaces"), None, {"metadata": {"name": "default"}})

    async def __call__(self, raw: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        try:
            route = parse_route(self.state, raw.path)
        except ApiError as exc:
            return aiohttp.web.json_response(exc.status(), status=exc.code)
        if route is None:
            try:
                return await super().__call__(raw)
            finally:
                del self._requests[: -self.request_log_limit]
        agent = raw.headers.get("User-Agent", "")
        watch = raw.method == "GET" and raw.query.get("watch", "").lower() in {"true", "1"}
        verb = rbac_verb(raw.method, route.name is not None, watch)
        self.recorder.record(
            ApiCall(verb, route.kind.group, route.kind.plural, route.subresource or "", route.namespace or "", agent)
        )
        self.recent.append(f"{verb} {route.kind.plural}/{route.subresource or ''} {route.namespace}/{route.name}")
        try:
            return await self._serve(raw, route, watch, agent)
        except ApiError as exc:
            return aiohttp.web.json_response(exc.status(), status=exc.code)

    async def _serve(
        self, raw: aiohttp.web.BaseRequest, route: Route, watch: bool, agent: str
    ) -> aiohttp.web.StreamResponse:
        state, kind = self.state, route.kind
        validate = self.validator if agent.startswith(self.validate_agents) else None
        query = raw.query
        if watch:
            return await self._watch(raw, route)
        if raw.method == "GET" and route.name is None:
            items, revision = state.list(kind, route.namespace, query.get("labelSelector"), query.get("fieldSelector"))
            return self._json(
                {
                    "apiVersion": kind.api_version,
                    "kind": f"{kind.kind}List",
                    "metadata": {"resourceVersion": str(revision)},
                    "items": items,
                }
            )
        if raw.method == "GET":
            return self._json(state.get(kind, route.namespace, route.name))
        body = await self._body(raw)
        dry_run = "dryRun" in query
        if raw.method == "POST" and route.name is None:
            if dry_run:
                return self._json(body, 201)
            return self._json(state.create(kind, route.namespace, body, validate), 201)
        if raw.method == "PATCH" and route.name is not None:
            content_type = raw.headers.get("Content-Type", "").split(";")[0].strip()
            before = state.get(kind, route.namespace, route.name).get("spec")
            result = state.patch(kind, route.namespace, route.name, body, content_type, route.subresource, validate)
            if validate is not None and kind.group in CUSTOM_GROUPS and result.get("spec") != before:
                self.validator.errors.append(f"the operator wrote the spec of {kind.kind} {route.name}: {body}")
            return self._json(result)
        if raw.method == "PUT" and route.name is not None:
            return self._json(state.replace(kind, route.namespace, route.name, body, route.subresource, validate))
        if raw.method == "DELETE" and route.name is not None:
            propagation = query.get("propagationPolicy") or (body or {}).get("propagationPolicy") or "Background"
            return self._json(state.delete(kind, route.namespace, route.name, propagation))
        raise ApiError(405, "MethodNotAllowed", f"{raw.method} is not supported on {raw.path}")

    async def _watch(self, raw: aiohttp.web.BaseRequest, route: Route) -> aiohttp.web.StreamResponse:
        """A watch stream: from `resourceVersion` on (resumable), or the current objects as ADDED first."""
        state, kind, query = self.state, route.kind, raw.query
        field_selector = query.get("fieldSelector")
        if route.name:
            field_selector = ",".join(filter(None, [field_selector, f"metadata.name={route.name}"]))
        label_selector = query.get("labelSelector")
        start = query.get("resourceVersion") or "0"
        timeout = float(query["timeoutSeconds"]) if query.get("timeoutSeconds") else None
        bookmarks = query.get("allowWatchBookmarks", "").lower() == "true"

        response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
        try:
            await response.prepare(raw)
        except ConnectionResetError:
            return response  # the client gave up before the stream started
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()

        def listener() -> None:
            loop.call_soon_threadsafe(wake.set)

        state.listeners.append(listener)
        try:
            if start == "0":
                items, cursor = state.list(kind, route.namespace, label_selector, field_selector)
                for item in items:
                    await self._send(response, "ADDED", item)
            else:
                cursor = int(start)
            deadline = loop.time() + timeout if timeout else None
            last_sent = loop.time()
            while not self.closing:
                wake.clear()
                try:
                    events, reached = state.events_since(kind, cursor, route.namespace, label_selector, field_selector)
                except ApiError as exc:
                    await self._send(response, "ERROR", exc.status())
                    break
                for _, event_type, obj in events:
                    await self._send(response, event_type, obj)
                cursor = reached
                if deadline is not None and deadline <= loop.time():
                    break
                if raw.transport is None or raw.transport.is_closing():
                    break  # the client hung up (aiohttp does not cancel the handler for us)
                wait = DISCONNECT_POLL if deadline is None else min(DISCONNECT_POLL, deadline - loop.time())
                try:
                    await asyncio.wait_for(wake.wait(), timeout=max(wait, 0))
                except TimeoutError:
                    if bookmarks and loop.time() - last_sent >= self.bookmark_interval:
                        marker = {"apiVersion": kind.api_version, "kind": kind.kind}
                        marker["metadata"] = {"resourceVersion": str(cursor)}
                        await self._send(response, "BOOKMARK", marker)
                        last_sent = loop.time()
                else:
                    last_sent = loop.time()
        except ConnectionResetError:
            pass  # the client went away
        finally:
            state.listeners.remove(listener)
        return response

    def close_watches(self) -> None:
        """End every watch stream (the server is going away; clients reconnect elsewhere)."""
        self.closing = True
        for listener in list(self.state.listeners):
            listener()

    @staticmethod
    async def _send(response: aiohttp.web.StreamResponse, event_type: str, obj: dict[str, Any]) -> None:
        await response.write(json.dumps({"type": event_type, "object": obj}).encode() + b"\n")

    @staticmethod
    async def _body(raw: aiohttp.web.BaseRequest) -> Any:
        text = await raw.text()
        if not text:
            return None
        try:
            return json.loads(text)
        except ValueError as exc:
            raise ApiError(400, "BadRequest", f"request body is not JSON: {exc}") from exc

    @staticmethod
    def _json(body: Any, status: int = 200) -> aiohttp.web.Response:
        return aiohttp.web.json_response(body, status=status)
