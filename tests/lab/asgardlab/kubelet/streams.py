"""HTTP handlers for pods/log, pods/exec, pods/attach, pods/portforward and pod fault injection.

exec and attach: remotecommand.py (WebSocket channels v5/v4/channel.k8s.io, and SPDY/3.1).
portforward: portforward.py (SPDY/3.1 tunneled in a WebSocket, SPDY/3.1 upgrade, and WebSocket channels with
``?ports=``). The SPDY framing is spdy.py, the upgrade handshakes httpstream.py.

Fault injection (``POST /lab/pods/{ns}/{name}/fault``, JSON body, any of):
- ``{"kill": true}`` or ``{"kill": "<container>"}``: SIGKILL the container now (exit 137, reason Error);
  it restarts per restartPolicy (with CrashLoopBackOff backoff from the second crash on).
- ``{"refusePorts": [5000]}``: probes and port-forwards to these ports of the pod get "connection refused"
  (enforced by the lab's kubelet; direct pod-IP connections from other pods are not affected).
- ``{"delayStartSeconds": N}``: the pod's containers start N seconds late; use name ``*`` to apply it to
  pods created later in the namespace.
``DELETE`` on the same path clears the pod's persistent faults (refusePorts, delayStartSeconds).
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import json
import logging

from aiohttp import web

from .. import resources as R
from ..store import ApiError, not_found
from . import portforward, remotecommand
from .pod import Container, PodWorker

log = logging.getLogger("asgardlab.kubelet")


def _bad(msg: str) -> ApiError:
    return ApiError(400, "BadRequest", msg)


def _error_response(exc: ApiError) -> web.Response:
    return web.json_response(exc.status(), status=exc.code)


class Streams:
    def __init__(self, kubelet) -> None:
        self.k = kubelet

    def register(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/api/v1/namespaces/{ns}/pods/{name}/log", self.logs)
        for m in ("GET", "POST"):
            r.add_route(m, "/api/v1/namespaces/{ns}/pods/{name}/exec", self.exec)
            r.add_route(m, "/api/v1/namespaces/{ns}/pods/{name}/attach", self.attach)
            r.add_route(m, "/api/v1/namespaces/{ns}/pods/{name}/portforward", self.portforward)
        r.add_post("/lab/pods/{ns}/{name}/fault", self.fault_post)
        r.add_delete("/lab/pods/{ns}/{name}/fault", self.fault_delete)

    # ------------------------------------------------------------------ lookup
    def _pod(self, request) -> tuple[dict, PodWorker | None]:
        ns, name = request.match_info["ns"], request.match_info["name"]
        if not self.k.store.namespace_exists(ns):
            raise ApiError(404, "NotFound", f'namespaces "{ns}" not found', {"name": ns, "kind": "namespaces"})
        pod = self.k.store.get(R.PODS, ns, name)
        if pod is None:
            raise not_found(R.PODS, name)
        return pod, self.k.workers.get(pod["metadata"]["uid"])

    def _container(self, pod: dict, w: PodWorker | None, name: str | None) -> Container:
        spec_names = [c["name"] for c in pod["spec"].get("containers") or []]
        init_names = [c["name"] for c in pod["spec"].get("initContainers") or []]
        pname = pod["metadata"]["name"]
        if not name:
            if len(spec_names) != 1:
                raise _bad(f"a container name must be specified for pod {pname}, choose one of: [{' '.join(spec_names)}]"
                           + (f" or one of the init containers: [{' '.join(init_names)}]" if init_names else ""))
            name = spec_names[0]
        if name not in spec_names + init_names:
            raise _bad(f"container {name} is not valid for pod {pname}")
        c = w.container(name) if w else None
        if c is None:
            raise _bad(f'container "{name}" in pod "{pname}" is waiting to start: ContainerCreating')
        return c

    # ------------------------------------------------------------------ logs
    async def logs(self, request: web.Request):
        try:
            return await self._logs(request)
        except ApiError as exc:
            return _error_response(exc)

    async def _logs(self, request: web.Request):
        q = request.query
        pod, w = self._pod(request)
        c = self._container(pod, w, q.get("container"))
        pname = pod["metadata"]["name"]

        def intq(key):
            if key not in q:
                return None
            try:
                v = int(q[key])
            except ValueError:
                raise _bad(f"{key}: expected an integer, got {q[key]!r}") from None
            if v < 0:
                raise _bad(f"{key}: must be greater than or equal to 0")
            return v

        tail, since, limit = intq("tailLines"), intq("sinceSeconds"), intq("limitBytes")
        stamps = q.get("timestamps") in ("true", "1")
        follow = q.get("follow") in ("true", "1")
        previous = q.get("previous") in ("true", "1")
        if previous:
            if c.restart_count < 1:
                raise _bad(f'previous terminated container "{c.name}" in pod "{pname}" not found')
            path = w.log_path(c, c.restart_count - 1)
            follow = False
        else:
            waiting = c.state.get("waiting")
            if waiting and not c.container_id:
                raise _bad(f'container "{c.name}" in pod "{pname}" is waiting to start: {waiting.get("reason")}')
            path = w.log_path(c, c.restart_count)  # in CrashLoopBackOff: the last run's log, as kubelet
        since_ts = None
        if since is not None:
            since_ts = (_dt.datetime.now(_dt.UTC) - _dt.timedelta(seconds=since)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

        def render(line: bytes) -> bytes | None:
            parts = line.rstrip(b"\n").split(b" ", 3)
            if len(parts) < 3:
                return None
            ts, _stream, tag = parts[0], parts[1], parts[2]
            content = parts[3] if len(parts) > 3 else b""
            if since_ts and ts.decode() < since_ts:
                return None
            out = (ts + b" " if stamps else b"") + content
            return out + (b"\n" if tag == b"F" else b"")

        data = path.read_bytes() if path.exists() else b""
        lines = [x for x in (render(line) for line in data.splitlines(keepends=True)) if x is not None]
        if tail is not None:
            lines = lines[-tail:] if tail else []
        body = b"".join(lines)
        if limit is not None:
            body = body[:limit]
        if not follow:
            return web.Response(body=body, content_type="text/plain", charset="utf-8")
        resp = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
        await resp.prepare(request)
        sent = len(body)
        await resp.write(body)
        offset = len(data)
        gen = c.gen
        run_index = c.restart_count
        buf = b""
        while True:
            if limit is not None and sent >= limit:
                break
            chunk = b""
            if path.exists():
                with open(path, "rb") as f:
                    f.seek(offset)
                    chunk = f.read()
            offset += len(chunk)
            buf += chunk
            *complete, buf = buf.split(b"\n")
            out = b"".join(x for x in (render(line + b"\n") for line in complete) if x is not None)
            if out:
                if limit is not None:
                    out = out[: limit - sent]
                await resp.write(out)
                sent += len(out)
            running = c.proc is not None and c.gen == gen and c.restart_count == run_index
            if not chunk and not running:
                break
            await asyncio.sleep(0.2)
        await resp.write_eof()
        return resp

    # ------------------------------------------------------------------ exec, attach
    def _running(self, request, command: bool) -> tuple[PodWorker, Container, list[str], remotecommand.Options]:
        """The running container an exec/attach request names, its command and options (400 otherwise)."""
        pod, w = self._pod(request)
        c = self._container(pod, w, request.query.get("container"))
        cmd = request.query.getall("command", [])
        if command and not cmd:
            raise _bad("you must specify at least 1 command")
        if c.proc is None:
            raise _bad(f"container {c.name} is not running in pod {pod['metadata']['name']}")
        return w, c, cmd, remotecommand.Options.parse(request.query)

    async def exec(self, request: web.Request):
        try:
            w, c, cmd, opts = self._running(request, command=True)
        except ApiError as exc:
            return _error_response(exc)
        return await remotecommand.serve(request, opts, lambda ch: remotecommand.run_exec(w, c, cmd, opts, ch))

    async def attach(self, request: web.Request):
        try:
            w, c, _, opts = self._running(request, command=False)
        except ApiError as exc:
            return _error_response(exc)
        return await remotecommand.serve(request, opts, lambda ch: remotecommand.run_attach(w, c, opts, ch))

    # ------------------------------------------------------------------ port-forward
    async def portforward(self, request: web.Request):
        try:
            pod, w = self._pod(request)
            if w is None or w.netns is None or (pod.get("status") or {}).get("phase") != "Running":
                raise _bad(f"unable to upgrade connection: pod {pod['metadata']['name']} is not running")
            return await portforward.serve(request, portforward.Target(self.k, pod, w))
        except ApiError as exc:
            return _error_response(exc)

    # ------------------------------------------------------------------ faults
    async def fault_post(self, request: web.Request):
        ns, name = request.match_info["ns"], request.match_info["name"]
        try:
            try:
                body = await request.json()
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise _bad("fault body must be a JSON object with any of: kill (true or a container name), "
                           "refusePorts (list of ints), delayStartSeconds (number)") from None
            if not isinstance(body, dict) or not body or set(body) - {"kill", "refusePorts", "delayStartSeconds"}:
                raise _bad("fault body must be a JSON object with any of: kill (true or a container name), "
                           "refusePorts (list of ints), delayStartSeconds (number)")
            rp = body.get("refusePorts")
            if rp is not None and (not isinstance(rp, list) or not all(isinstance(p, int) for p in rp)):
                raise _bad(f"refusePorts: expected a list of port numbers, got {rp!r}")
            ds = body.get("delayStartSeconds")
            if ds is not None and (not isinstance(ds, (int, float)) or ds < 0):
                raise _bad(f"delayStartSeconds: expected a non-negative number, got {ds!r}")
            w = None
            if name != "*":
                pod, w = self._pod(request)
            persistent = {k: v for k, v in body.items() if k in ("refusePorts", "delayStartSeconds")}
            if persistent:
                self.k.faults.setdefault((ns, name), {}).update(persistent)
            killed = None
            if body.get("kill"):
                if name == "*":
                    raise _bad("kill needs a pod name, not '*'")
                c = self._container(pod, w, body["kill"] if isinstance(body["kill"], str) else None)
                if c.proc is None:
                    raise _bad(f"container {c.name} is not running")
                killed = c.name
                await w.kill_container(c, 0)
        except ApiError as exc:
            return _error_response(exc)
        return web.json_response({"namespace": ns, "name": name, "faults": self.k.faults.get((ns, name), {}), "killed": killed}, status=201)

    async def fault_delete(self, request: web.Request):
        ns, name = request.match_info["ns"], request.match_info["name"]
        self.k.faults.pop((ns, name), None)
        return web.json_response({"namespace": ns, "name": name, "faults": {}})
