"""The lab's Kubernetes API server (aiohttp, HTTPS, bearer tokens).

Integration contract with ``asgardlab.cluster`` (kubelet + controllers, written separately):

- At startup, if the module ``asgardlab.cluster`` exists and has ``setup(app, store, lab)``, it is called
  (it may be a coroutine function) BEFORE the generic API routes are added, so the aiohttp routes it adds
  (``/api/v1/namespaces/{ns}/pods/{name}/log|exec|portforward``, ``/lab/pods/{ns}/{name}/fault``, ...) win.
  Methods it does not register fall through to the generic routes.
- On SIGTERM/SIGINT the server calls ``await cluster.shutdown()`` (if present) before closing, so the kubelet
  can stop every pod. The server's own middlewares (request log, auth, faults) wrap every route, theirs
  included; WebSocket upgrades pass through unbuffered.
- If ``cluster.setup`` sets ``lab.namespace_controller = False`` the built-in namespace finalizer (deletes
  the contents of a Terminating namespace, then the namespace) is not started.

``Lab`` (the ``lab`` argument) has these attributes:

- ``state_dir`` (Path), ``ca_crt``, ``ca_key``, ``server_crt``, ``server_key`` (Paths, PEM),
  ``kubeconfig`` (Path), ``requests_log`` (Path), ``host`` ("127.0.0.1"), ``port`` (int), ``api_url`` (str)
- ``token`` (the admin bearer token), ``tokens`` (dict token -> username; add entries for more identities)
- ``authorize``: ``None`` (everyone authenticated may do everything) or a callable
  ``(user, verb, resource_type_or_None, namespace, request) -> bool``; False answers 403 Forbidden.
- ``store`` (store.Store), ``faults`` (FaultInjector), ``log`` (logging.Logger writing to lab.log)
- ``namespace_controller`` (bool, see above)
"""

from __future__ import annotations

import asyncio
import base64
import copy
import datetime as _dt
import importlib
import inspect
import json
import logging
import re
import secrets
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Callable

import yaml
from aiohttp import web

from . import discovery, patch, schemas, tables
from . import resources as R
from .admission import Admission
from .resources import ResourceType
from .selectors import parse_field_selector, parse_label_selector
from .store import ApiError, Store, not_found

log = logging.getLogger("asgardlab")


# --------------------------------------------------------------------------- lab object
@dataclass
class Lab:
    state_dir: Path
    host: str = "127.0.0.1"
    port: int = 6443
    token: str = ""
    tokens: dict[str, str] = field(default_factory=dict)
    authorize: Callable | None = None
    store: Store | None = None
    faults: FaultInjector | None = None
    namespace_controller: bool = True
    log: logging.Logger = log

    @property
    def ca_crt(self) -> Path:
        return self.state_dir / "pki" / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.state_dir / "pki" / "ca.key"

    @property
    def server_crt(self) -> Path:
        return self.state_dir / "pki" / "server.crt"

    @property
    def server_key(self) -> Path:
        return self.state_dir / "pki" / "server.key"

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def requests_log(self) -> Path:
        return self.state_dir / "requests.log"

    @property
    def api_url(self) -> str:
        return f"https://{self.host}:{self.port}"


def write_kubeconfig(lab: Lab) -> None:
    ca = base64.b64encode(lab.ca_crt.read_bytes()).decode()
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "asgard-lab", "cluster": {"server": lab.api_url, "certificate-authority-data": ca}}],
        "users": [{"name": "asgard-lab-admin", "user": {"token": lab.token}}],
        "contexts": [{"name": "asgard-lab", "context": {"cluster": "asgard-lab", "user": "asgard-lab-admin"}}],
        "current-context": "asgard-lab",
        "preferences": {},
    }
    tmp = lab.kubeconfig.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(cfg, sort_keys=False))
    tmp.chmod(0o600)
    tmp.replace(lab.kubeconfig)


# --------------------------------------------------------------------------- helpers
def status_response(err: ApiError, headers: dict | None = None) -> web.Response:
    return web.json_response(err.status(), status=err.code, headers=headers)


def success_status(details: dict) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}


NOT_FOUND_GENERIC = ApiError(404, "NotFound", "the server could not find the requested resource", {})


def _bool(v: str | None) -> bool:
    return (v or "").lower() in ("1", "true", "yes")


def _dry_run(request: web.Request, body: dict | None = None) -> bool:
    q = request.query.getall("dryRun", [])
    if body and isinstance(body.get("dryRun"), list):
        q = q + body["dryRun"]
    for v in q:
        if v != "All":
            raise ApiError(400, "BadRequest", f'dryRun: Unsupported value: "{v}": supported values: "All"')
    return bool(q)


