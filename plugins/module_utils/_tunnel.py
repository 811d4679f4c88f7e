# Copyright: (c) 2025, asgard.mlflow contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: a Kubernetes pod portforward tunnel (v4.channel.k8s.io) and HTTP/1.1 over it.

One WebSocket carries one TCP connection to one port of one pod:
binary frames ``[channel] + payload``; channel 0 data, channel 1 error; right after
the upgrade the server sends ``[channel, port & 0xff, port >> 8]`` on each channel.
Written directly on websocket-client (not ``kubernetes.stream.portforward``) so that the
handshake has a timeout, errors surface as exceptions in the caller's thread (not a
hidden proxy thread), and several tunnels can be opened concurrently (the stream helper
swaps ``api_client.call_api`` while it runs, which is not thread-safe).

This file is also copied next to the background forwarder: standard library, websocket-client
and nothing from Ansible.
"""

from __future__ import annotations

import base64
import http.client
import io
import select
import socket
import ssl
import time
from dataclasses import dataclass, field
from urllib.parse import urlparse, urlunparse

V4_PROTOCOL = "v4.channel.k8s.io"
DATA_CHANNEL = 0
ERROR_CHANNEL = 1


class TunnelError(Exception):
    """The portforward tunnel could not be opened or broke.

    ``status`` is the HTTP status of a refused upgrade (404 pod gone, 429, 5xx ...) or None.
    ``pod_error`` is True when the error came from the pod side (kubelet error channel).
    """

    def __init__(self, message: str, status: int | None = None, pod_error: bool = False, body: str = ""):
        super().__init__(message)
        self.status = status
        self.pod_error = pod_error
        self.body = body

    @property
    def transient(self) -> bool:
        return self.status is None or self.status == 429 or self.status >= 500 or self.status == 404


class TunnelTimeout(TunnelError):
    """No data within the time allowed."""


@dataclass
class WSRequest:
    """Everything needed to open one WebSocket to the API server (built by _kube from the API client)."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)
    sslopt: dict = field(default_factory=dict)
    proxy: dict = field(default_factory=dict)


def ws_url(http_url: str) -> str:
    parts = list(urlparse(http_url))
    parts[0] = {"http": "ws", "https": "wss"}.get(parts[0], parts[0])
    return urlunparse(parts)


def _ws_connect(req: WSRequest, timeout: float):
    import websocket  # websocket-client, a dependency of the kubernetes client

    headers = [f"{k}: {v}" for k, v in req.headers.items() if k.lower() not in ("content-type", "accept", "sec-websocket-protocol")]
    ws = websocket.WebSocket(sslopt=dict(req.sslopt), skip_utf8_validation=True, enable_multithread=False)
    try:
        ws.connect(req.url, header=headers, timeout=timeout, subprotocols=[V4_PROTOCOL], **req.proxy)
    except websocket.WebSocketBadStatusException as exc:
        body = exc.resp_body.decode("utf-8", "replace") if isinstance(exc.resp_body, bytes) else str(exc.resp_body or "")
        raise TunnelError(f"portforward upgrade refused with HTTP {exc.status_code}: {body[:300].strip()}",
                          status=exc.status_code, body=body) from exc
    except (websocket.WebSocketTimeoutException, TimeoutError) as exc:
        raise TunnelTimeout(f"portforward upgrade timed out after {timeout:.1f}s") from exc
    except (OSError, ssl.SSLError, websocket.WebSocketException) as exc:
        raise TunnelError(f"portforward connection failed: {exc}") from exc
    proto = (ws.getsubprotocol() or "") if hasattr(ws, "getsubprotocol") else ""
    if proto and proto != V4_PROTOCOL:
        ws.close()
        raise TunnelError(f"API server chose unsupported subprotocol {proto!r}")
    return ws


