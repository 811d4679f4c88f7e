"""HTTP handlers for pods/log, pods/exec, pods/portforward and pod fault injection.

Exec and port-forward speak the WebSocket channel protocol (``v4.channel.k8s.io``, also
``channel.k8s.io``): every frame is binary, its first byte the channel.
Exec: 0 stdin, 1 stdout, 2 stderr, 3 error (a JSON v1 Status; exit code in details.causes ExitCode),
4 resize (ignored). Port-forward: port i uses data channel 2i and error channel 2i+1; right after the upgrade
each channel gets a 3-byte frame ``[channel, port & 0xff, port >> 8]``; when the pod side reaches EOF the
server flushes and closes the WebSocket. The connection is made inside the pod's network namespace, to
127.0.0.1:<port> (os.setns in a worker thread that switches back afterwards).

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
import os
import socket
import threading

from aiohttp import WSMsgType, web

from .. import resources as R
from ..store import ApiError, not_found
from .pod import Container, PodWorker

log = logging.getLogger("asgardlab.kubelet")
PROTOCOLS = ("v4.channel.k8s.io", "channel.k8s.io")


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

    # ------------------------------------------------------------------ exec
    async def exec(self, request: web.Request):
        q = request.query
        try:
            pod, w = self._pod(request)
            c = self._container(pod, w, q.get("container"))
            cmd = q.getall("command", [])
            if not cmd:
                raise _bad("you must specify at least 1 command")
            if c.proc is None:
                raise _bad(f"container {c.name} is not running in pod {pod['metadata']['name']}")
        except ApiError as exc:
            return _error_response(exc)
        # v4 when offered (the Python client); kubectl 1.30+ offers only v5, whose framing is v4 plus a
        # stdin-close signal on channel 255.
        offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")]
        chosen = next((p for p in ("v4.channel.k8s.io", "v5.channel.k8s.io", "channel.k8s.io") if p in offered), "channel.k8s.io")
        ws = web.WebSocketResponse(protocols=(chosen,), autoping=True)
        await ws.prepare(request)
        v4 = ws.ws_protocol in ("v4.channel.k8s.io", "v5.channel.k8s.io")
        want_stdin = q.get("stdin") in ("true", "1")
        try:
            proc = await w.exec_process(c, cmd, stdin=want_stdin)
        except ApiError as exc:
            await ws.send_bytes(b"\x03" + (json.dumps(exc.status()).encode() if v4 else exc.message.encode()))
            await ws.close()
            return ws

        async def pump(stream, ch: int):
            while True:
                data = await stream.read(65536)
                if not data:
                    return
                await ws.send_bytes(bytes([ch]) + data)

        async def reader():
            async for msg in ws:
                if msg.type in (WSMsgType.BINARY, WSMsgType.TEXT):
                    data = msg.data if isinstance(msg.data, bytes) else msg.data.encode()
                    if data[:1] == b"\xff" and data[1:2] == b"\x00" and proc.stdin is not None:
                        proc.stdin.close()  # v5: the client closed stdin
                    elif data and data[0] == 0 and proc.stdin is not None:
                        try:
                            proc.stdin.write(data[1:])
                            await proc.stdin.drain()
                        except (BrokenPipeError, ConnectionResetError):
                            pass
                elif msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                    break
            if proc.stdin is not None and not proc.stdin.is_closing():
                proc.stdin.close()

        rd = asyncio.create_task(reader())
        try:
            await asyncio.gather(pump(proc.stdout, 1), pump(proc.stderr, 2))
            rc = await proc.wait()
            if rc == 0:
                status = {"metadata": {}, "status": "Success"}
            else:
                code = rc if rc > 0 else 128 - rc
                status = {
                    "metadata": {}, "status": "Failure",
                    "message": f"command terminated with non-zero exit code: error executing command [{' '.join(cmd)}], exit code {code}",
                    "reason": "NonZeroExitCode",
                    "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
                }
            if not ws.closed:
                await ws.send_bytes(b"\x03" + (json.dumps(status).encode() if v4 else (b"" if rc == 0 else status["message"].encode())))
                await ws.close()
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            rd.cancel()
            if proc.returncode is None:
                try:
                    os.killpg(proc.pid, 9)
                except ProcessLookupError:
                    pass
                await proc.wait()
        return ws

    # ------------------------------------------------------------------ port-forward
    async def portforward(self, request: web.Request):
        q = request.query
        try:
            pod, w = self._pod(request)
            raw = ",".join(q.getall("ports", []))
            if not raw:
                raise _bad("at least 1 port is required (query parameter ports)")
            try:
                ports = [int(p) for p in raw.split(",") if p.strip()]
            except ValueError:
                raise _bad(f"ports: expected comma-separated port numbers, got {raw!r}") from None
            for p in ports:
                if not 0 < p < 65536:
                    raise _bad(f"ports: {p} is not a valid port number (1-65535)")
            if w is None or w.netns is None or (pod.get("status") or {}).get("phase") != "Running":
                raise _bad(f"unable to upgrade connection: pod {pod['metadata']['name']} is not running")
        except ApiError as exc:
            return _error_response(exc)
        ws = web.WebSocketResponse(protocols=PROTOCOLS, autoping=True, max_msg_size=0)
        await ws.prepare(request)
        for i, p in enumerate(ports):
            for ch in (2 * i, 2 * i + 1):
                await ws.send_bytes(bytes([ch, p & 0xFF, p >> 8]))
        writers: dict[int, asyncio.StreamWriter] = {}
        pumps = []
        pname, uid = pod["metadata"]["name"], pod["metadata"]["uid"]
        refused = set(w.fault().get("refusePorts") or [])
        for i, p in enumerate(ports):
            try:
                if p in refused:
                    raise ConnectionRefusedError(111, "connection refused")
                sock = await connect_in_netns(w.netns, p)
                reader, writer = await asyncio.open_connection(sock=sock)
            except OSError as exc:
                msg = (f"error forwarding port {p} to pod {pname}, uid {uid}: failed to connect to localhost:{p} inside namespace "
                       f"\"{w.netns}\", IPv4: dial tcp4 127.0.0.1:{p}: connect: {(exc.strerror or str(exc)).lower()}")
                await ws.send_bytes(bytes([2 * i + 1]) + msg.encode())
                continue
            writers[2 * i] = writer
            pumps.append(asyncio.create_task(self._pf_pump(reader, ws, 2 * i)))

        async def from_client():
            async for msg in ws:
                if msg.type in (WSMsgType.BINARY, WSMsgType.TEXT):
                    data = msg.data if isinstance(msg.data, bytes) else msg.data.encode()
                    if not data:
                        continue
                    wr = writers.get(data[0])
                    if wr is not None and len(data) > 1:
                        wr.write(data[1:])
                        try:
                            await wr.drain()
                        except ConnectionError:
                            pass
                elif msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                    break

        fc = asyncio.create_task(from_client())
        try:
            if pumps:
                await asyncio.wait([fc, *pumps], return_when=asyncio.FIRST_COMPLETED)
            else:
                await asyncio.wait([fc], timeout=5)
        finally:
            if not ws.closed:
                await ws.close()
            fc.cancel()
            for t in pumps:
                t.cancel()
            for wr in writers.values():
                wr.close()
        return ws

    @staticmethod
    async def _pf_pump(reader: asyncio.StreamReader, ws: web.WebSocketResponse, ch: int) -> None:
        while True:
            data = await reader.read(65536)
            if not data:
                return  # EOF from the pod: everything read was sent; the caller closes the websocket
            await ws.send_bytes(bytes([ch]) + data)

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


_setns_lock = threading.Lock()


def _connect_sync(netns: str, port: int) -> socket.socket:
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{netns}", os.O_RDONLY)
    try:
        os.setns(target, os.CLONE_NEWNET)
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
        finally:
            os.setns(own, os.CLONE_NEWNET)
        s.setblocking(False)
        return s
    finally:
        os.close(own)
        os.close(target)


async def connect_in_netns(netns: str, port: int) -> socket.socket:
    """A TCP socket connected to 127.0.0.1:port inside the pod's network namespace."""
    return await asyncio.to_thread(_connect_sync, netns, port)