async def _read_body(request: web.Request, allow_yaml: bool = False) -> Any:
    raw = await request.read()
    if not raw:
        return None
    ctype = request.content_type or ""
    if "protobuf" in ctype or "cbor" in ctype:
        raise ApiError(415, "UnsupportedMediaType", "the body of the request was in an unknown format - accepted media types "
                       "include: application/json, application/yaml")
    try:
        if allow_yaml or "yaml" in ctype:
            return yaml.safe_load(raw)
        return json.loads(raw)
    except (ValueError, yaml.YAMLError) as e:
        raise ApiError(400, "BadRequest", f"couldn't get version/kind; json parse error: {e}") from None


# --------------------------------------------------------------------------- faults
class FaultInjector:
    """Admin-controlled failures: ``http_status`` (429/500/503...) and ``drop_connection``."""

    KINDS = ("http_status", "drop_connection")

    def __init__(self) -> None:
        self.faults: list[dict] = []
        self._next = 1

    def add(self, spec: Any) -> dict:
        if not isinstance(spec, dict):
            raise ApiError(400, "BadRequest", "fault must be a JSON object like "
                           '{"kind": "http_status", "status": 503, "count": 1, "path_regex": "...", "method": "GET"}')
        kind = spec.get("kind")
        if kind not in self.KINDS:
            raise ApiError(400, "BadRequest", f"fault.kind: Unsupported value: {json.dumps(kind)}: supported values: "
                           + ", ".join(f'"{k}"' for k in self.KINDS))
        status = spec.get("status", 503)
        if kind == "http_status" and (not isinstance(status, int) or not 400 <= status <= 599):
            raise ApiError(400, "BadRequest", f"fault.status: Invalid value: {json.dumps(status)}: must be an HTTP error code 400-599")
        count = spec.get("count", 1)
        if count is not None and (not isinstance(count, int) or count < 1):
            raise ApiError(400, "BadRequest", f"fault.count: Invalid value: {json.dumps(count)}: must be a positive integer or null (unlimited)")
        regex = spec.get("path_regex", ".*")
        try:
            re.compile(regex)
        except (re.error, TypeError) as e:
            raise ApiError(400, "BadRequest", f"fault.path_regex: Invalid value: {json.dumps(regex)}: {e}") from None
        method = spec.get("method")
        if method is not None and not isinstance(method, str):
            raise ApiError(400, "BadRequest", "fault.method: Invalid value: must be an HTTP method like \"GET\"")
        owner = spec.get("owner")
        if owner is not None and not isinstance(owner, str):
            raise ApiError(400, "BadRequest", "fault.owner: Invalid value: must be a string naming who added it")
        fault = {"id": self._next, "kind": kind, "status": status if kind == "http_status" else None, "count": count,
                 "path_regex": regex, "method": method.upper() if method else None, "hits": 0, "owner": owner}
        self._next += 1
        self.faults.append(fault)
        return fault

    def list(self, owner: str | None = None) -> list[dict]:
        return [f for f in self.faults if owner is None or f["owner"] == owner]

    def clear(self, owner: str | None = None) -> None:
        """Remove every fault, or only those of ``owner`` (a test process clears what it added, not another's)."""
        self.faults[:] = [f for f in self.faults if owner is not None and f["owner"] != owner]

    def match(self, method: str, path_qs: str) -> dict | None:
        for f in list(self.faults):
            if f["method"] and f["method"] != method:
                continue
            if not re.search(f["path_regex"], path_qs):
                continue
            f["hits"] += 1
            if f["count"] is not None:
                f["count"] -= 1
                if f["count"] <= 0:
                    self.faults.remove(f)
            return f
        return None


_FAULT_REASONS = {429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable", 504: "Timeout",
                  409: "Conflict", 403: "Forbidden", 404: "NotFound", 400: "BadRequest", 401: "Unauthorized"}
_UNAUTH_PATHS = {"/readyz", "/healthz", "/livez"}


