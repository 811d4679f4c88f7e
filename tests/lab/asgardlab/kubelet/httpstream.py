"""Upgrading an aiohttp request to a SPDY/3.1 session, directly or tunneled in a WebSocket.

- Direct (k8s.io/apimachinery ``pkg/util/httpstream/httpstream.go Handshake`` and ``httpstream/spdy/upgrade.go``):
  the client sends ``Connection: Upgrade``, ``Upgrade: SPDY/3.1`` and the protocol versions it speaks in
  ``X-Stream-Protocol-Version``; the server picks the first client version it supports and answers 101 with
  ``Connection: Upgrade``, ``Upgrade: SPDY/3.1`` and the chosen ``X-Stream-Protocol-Version``. Then both sides
  speak SPDY on the connection; the server never speaks first.
- Tunneled (kube-apiserver ``pkg/util/proxy/streamtunnel.go``, client-go ``tools/portforward/
  tunneling_connection.go``): a WebSocket with subprotocol ``SPDY/3.1+<version>``; the SPDY bytes travel in
  binary messages whose boundaries mean nothing. A text message ends the tunnel.
"""

from __future__ import annotations

import asyncio
import contextlib

from aiohttp import WSMsgType, web

from . import spdy

TUNNEL_PREFIX = "SPDY/3.1+"


def websocket_protocols(request: web.Request) -> list[str]:
    """The subprotocols a WebSocket upgrade offers ([] when the request is not a WebSocket upgrade)."""
    if request.headers.get("Upgrade", "").lower() != "websocket":
        return []
    return [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]


def is_spdy_upgrade(request: web.Request) -> bool:
    return ("upgrade" in request.headers.get("Connection", "").lower()
            and request.headers.get("Upgrade", "").lower() == "spdy/3.1")


def negotiate(request: web.Request, supported: tuple[str, ...]) -> str | web.Response:
    """The first version in the client's ``X-Stream-Protocol-Version`` list that the server supports, or the
    error answer Handshake gives (400 when the header is missing, 403 with the accepted versions otherwise)."""
    offered = [v.strip() for h in request.headers.getall("X-Stream-Protocol-Version", []) for v in h.split(",") if v.strip()]
    if not offered:
        return web.Response(status=400, text="unable to upgrade: X-Stream-Protocol-Version is required\n")
    chosen = next((v for v in offered if v in supported), None)
    if chosen is None:
        return web.Response(
            status=403, headers=[("X-Accepted-Stream-Protocol-Versions", v) for v in supported],
            text=f"unable to upgrade: unable to negotiate protocol: client supports [{' '.join(offered)}], "
                 f"server accepts [{' '.join(supported)}]\n")
    return chosen


class _Feed:
    """What aiohttp feeds an upgraded connection's bytes to (the interface of its own WebSocket reader)."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.reader = reader

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self.reader.feed_data(data)
        return False, b""

    def feed_eof(self) -> None:
        self.reader.feed_eof()


async def _pump_messages(ws: web.WebSocketResponse, reader: asyncio.StreamReader) -> None:
    async for msg in ws:
        if msg.type != WSMsgType.BINARY:
            break
        reader.feed_data(msg.data)
    reader.feed_eof()


@contextlib.asynccontextmanager
async def spdy_session(request: web.Request, version: str, tunneled: bool):
    """Yield ``(session, response)`` with the session running; on exit say GOAWAY and close the connection.
    The handler returns ``response``."""
    reader = asyncio.StreamReader()
    pump = None
    if tunneled:
        resp = web.WebSocketResponse(protocols=(TUNNEL_PREFIX + version,), max_msg_size=0)
        await resp.prepare(request)
        pump = asyncio.create_task(_pump_messages(resp, reader))
        write = resp.send_bytes
    else:
        resp = web.StreamResponse(status=101, headers={
            "Connection": "Upgrade", "Upgrade": "SPDY/3.1", "X-Stream-Protocol-Version": version})
        resp.force_close()
        await resp.prepare(request)
        request.protocol.set_parser(_Feed(reader))
        write = resp.write
    session = spdy.Session(reader, write)
    runner = asyncio.create_task(session.run())
    try:
        yield session, resp
    finally:
        await session.goaway()
        runner.cancel()
        if pump is not None:
            await resp.close()  # also ends the pump's pending receive
            await pump
