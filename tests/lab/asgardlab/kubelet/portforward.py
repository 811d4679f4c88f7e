"""pods/{name}/portforward in the three forms clients speak; ``Streams.portforward`` picks one from the upgrade.

1. WebSocket offering ``SPDY/3.1+portforward.k8s.io`` (kubectl 1.31+ default): the SPDY session of 2 tunneled
   in binary messages (kube-apiserver ``pkg/util/proxy/streamtunnel.go``).
2. ``Upgrade: SPDY/3.1`` with ``X-Stream-Protocol-Version: portforward.k8s.io`` (kubectl with
   ``KUBECTL_PORT_FORWARD_WEBSOCKETS=false``, and its fallback when the WebSocket upgrade is refused). Ports travel
   in stream headers, never in the URL. Each forwarded connection is two streams sharing a ``requestid``:
   ``streamtype: error`` and ``streamtype: data``, both carrying ``port``; forwarding starts when both exist; an
   incomplete pair after 30 s gets ``(conn=..., request=N) timed out waiting for streams``; a failure is written
   as text on the error stream (``error forwarding port P to pod NAME, uid UID: ...``), then both streams are
   half-closed (kubelet ``pkg/kubelet/cri/streaming/portforward/httpstream.go``). When one direction ends the
   other gets one more second (containerd's ``portForward``).
3. WebSocket ``v4.channel.k8s.io`` / ``channel.k8s.io`` with ``?ports=`` (kubernetes.stream.portforward, this
   collection's modules; kubelet ``.../portforward/websocket.go``): port i uses data channel 2i and error channel
   2i+1; right after the upgrade each channel gets ``[channel, port & 0xff, port >> 8]``; when the pod side
   reaches EOF the server flushes and closes the WebSocket.
The target connection is made inside the pod's network namespace, to 127.0.0.1:<port>.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket

from aiohttp import WSMsgType, web

from ..store import ApiError
from . import httpstream
from .spdy import Session, Stream

log = logging.getLogger("asgardlab.kubelet")
SPDY_VERSIONS = ("portforward.k8s.io",)
CHANNEL_PROTOCOLS = ("v4.channel.k8s.io", "channel.k8s.io")
STREAM_CREATION_TIMEOUT = 30.0
LINGER = 1.0  # seconds the second direction gets once the first one ended


class ForwardError(Exception):
    """Why a forwarded connection failed, worded as the kubelet writes it on the error stream."""


class Target:
    """The pod a port-forward session talks to, fixed when the session starts."""

    def __init__(self, kubelet, pod: dict, worker) -> None:
        self.k = kubelet
        self.name, self.uid = pod["metadata"]["name"], pod["metadata"]["uid"]
        self.netns = worker.netns

    async def dial(self, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        w = self.k.workers.get(self.uid)
        if w is None or w.stopping or w.netns != self.netns:
            raise self.error(port, f'failed to find sandbox "{self.netns}" in store: not found')
        try:
            if port in (w.fault().get("refusePorts") or []):
                raise ConnectionRefusedError(111, "connection refused")
            sock = await asyncio.to_thread(_connect_in_netns, self.netns, port)
            return await asyncio.open_connection(sock=sock)
        except OSError as exc:
            raise self.error(port, f'failed to connect to localhost:{port} inside namespace "{self.netns}", IPv4: '
                                   f"dial tcp4 127.0.0.1:{port}: connect: {(exc.strerror or str(exc)).lower()}") from None

    def error(self, port: int, why: str) -> ForwardError:
        return ForwardError(f"error forwarding port {port} to pod {self.name}, uid {self.uid}: {why}")


def _connect_in_netns(netns: str, port: int) -> socket.socket:
    """A TCP socket connected to 127.0.0.1:port inside ``netns`` (os.setns switches only this thread)."""
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


# ---------------------------------------------------------------------------------------------- SPDY (1 and 2)
def _stream_problem(headers: dict[str, str]) -> str | None:
    """Why the kubelet refuses a stream (it logs this and resets the stream), or None."""
    port = headers.get("port", "")
    if not port:
        return '"port" header is required'
    if not port.isdigit() or not 0 < int(port) < 65536:
        return f"unable to parse {port!r} as a port"
    kind = headers.get("streamtype", "")
    if not kind:
        return '"streamType" header is required'
    if kind not in ("error", "data"):
        return f"invalid stream type {kind!r}"
    return None


def _request_id(stream: Stream) -> str:
    """The ``requestid`` header; old clients without it: the error stream's id, or the data stream's id - 2."""
    rid = stream.headers.get("requestid")
    if rid:
        return rid
    return str(stream.id if stream.headers["streamtype"] == "error" else stream.id - 2)


async def serve_spdy(session: Session, target: Target) -> None:
    """Pair the client's streams by request id and forward each pair until the session ends."""
    pairs: dict[str, dict[str, Stream]] = {}
    tasks: set[asyncio.Task] = set()

    def spawn(coro) -> None:
        t = asyncio.create_task(coro)
        tasks.add(t)
        t.add_done_callback(tasks.discard)

    async def expire(rid: str) -> None:
        await asyncio.sleep(STREAM_CREATION_TIMEOUT)
        pair = pairs.pop(rid, None)
        if pair and "error" in pair:
            await pair["error"].write(f"(conn=spdy, request={rid}) timed out waiting for streams".encode())

    try:
        async for stream in session:
            problem = _stream_problem(stream.headers)
            if problem:
                log.info("port-forward to %s: stream rejected: %s", target.name, problem)
                await stream.refuse()
                continue
            await stream.accept()
            rid, kind = _request_id(stream), stream.headers["streamtype"]
            pair = pairs.get(rid)
            if pair is None:
                pair = pairs[rid] = {}
                spawn(expire(rid))
            if kind in pair:
                if "error" in pair:
                    await pair["error"].write(f"error processing stream for request {rid}: {kind} stream already assigned".encode())
                continue
            pair[kind] = stream
            if len(pair) == 2:
                del pairs[rid]
                spawn(_forward_pair(target, pair["data"], pair["error"]))
    finally:
        for t in tasks:
            t.cancel()