# --------------------------------------------------------------------------- middlewares
def make_middlewares(lab: Lab, requests_log):
    @web.middleware
    async def request_log(request: web.Request, handler):
        start = time.monotonic()
        status = 500
        try:
            resp = await handler(request)
            status = resp.status
            return resp
        except web.HTTPException as e:
            status = e.status
            raise
        except ConnectionResetError:
            status = 0
            raise
        finally:
            if request.path not in _UNAUTH_PATHS:
                entry = {
                    "ts": _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                    "method": request.method,
                    "path": request.path,
                    "query": request.query_string,
                    "content_type": request.headers.get("Content-Type", ""),
                    "status": status,
                    "user": request.get("user", ""),
                    "duration_ms": round((time.monotonic() - start) * 1000, 1),
                }
                requests_log.write(json.dumps(entry) + "\n")
                requests_log.flush()

    @web.middleware
    async def auth(request: web.Request, handler):
        if request.path in _UNAUTH_PATHS:
            return await handler(request)
        header = request.headers.get("Authorization", "")
        token = header[7:].strip() if header.lower().startswith("bearer ") else ""
        user = lab.tokens.get(token) if token else None
        if user is None:
            return status_response(ApiError(401, "Unauthorized", "Unauthorized"))
        request["user"] = user
        return await handler(request)

    @web.middleware
    async def faults(request: web.Request, handler):
        if request.path.startswith("/lab/faults") or request.path in _UNAUTH_PATHS:
            return await handler(request)
        f = lab.faults.match(request.method, request.path_qs)
        if f is None:
            return await handler(request)
        if f["kind"] == "drop_connection":
            transport = request.transport
            if transport is not None:
                transport.abort()
            raise ConnectionResetError("lab fault: connection dropped")
        code = f["status"]
        reason = _FAULT_REASONS.get(code, "InternalError")
        headers = {"Retry-After": "1"} if code == 429 else None
        msg = {429: "Too many requests, please try again later.",
               503: "the server is currently unable to handle the request"}.get(code, f"lab fault injection: HTTP {code}")
        return status_response(ApiError(code, reason, msg, {"retryAfterSeconds": 1} if code == 429 else None), headers)

    @web.middleware
    async def errors(request: web.Request, handler):
        try:
            return await handler(request)
        except ApiError as e:
            return status_response(e)
        except (web.HTTPException, ConnectionResetError, asyncio.CancelledError):
            raise
        except Exception as e:  # noqa: BLE001 - the apiserver answers 500 InternalError
            log.exception("internal error on %s %s", request.method, request.path)
            return status_response(ApiError(500, "InternalError", f"Internal error occurred: {e}"))

    return [request_log, auth, faults, errors]


# --------------------------------------------------------------------------- routing
@dataclass
class Target:
    rt: ResourceType
    namespace: str | None
    name: str | None
    subresource: str | None


def parse_target(path: str) -> Target | None:
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 2 and parts[0] == "api" and parts[1] == "v1":
        group, version, rest = "", "v1", parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    if not rest:
        return None
    ns = None
    if rest[0] == "namespaces" and len(rest) >= 3:
        maybe = R.lookup(group, rest[2])
        if maybe is not None and maybe.namespaced:
            ns, rest = rest[1], rest[2:]
    rt = R.lookup(group, rest[0])
    if rt is None or rt.version != version or len(rest) > 3:
        return None
    if ns is not None and not rt.namespaced:
        return None
    name = rest[1] if len(rest) >= 2 else None
    sub = rest[2] if len(rest) == 3 else None
    if sub is not None and sub not in rt.subresources:
        return None
    return Target(rt, ns, name, sub)