class PortForwardTunnel:
    """A byte stream to ``port`` of a pod through the API server's portforward subresource."""

    def __init__(self, req: WSRequest, port: int, timeout: float = 10.0):
        self.port = port
        self._buf = bytearray()
        self._eof = False
        self._error = ""
        self._ws = _ws_connect(req, timeout)
        try:
            self._handshake(timeout)
        except BaseException:
            self.close()
            raise

    # -- low level
    def _recv_frame(self, timeout: float | None):
        """One binary frame (channel, payload), or None at close."""
        import websocket

        ws = self._ws
        ws.settimeout(timeout)
        try:
            while True:
                opcode, frame = ws.recv_data_frame(True)
                if opcode == websocket.ABNF.OPCODE_BINARY:
                    if not frame.data:
                        raise TunnelError("empty frame from API server")
                    return frame.data[0], bytes(frame.data[1:])
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    return None
                if opcode == websocket.ABNF.OPCODE_TEXT:
                    raise TunnelError("unexpected text frame on portforward stream")
                # ping/pong: answered by websocket-client, keep reading
        except websocket.WebSocketConnectionClosedException:
            return None
        except (websocket.WebSocketTimeoutException, TimeoutError) as exc:
            raise TunnelTimeout(f"no data from the pod within {timeout:.1f}s") from exc
        except (OSError, ssl.SSLError) as exc:
            raise TunnelError(f"portforward stream broke: {exc}") from exc

    def _handshake(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        seen: set[int] = set()
        expect = bytes((self.port & 0xFF, self.port >> 8))
        while seen != {DATA_CHANNEL, ERROR_CHANNEL}:
            frame = self._recv_frame(max(0.05, deadline - time.monotonic()))
            if frame is None:
                raise TunnelError("API server closed the portforward stream during the handshake")
            channel, payload = frame
            if channel in seen:
                # an error text can arrive before the port frames when the pod is gone
                if channel == ERROR_CHANNEL:
                    raise TunnelError(payload.decode("utf-8", "replace"), pod_error=True)
                raise TunnelError(f"data on channel {channel} before the handshake finished")
            if channel not in (DATA_CHANNEL, ERROR_CHANNEL) or len(payload) != 2 or payload != expect:
                raise TunnelError(f"bad portforward handshake frame on channel {channel}: {payload.hex()}")
            seen.add(channel)

    def _pump(self, timeout: float | None) -> None:
        """Read one frame into the buffer (or record EOF / raise the pod error)."""
        frame = self._recv_frame(timeout)
        if frame is None:
            self._eof = True
            return
        channel, payload = frame
        if channel == DATA_CHANNEL:
            self._buf += payload
        elif channel == ERROR_CHANNEL:
            self._error += payload.decode("utf-8", "replace")
            if self._error:
                raise TunnelError(self._error, pod_error=True)
        else:
            raise TunnelError(f"unexpected channel {channel}")

    # -- stream API
    def fileno(self) -> int:
        return self._ws.sock.fileno()

    def pending(self) -> bool:
        """True when data is already buffered (here or inside TLS) so select() would lie."""
        if self._buf:
            return True
        sock = self._ws.sock
        return isinstance(sock, ssl.SSLSocket) and sock.pending() > 0

    def sendall(self, data: bytes) -> None:
        import websocket

        try:
            for i in range(0, len(data), 1 << 20):
                self._ws.send_binary(bytes((DATA_CHANNEL,)) + data[i:i + (1 << 20)])
        except (OSError, websocket.WebSocketException) as exc:
            raise TunnelError(f"portforward stream broke while sending: {exc}") from exc

    def recv(self, bufsize: int = 65536, timeout: float | None = None) -> bytes:
        """Up to ``bufsize`` bytes; b'' at end of stream. Waits at most ``timeout`` seconds."""
        while not self._buf and not self._eof:
            self._pump(timeout)
        out = bytes(self._buf[:bufsize])
        del self._buf[:bufsize]
        return out

    @property
    def eof(self) -> bool:
        return self._eof and not self._buf

    def close(self) -> None:
        ws = getattr(self, "_ws", None)
        if ws is not None:
            try:
                ws.close(timeout=1)
            except Exception:  # noqa: BLE001 - closing a broken socket
                try:
                    ws.shutdown()
                except Exception:  # noqa: BLE001
                    pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---------------------------------------------------------------- HTTP/1.1 over a stream


class _RawReader(io.RawIOBase):
    """Read side of a stream (anything with ``recv(n, timeout)``) as a raw file; close() leaves it open."""

    def __init__(self, stream, deadline: float):
        self._stream = stream
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TunnelTimeout("HTTP response not complete before the timeout")
        data = self._stream.recv(len(b), timeout=left)
        b[:len(data)] = data
        return len(data)


class _SockShim:
    def __init__(self, reader):
        self._reader = reader

    def makefile(self, *_args, **_kwargs):
        return self._reader


@dataclass
class HTTPResult:
    status: int
    reason: str
    headers: dict[str, str]
    body: bytes
    latency_ms: float
    keep_alive: bool
    truncated: bool = False

    def header(self, name: str, default: str | None = None) -> str | None:
        for k, v in self.headers.items():
            if k.lower() == name.lower():
                return v
        return default

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def basic_auth(auth: tuple | None) -> dict:
    """The ``Authorization`` header of HTTP basic auth for ``(user, password)`` (MLflow --app-name basic-auth);
    none without credentials."""
    if not auth:
        return {}
    return {"Authorization": "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()}


def http_request(stream, method: str, path: str, host: str, headers: dict | None = None,
                 timeout: float = 10.0, max_body: int = 4 << 20, body: bytes | None = None) -> HTTPResult:
    """Send one HTTP/1.1 request on ``stream`` (sendall/recv) and read the whole response.

    The stream is left open when the server allows keep-alive (``HTTPResult.keep_alive``).
    Bodies beyond ``max_body`` bytes are cut (``truncated``) and the connection is not reusable.
    """
    start = time.monotonic()
    hdrs = {"Host": host, "User-Agent": "asgard.mlflow-probe/0.1", "Accept": "*/*", "Connection": "keep-alive"}
    hdrs.update(headers or {})
    if body is not None:
        hdrs["Content-Length"] = str(len(body))
    lines = [f"{method} {path} HTTP/1.1"] + [f"{k}: {v}" for k, v in hdrs.items()]
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")
    stream.sendall(raw)
    reader = io.BufferedReader(_RawReader(stream, start + timeout), buffer_size=65536)
    resp = http.client.HTTPResponse(_SockShim(reader), method=method)
    try:
        resp.begin()
        data = resp.read(max_body + 1)
    except http.client.IncompleteRead as exc:
        raise TunnelError(f"connection closed mid-response ({len(exc.partial)} bytes read)") from exc
    except (http.client.HTTPException, ValueError) as exc:
        if isinstance(exc, http.client.RemoteDisconnected) or "RemoteDisconnected" in type(exc).__name__:
            raise TunnelError("the pod closed the connection without a response") from exc
        raise TunnelError(f"malformed HTTP response: {exc!r}") from exc
    truncated = len(data) > max_body
    latency = (time.monotonic() - start) * 1000.0
    keep = not truncated and not resp.will_close and resp.isclosed()
    return HTTPResult(status=resp.status, reason=resp.reason, headers=dict(resp.getheaders()),
                      body=data[:max_body], latency_ms=round(latency, 2), keep_alive=keep, truncated=truncated)


# ---------------------------------------------------------------- relay (port_forward)


def relay(local: socket.socket, tunnel: PortForwardTunnel, idle_timeout: float = 3600.0) -> tuple[int, int]:
    """Copy bytes both ways until either side closes. Returns (bytes up, bytes down)."""
    up = down = 0
    local.setblocking(True)
    last = time.monotonic()
    while True:
        if tunnel.pending():
            ready = [tunnel]
        else:
            ready, _w, _x = select.select([local, tunnel], [], [], 5.0)
        if not ready:
            if time.monotonic() - last > idle_timeout:
                return up, down
            continue
        last = time.monotonic()
        if tunnel in ready or tunnel.pending():
            data = tunnel.recv(1 << 16, timeout=30.0)
            if not data:
                return up, down
            local.sendall(data)
            down += len(data)
        if local in ready:
            try:
                data = local.recv(1 << 16)
            except ConnectionResetError:
                data = b""
            if not data:
                return up, down
            tunnel.sendall(data)
            up += len(data)