async def _forward_pair(target: Target, data: Stream, error: Stream) -> None:
    port = int(data.headers["port"])
    try:
        reader, writer = await target.dial(port)
        try:
            await _copy_both(data, reader, writer)
        except OSError as exc:
            raise target.error(port, f"read: {(exc.strerror or str(exc)).lower()}") from None
        finally:
            writer.close()
    except ForwardError as exc:
        await error.write(str(exc).encode())
    finally:
        await error.close()
        await data.close()


async def _copy_both(stream: Stream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    async def up() -> None:  # client -> pod; the client's FIN half-closes the pod connection
        while chunk := await stream.read():
            writer.write(chunk)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()

    async def down() -> None:  # pod -> client
        while chunk := await reader.read(65536):
            await stream.write(chunk)

    tasks = {asyncio.create_task(up()), asyncio.create_task(down())}
    done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    if pending:
        more, pending = await asyncio.wait(pending, timeout=LINGER)
        done |= more
    for t in pending:
        t.cancel()
    for t in done:
        if t.exception() is not None:
            raise t.exception()


# ---------------------------------------------------------------------------------------------- channels (3)
def parse_ports(raw: str) -> list[int]:
    """``?ports=`` as the Python client sends it (comma-separated; repeated parameters joined)."""
    if not raw:
        raise _bad("at least 1 port is required (query parameter ports)")
    try:
        ports = [int(p) for p in raw.split(",") if p.strip()]
    except ValueError:
        raise _bad(f"ports: expected comma-separated port numbers, got {raw!r}") from None
    for p in ports:
        if not 0 < p < 65536:
            raise _bad(f"ports: {p} is not a valid port number (1-65535)")
    return ports


def _bad(msg: str) -> ApiError:
    return ApiError(400, "BadRequest", msg)


async def serve_channels(request: web.Request, target: Target, ports: list[int]) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(protocols=CHANNEL_PROTOCOLS, autoping=True, max_msg_size=0)
    await ws.prepare(request)
    for i, p in enumerate(ports):
        for ch in (2 * i, 2 * i + 1):
            await ws.send_bytes(bytes([ch, p & 0xFF, p >> 8]))
    writers: dict[int, asyncio.StreamWriter] = {}
    pumps = []
    for i, p in enumerate(ports):
        try:
            reader, writer = await target.dial(p)
        except ForwardError as exc:
            await ws.send_bytes(bytes([2 * i + 1]) + str(exc).encode())
            continue
        writers[2 * i] = writer
        pumps.append(asyncio.create_task(_channel_pump(reader, ws, 2 * i)))

    async def from_client():
        async for msg in ws:
            if msg.type != WSMsgType.BINARY:
                break
            wr = writers.get(msg.data[0]) if msg.data else None
            if wr is not None and len(msg.data) > 1:
                wr.write(msg.data[1:])
                try:
                    await wr.drain()
                except ConnectionError:
                    pass

    fc = asyncio.create_task(from_client())
    try:
        await asyncio.wait([fc, *pumps], return_when=asyncio.FIRST_COMPLETED, timeout=None if pumps else 5)
    finally:
        if not ws.closed:
            await ws.close()
        fc.cancel()
        for t in pumps:
            t.cancel()
        for wr in writers.values():
            wr.close()
    return ws


async def _channel_pump(reader: asyncio.StreamReader, ws: web.WebSocketResponse, ch: int) -> None:
    while data := await reader.read(65536):
        await ws.send_bytes(bytes([ch]) + data)
    # EOF from the pod: everything read was sent; the caller closes the WebSocket


async def serve(request: web.Request, target: Target) -> web.StreamResponse:
    """Pick the flavour from the upgrade the request asks for. Raises ApiError (before any upgrade) for a
    channel request without valid ``ports``."""
    offered = httpstream.websocket_protocols(request)
    tunnel = httpstream.TUNNEL_PREFIX + SPDY_VERSIONS[0]
    if tunnel in offered:
        version = SPDY_VERSIONS[0]
    elif not offered and httpstream.is_spdy_upgrade(request):
        version = httpstream.negotiate(request, SPDY_VERSIONS)
        if isinstance(version, web.Response):
            return version
    else:
        return await serve_channels(request, target, parse_ports(",".join(request.query.getall("ports", []))))
    async with httpstream.spdy_session(request, version, tunneled=tunnel in offered) as (session, resp):
        await serve_spdy(session, target)
    return resp