class Api:
    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.store: Store = lab.store

    # ------------------------------------------------------------------ authorization hook
    def _authorize(self, request: web.Request, verb: str, t: Target | None) -> None:
        if self.lab.authorize is None:
            return
        if not self.lab.authorize(request.get("user"), verb, t.rt if t else None, t.namespace if t else None, request):
            user = request.get("user")
            what = f"{t.rt.plural}" + (f'.{t.rt.group}' if t and t.rt.group else "") if t else request.path
            scope = f' in the namespace "{t.namespace}"' if t and t.namespace else " at the cluster scope"
            raise ApiError(403, "Forbidden", f'{what}{" " + json.dumps(t.name) if t and t.name else ""} is forbidden: '
                           f'User "{user}" cannot {verb} resource "{t.rt.plural if t else request.path}"'
                           f'{" in API group " + json.dumps(t.rt.group) if t else ""}{scope}')

    # ------------------------------------------------------------------ discovery & misc
    async def version(self, request):
        return web.json_response(discovery.VERSION)

    async def healthz(self, request):
        return web.Response(text="ok")

    async def api_root(self, request):
        return web.json_response(discovery.api_versions(f"{self.lab.host}:{self.lab.port}"))

    async def apis_root(self, request):
        return web.json_response(discovery.api_group_list())

    async def openapi_v2(self, request):
        accept = request.headers.get("Accept", "")
        if "protobuf" in accept.split(",")[0]:
            return web.Response(body=schemas.openapi_v2_protobuf(),
                                content_type="application/com.github.proto-openapi.spec.v2.v1.0+protobuf")
        body = await asyncio.get_running_loop().run_in_executor(None, schemas.openapi_v2_bytes)
        return web.Response(body=body, content_type="application/json")

    async def openapi_v3(self, request):
        return web.json_response(schemas.openapi_v3_root())

    async def openapi_v3_gv(self, request):
        tail = request.match_info["tail"]
        parts = tail.split("/")
        if parts[0] == "api" and len(parts) == 2:
            g, v = "", parts[1]
        elif parts[0] == "apis" and len(parts) == 3:
            g, v = parts[1], parts[2]
        else:
            raise NOT_FOUND_GENERIC
        if (g, v) not in {(rt.group, rt.version) for rt in R.ALL_TYPES}:
            raise NOT_FOUND_GENERIC
        accept = request.headers.get("Accept", "")
        if "protobuf" in accept and "json" not in accept:
            raise ApiError(406, "NotAcceptable", "only the following media types are accepted: application/json")
        body = await asyncio.get_running_loop().run_in_executor(None, schemas.openapi_v3_bytes, g, v)
        return web.Response(body=body, content_type="application/json",
                            headers={"Cache-Control": "public, immutable", "Etag": '"' + schemas._v3_hash(g, v)[:32] + '"'})

    # ------------------------------------------------------------------ faults admin
    async def faults_get(self, request):
        return web.json_response({"faults": self.lab.faults.list(request.query.get("owner"))})

    async def faults_post(self, request):
        fault = self.lab.faults.add(await _read_body(request))
        return web.json_response(fault, status=201)

    async def faults_delete(self, request):
        owner = request.query.get("owner")
        self.lab.faults.clear(owner)
        return web.json_response({"faults": self.lab.faults.list(owner)})

    async def pod_fault_fallback(self, request):
        raise ApiError(501, "NotImplemented", "pod faults need the lab's kubelet (asgardlab.cluster), which is not loaded")

    # ------------------------------------------------------------------ generic resources
    async def dispatch(self, request: web.Request):
        path = request.path
        parts = [p for p in path.split("/") if p]
        # group discovery
        if path.rstrip("/") == "/api/v1":
            return web.json_response(discovery.resource_list("", "v1"))
        if len(parts) == 2 and parts[0] == "apis":
            g = discovery.api_group(parts[1])
            if g is None:
                raise NOT_FOUND_GENERIC
            return web.json_response(g)
        if len(parts) == 3 and parts[0] == "apis":
            rl = discovery.resource_list(parts[1], parts[2])
            if rl is None:
                raise NOT_FOUND_GENERIC
            return web.json_response(rl)
        t = parse_target(path)
        if t is None:
            raise NOT_FOUND_GENERIC
        m = request.method
        if t.name is None:
            if m == "GET":
                if _bool(request.query.get("watch")):
                    self._authorize(request, "watch", t)
                    return await self.watch(request, t)
                self._authorize(request, "list", t)
                return self.list(request, t)
            if m == "POST" and t.namespace is not None or (m == "POST" and not t.rt.namespaced):
                self._authorize(request, "create", t)
                return await self.create(request, t)
            if m == "DELETE" and (t.namespace is not None or not t.rt.namespaced):
                self._authorize(request, "deletecollection", t)
                return await self.delete_collection(request, t)
            raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
        if t.subresource in (None, "status"):
            verb = {"GET": "get", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(m)
            if verb is None or (t.subresource == "status" and verb == "delete"):
                raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
            self._authorize(request, verb, t)
            if verb == "get":
                return self.get(request, t)
            if verb == "update":
                return await self.replace(request, t)
            if verb == "patch":
                return await self.patch(request, t)
            return await self.delete(request, t)
        if t.subresource == "scale":
            return await self.scale(request, t)
        if t.subresource == "finalize" and m == "PUT":
            return await self.replace(request, t)
        return self.unsupported_subresource(request, t)

    def unsupported_subresource(self, request, t: Target):
        obj = self.store.get(t.rt, t.namespace, t.name)
        if obj is None:
            raise not_found(t.rt, t.name)
        if t.rt.key == R.PODS.key and t.subresource in ("log", "exec", "portforward", "attach"):
            containers = [c["name"] for c in obj.get("spec", {}).get("containers", [])]
            c = request.query.get("container") or (containers[0] if containers else "")
            raise ApiError(400, "BadRequest", f'container "{c}" in pod "{t.name}" is waiting to start: ContainerCreating')
        raise ApiError(405, "MethodNotAllowed", f"the server does not allow this method on the requested resource ({t.rt.plural}/{t.subresource})")

    # ------------------------------------------------------------------ reads
    def _selectors(self, request) -> tuple[str | None, str | None]:
        ls = request.query.get("labelSelector") or None
        fs = request.query.get("fieldSelector") or None
        try:
            if ls:
                parse_label_selector(ls)
        except ValueError as e:
            raise ApiError(400, "BadRequest", f"unable to parse requirement: {e}") from None
        try:
            if fs:
                parse_field_selector(fs)
        except ValueError as e:
            raise ApiError(400, "BadRequest", str(e)) from None
        return ls, fs

    def _respond(self, request, t: Target, obj: dict, status: int = 200) -> web.Response:
        if tables.wants_table(request.headers.get("Accept", "")):
            return web.json_response(tables.table(t.rt, [obj], obj["metadata"].get("resourceVersion", ""),
                                                  request.query.get("includeObject", "Metadata")), status=status)
        return web.json_response(obj, status=status)

    def get(self, request, t: Target):
        obj = self.store.get(t.rt, t.namespace, t.name)
        if obj is None:
            raise not_found(t.rt, t.name)
        return self._respond(request, t, obj)

    def list(self, request, t: Target):
        ls, fs = self._selectors(request)
        items, rv = self.store.list(t.rt, t.namespace, ls, fs)
        limit = int(request.query.get("limit") or 0)
        cont = request.query.get("continue")
        meta: dict = {"resourceVersion": rv}
        if cont:
            try:
                tok = json.loads(base64.urlsafe_b64decode(cont.encode()))
                start = tuple(tok["start"])
            except (ValueError, KeyError, TypeError):
                raise ApiError(400, "BadRequest", "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)") from None
            items = [o for o in items if (o["metadata"].get("namespace", ""), o["metadata"]["name"]) > start]
            meta["resourceVersion"] = str(tok.get("rv", rv))
        if limit > 0 and len(items) > limit:
            rest = len(items) - limit
            items = items[:limit]
            last = items[-1]["metadata"]
            meta["continue"] = base64.urlsafe_b64encode(json.dumps(
                {"rv": int(meta["resourceVersion"]), "start": [last.get("namespace", ""), last["name"]]}).encode()).decode()
            meta["remainingItemCount"] = rest
        if tables.wants_table(request.headers.get("Accept", "")):
            return web.json_response(tables.table(t.rt, items, meta["resourceVersion"], request.query.get("includeObject", "Metadata"),
                                                  {k: v for k, v in meta.items() if k != "resourceVersion"}))
        return web.json_response({"kind": t.rt.list_kind, "apiVersion": t.rt.api_version, "metadata": meta, "items": items})

    async def watch(self, request, t: Target):
        ls, fs = self._selectors(request)
        timeout = request.query.get("timeoutSeconds")
        timeout = float(timeout) if timeout else 1800.0
        bookmarks = _bool(request.query.get("allowWatchBookmarks"))
        send_initial = _bool(request.query.get("sendInitialEvents"))
        as_table = tables.wants_table(request.headers.get("Accept", ""))
        include = request.query.get("includeObject", "Metadata")
        rv = request.query.get("resourceVersion")
        resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json", "Cache-Control": "no-cache, private"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)

        def encode(etype: str, obj: dict) -> bytes:
            if as_table and etype != "BOOKMARK" and etype != "ERROR":
                obj = tables.table(t.rt, [obj], obj["metadata"].get("resourceVersion", ""), include)
            return (json.dumps({"type": etype, "object": obj}) + "\n").encode()

        def bookmark(extra: dict | None = None) -> bytes:
            md = {"resourceVersion": self.store.resource_version}
            if extra:
                md["annotations"] = extra
            return (json.dumps({"type": "BOOKMARK", "object": {"kind": t.rt.kind, "apiVersion": t.rt.api_version, "metadata": md}}) + "\n").encode()

        try:
            w = self.store.watch(t.rt, t.namespace, None if send_initial else rv, ls, fs)
        except ApiError as e:
            await resp.write(encode("ERROR", e.status()))
            await resp.write_eof()
            return resp
        self.lab.watches.add(w)
        deadline = time.monotonic() + timeout
        initial = w.queue.qsize() if (rv in (None, "", "0") or send_initial) else 0
        try:
            if send_initial:
                for _ in range(initial):
                    etype, obj = w.queue.get_nowait()
                    await resp.write(encode(etype, obj))
                await resp.write(bookmark({"k8s.io/initial-events-end": "true"}))
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    item = await asyncio.wait_for(w.queue.get(), timeout=min(left, 10.0 if bookmarks else left))
                except TimeoutError:
                    if bookmarks and time.monotonic() < deadline:
                        await resp.write(bookmark())
                    continue
                if item is None:
                    break
                await resp.write(encode(*item))
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            w.close()
            self.lab.watches.discard(w)
        try:
            await resp.write_eof()
        except ConnectionResetError:
            pass
        return resp

    # ------------------------------------------------------------------ writes
    def _check_body(self, t: Target, body: Any, name_from_url: str | None = None) -> dict:
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the object provided is unrecognized or invalid: expected a JSON object")
        av, kind = body.get("apiVersion"), body.get("kind")
        if av is not None and av != t.rt.api_version:
            raise ApiError(400, "BadRequest", f"the API version in the data ({av}) does not match the expected API version ({t.rt.api_version})")
        if kind is not None and kind != t.rt.kind:
            raise ApiError(400, "BadRequest", f"the kind in the data ({kind}) does not match the expected kind ({t.rt.kind})")
        md = body.get("metadata")
        if md is None:
            md = body["metadata"] = {}
        if not isinstance(md, dict):
            raise ApiError(400, "BadRequest", "metadata: expected a JSON object")
        if t.rt.namespaced:
            if md.get("namespace") and md["namespace"] != t.namespace:
                raise ApiError(400, "BadRequest", "the namespace of the provided object does not match the namespace sent on the request")
            md["namespace"] = t.namespace
        if name_from_url is not None and md.get("name") and md["name"] != name_from_url:
            raise ApiError(400, "BadRequest", f"the name of the object ({md['name']}) does not match the name on the URL ({name_from_url})")
        if name_from_url is not None:
            md["name"] = name_from_url
        body["apiVersion"] = t.rt.api_version
        body["kind"] = t.rt.kind
        return body

    async def create(self, request, t: Target):
        body = self._check_body(t, await _read_body(request))
        obj = self.store.create(t.rt, body, dry_run=_dry_run(request))
        return web.json_response(obj, status=201)

    async def replace(self, request, t: Target):
        body = self._check_body(t, await _read_body(request), t.name)
        cur = self.store.get(t.rt, t.namespace, t.name)
        if cur is None:
            raise not_found(t.rt, t.name)
        sub = "status" if t.subresource == "status" else None
        obj = self.store.update(t.rt, body, subresource=sub, dry_run=_dry_run(request), check_rv=True)
        return web.json_response(obj)

    PATCH_TYPES = ("application/json-patch+json", "application/merge-patch+json",
                   "application/strategic-merge-patch+json", "application/apply-patch+yaml")

    async def patch(self, request, t: Target):
        ctype = (request.content_type or "").lower()
        if ctype not in self.PATCH_TYPES:
            raise ApiError(415, "UnsupportedMediaType",
                           f"the body of the request was in an unknown format - accepted media types include: {', '.join(self.PATCH_TYPES)}")
        if ctype == "application/strategic-merge-patch+json" and t.rt.custom:  # custom resources: no strategic merge
            raise ApiError(415, "UnsupportedMediaType", "the body of the request was in an unknown format - accepted media "
                           "types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml")
        body = await _read_body(request, allow_yaml=ctype == "application/apply-patch+yaml")
        if body is None:
            raise ApiError(400, "BadRequest", "the body of the request was empty")
        dry = _dry_run(request)
        cur = self.store.get(t.rt, t.namespace, t.name)
        sub = "status" if t.subresource == "status" else None
        if ctype == "application/apply-patch+yaml":
            if not request.query.get("fieldManager"):
                raise ApiError(400, "BadRequest", "PATCH, application/apply-patch+yaml requires fieldManager to be set")
            body = self._check_body(t, body, t.name)
            if cur is None:
                if sub:
                    raise not_found(t.rt, t.name)
                obj = self.store.create(t.rt, body, dry_run=dry)
                return web.json_response(obj, status=201)
            new = patch.strategic_merge(cur, body, schemas.definition_for(t.rt))
            new["metadata"]["resourceVersion"] = body["metadata"].get("resourceVersion") or cur["metadata"]["resourceVersion"]
        else:
            if cur is None:
                raise not_found(t.rt, t.name)
            try:
                if ctype == "application/json-patch+json":
                    new = patch.json_patch(cur, body)
                elif ctype == "application/merge-patch+json":
                    new = patch.json_merge(cur, body)
                else:
                    new = patch.strategic_merge(cur, body, schemas.definition_for(t.rt))
            except patch.PatchError as e:
                if e.code == 422:
                    raise ApiError(422, "Invalid", str(e)) from None
                raise ApiError(400, "BadRequest", str(e)) from None
            if not isinstance(new, dict):
                raise ApiError(400, "BadRequest", "the patched object is not a JSON object")
        md = new.setdefault("metadata", {})
        md["name"] = t.name
        if t.rt.namespaced:
            md["namespace"] = t.namespace
        obj = self.store.update(t.rt, new, subresource=sub, dry_run=dry, check_rv=True)
        return web.json_response(obj)

    async def delete(self, request, t: Target):
        body = await _read_body(request) if request.can_read_body else None
        body = body if isinstance(body, dict) else {}
        prop = request.query.get("propagationPolicy") or body.get("propagationPolicy") or "Background"
        if prop not in ("Background", "Foreground", "Orphan"):
            raise ApiError(400, "BadRequest", f'propagationPolicy: Unsupported value: "{prop}": supported values: "Foreground", "Background", "Orphan"')
        gp = request.query.get("gracePeriodSeconds", body.get("gracePeriodSeconds"))
        gp = int(gp) if gp not in (None, "") else None
        dry = _dry_run(request, body)
        cur = self.store.get(t.rt, t.namespace, t.name)
        if cur is None:
            raise not_found(t.rt, t.name)
        pre = body.get("preconditions") or {}
        if pre.get("uid") and pre["uid"] != cur["metadata"]["uid"]:
            raise ApiError(409, "Conflict", f'Precondition failed: UID in precondition: {pre["uid"]}, UID in object meta: {cur["metadata"]["uid"]}')
        if pre.get("resourceVersion") and pre["resourceVersion"] != cur["metadata"]["resourceVersion"]:
            raise ApiError(409, "Conflict", f'Precondition failed: ResourceVersion in precondition: {pre["resourceVersion"]}, '
                           f'ResourceVersion in object meta: {cur["metadata"]["resourceVersion"]}')
        result = self.store.delete(t.rt, t.namespace, t.name, propagation=prop, grace_period=gp, dry_run=dry)
        still = self.store.get_ref(t.rt, t.namespace, t.name)
        if dry or (still is not None) or t.rt.key in (R.PODS.key,):
            return web.json_response(result)
        return web.json_response(success_status({"name": t.name, "group": t.rt.group, "kind": t.rt.plural, "uid": cur["metadata"]["uid"]}))

    async def delete_collection(self, request, t: Target):
        ls, fs = self._selectors(request)
        body = await _read_body(request) if request.can_read_body else None
        body = body if isinstance(body, dict) else {}
        dry = _dry_run(request, body)
        prop = request.query.get("propagationPolicy") or body.get("propagationPolicy") or "Background"
        items, rv = self.store.list(t.rt, t.namespace, ls, fs)
        out = []
        for o in items:
            md = o["metadata"]
            out.append(self.store.delete(t.rt, md.get("namespace"), md["name"], propagation=prop, dry_run=dry))
        return web.json_response({"kind": t.rt.list_kind, "apiVersion": t.rt.api_version,
                                  "metadata": {"resourceVersion": self.store.resource_version}, "items": out})

    async def scale(self, request, t: Target):
        m = request.method
        verb = {"GET": "get", "PUT": "update", "PATCH": "patch"}.get(m)
        if verb is None:
            raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
        self._authorize(request, verb, t)
        cur = self.store.get(t.rt, t.namespace, t.name)
        if cur is None:
            raise not_found(t.rt, t.name)

        def to_scale(o: dict) -> dict:
            from .selectors import selector_dict_to_string

            md = o["metadata"]
            return {"kind": "Scale", "apiVersion": "autoscaling/v1",
                    "metadata": {k: md[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp") if k in md},
                    "spec": {"replicas": o.get("spec", {}).get("replicas", 0)},
                    "status": {"replicas": o.get("status", {}).get("replicas", 0),
                               "selector": selector_dict_to_string(o.get("spec", {}).get("selector"))}}

        if verb == "get":
            return web.json_response(to_scale(cur))
        scale = to_scale(cur)
        if verb == "update":
            body = await _read_body(request)
            if not isinstance(body, dict):
                raise ApiError(400, "BadRequest", "the object provided is unrecognized or invalid")
            new_scale = body
        else:
            ctype = (request.content_type or "").lower()
            if ctype not in self.PATCH_TYPES[:3]:
                raise ApiError(415, "UnsupportedMediaType", "the body of the request was in an unknown format - accepted media types include: "
                               + ", ".join(self.PATCH_TYPES[:3]))
            body = await _read_body(request)
            try:
                if ctype == "application/json-patch+json":
                    new_scale = patch.json_patch(scale, body)
                else:
                    new_scale = patch.json_merge(scale, body)
            except patch.PatchError as e:
                raise ApiError(e.code, "Invalid" if e.code == 422 else "BadRequest", str(e)) from None
        rv = (new_scale.get("metadata") or {}).get("resourceVersion")
        if rv and rv != cur["metadata"]["resourceVersion"]:
            from .store import conflict

            raise conflict(t.rt, t.name)
        replicas = (new_scale.get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or replicas < 0:
            raise ApiError(422, "Invalid", f'Scale.autoscaling "{t.name}" is invalid: spec.replicas: Invalid value: {json.dumps(replicas)}: must be greater than or equal to 0')
        new = copy.deepcopy(cur)
        new.setdefault("spec", {})["replicas"] = replicas
        obj = self.store.update(t.rt, new, dry_run=_dry_run(request))
        return web.json_response(to_scale(obj))


# --------------------------------------------------------------------------- built-in bits of the control plane
def _seed(store: Store) -> None:
    for ns in ("default", "kube-system", "kube-public", "kube-node-lease"):
        store.create(R.NAMESPACES, {"metadata": {"name": ns}})
    store.create(R.SERVICES, {"metadata": {"name": "kubernetes", "namespace": "default", "labels": {"component": "apiserver", "provider": "kubernetes"}},
                              "spec": {"clusterIP": "10.96.0.1", "ports": [{"name": "https", "port": 443, "targetPort": 6443}]}})


def install_namespace_hooks(lab: Lab) -> None:
    store = lab.store
    loop = asyncio.get_running_loop()

    def ns_added(name: str) -> None:
        if not store.namespace_exists(name):
            return
        if store.get_ref(R.lookup("", "serviceaccounts"), name, "default") is None:
            try:
                store.create(R.lookup("", "serviceaccounts"), {"metadata": {"name": "default", "namespace": name}})
            except ApiError:
                pass
        if store.get_ref(R.CONFIGMAPS, name, "kube-root-ca.crt") is None:
            try:
                store.create(R.CONFIGMAPS, {"metadata": {"name": "kube-root-ca.crt", "namespace": name,
                                                         "annotations": {"kubernetes.io/description": "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters."}},
                                            "data": {"ca.crt": lab.ca_crt.read_text()}})
            except ApiError:
                pass

    terminating: set[str] = set()

    async def finalize_ns(name: str) -> None:
        try:
            for _ in range(1200):
                left = 0
                for rt in R.ALL_TYPES:
                    if not rt.namespaced:
                        continue
                    for obj in list(store.iter_refs(rt, name)):
                        left += 1
                        if not obj["metadata"].get("deletionTimestamp"):
                            try:
                                store.delete(rt, name, obj["metadata"]["name"])
                            except ApiError:
                                pass
                        elif rt.key != R.PODS.key and obj["metadata"].get("finalizers"):
                            pass
                if left == 0:
                    break
                await asyncio.sleep(0.1)
            store.finalize_delete(R.NAMESPACES, None, name)
        finally:
            terminating.discard(name)

    def listener(etype, rt, obj, old):
        if rt.key != R.NAMESPACES.key:
            return
        name = obj["metadata"]["name"]
        if etype == "ADDED":
            loop.call_soon(ns_added, name)
        elif etype == "MODIFIED" and obj["metadata"].get("deletionTimestamp") and lab.namespace_controller and name not in terminating:
            terminating.add(name)
            loop.create_task(finalize_ns(name))

    store.add_listener(listener)


# --------------------------------------------------------------------------- app
async def build_app(lab: Lab, requests_log) -> web.Application:
    app = web.Application(middlewares=make_middlewares(lab, requests_log), client_max_size=64 * 1024 * 1024)
    app["lab"] = lab
    lab.watches = set()
    from . import rbac  # RBAC for every identity but the lab admin, + token minting (rbac.py)

    rbac.install(app, lab)
    api = Api(lab)
    cluster = None
    try:
        cluster = importlib.import_module("asgardlab.cluster")
    except ModuleNotFoundError as e:
        if e.name != "asgardlab.cluster":
            raise
    if cluster is not None and hasattr(cluster, "setup"):
        res = cluster.setup(app, lab.store, lab)
        if inspect.isawaitable(res):
            await res
        log.info("asgardlab.cluster set up (kubelet/controllers)")
    else:
        log.info("asgardlab.cluster not present: pods stay Pending")
    app["cluster"] = cluster
    r = app.router
    for p in ("/readyz", "/healthz", "/livez"):
        r.add_get(p, api.healthz)
    r.add_get("/version", api.version)
    r.add_get("/version/", api.version)
    r.add_get("/api", api.api_root)
    r.add_get("/api/", api.api_root)
    r.add_get("/apis", api.apis_root)
    r.add_get("/apis/", api.apis_root)
    r.add_get("/openapi/v2", api.openapi_v2)
    r.add_get("/openapi/v3", api.openapi_v3)
    r.add_get("/openapi/v3/", api.openapi_v3)
    r.add_get("/openapi/v3/{tail:.+}", api.openapi_v3_gv)
    r.add_get("/lab/faults", api.faults_get)
    r.add_post("/lab/faults", api.faults_post)
    r.add_delete("/lab/faults", api.faults_delete)
    r.add_post("/lab/pods/{ns}/{name}/fault", api.pod_fault_fallback)
    r.add_route("*", "/api/{tail:.*}", api.dispatch)
    r.add_route("*", "/apis/{tail:.*}", api.dispatch)
    return app


def ssl_context(lab: Lab) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(lab.server_crt), str(lab.server_key))
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


async def serve(lab: Lab, ready: Callable[[], None] | None = None, sock=None) -> None:
    """Run until SIGTERM/SIGINT. ``sock`` is an already bound listening socket (port chosen by the caller)."""
    import signal

    from .tls import make_pki

    make_pki(lab.state_dir / "pki")
    lab.token = lab.token or secrets.token_urlsafe(32)
    lab.tokens.setdefault(lab.token, "asgard-lab-admin")
    lab.store = lab.store or Store()
    lab.store.admission = Admission(lab.store)
    lab.faults = FaultInjector()
    install_namespace_hooks(lab)
    _seed(lab.store)
    requests_log = open(lab.requests_log, "a", encoding="utf-8")  # noqa: SIM115 - closed at shutdown
    app = await build_app(lab, requests_log)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
    await runner.setup()
    site = web.SockSite(runner, sock, ssl_context=ssl_context(lab))
    await site.start()
    write_kubeconfig(lab)
    log.info("lab API listening on %s", lab.api_url)
    if ready:
        ready()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # warm the OpenAPI documents in the background so the first kubectl apply is fast
    loop.run_in_executor(None, schemas.openapi_v2_bytes)
    await stop.wait()
    log.info("shutting down")
    cluster = app.get("cluster")
    if cluster is not None and hasattr(cluster, "shutdown"):
        try:
            res = cluster.shutdown()
            if inspect.isawaitable(res):
                await res
        except Exception:  # noqa: BLE001 - still stop the API
            log.exception("cluster.shutdown failed")
    for w in list(lab.watches):
        w.close()
    await runner.cleanup()
    requests_log.close()
    log.info("stopped")
