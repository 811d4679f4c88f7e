"""The v4.channel.k8s.io tunnel and HTTP/1.1 over it, against a real WebSocket endpoint and real HTTP backends."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from ansible_collections.asgard.mlflow.plugins.module_utils._tunnel import (
    TunnelError,
    TunnelTimeout,
    http_request,
    relay,
)
from test_tunnel_fixtures import MemoryKube, MlflowLike, PortForwardServer


@pytest.fixture
def pf():
    s = PortForwardServer()
    yield s
    s.close()


@pytest.fixture
def mlflow():
    m = MlflowLike()
    yield m
    m.close()


class _SockStream:
    """A plain socket as the stream interface http_request expects (sendall / recv(n, timeout))."""

    def __init__(self, sock):
        self.sock = sock

    def sendall(self, data):
        self.sock.sendall(data)

    def recv(self, n, timeout=None):
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(n)
        except TimeoutError as exc:
            raise TunnelTimeout("timeout") from exc


def _serve_once(sock, response: bytes, delay: float = 0.0):
    def run():
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += sock.recv(4096)
        time.sleep(delay)
        try:
            sock.sendall(response)
        except OSError:
            pass  # the client gave up (timeout test)

    threading.Thread(target=run, daemon=True).start()


def test_http_over_socketpair_chunked_response():
    a, b = socket.socketpair()
    body = b"x" * 70000
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 30000]), body[i:i + 30000]) for i in range(0, len(body), 30000))
    _serve_once(b, b"HTTP/1.1 200 OK\r\nServer: gunicorn\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n")
    res = http_request(_SockStream(a), "GET", "/big", "localhost:5000", timeout=5)
    assert res.status == 200
    assert res.body == body
    assert res.header("server") == "gunicorn"
    assert res.keep_alive is True
    assert res.latency_ms >= 0


def test_http_over_socketpair_timeout():
    a, b = socket.socketpair()
    _serve_once(b, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK", delay=1.5)
    t0 = time.monotonic()
    with pytest.raises(TunnelTimeout):
        http_request(_SockStream(a), "GET", "/health", "localhost", timeout=0.4)
    assert time.monotonic() - t0 < 1.4


def test_http_over_socketpair_connection_closed_without_answer():
    a, b = socket.socketpair()

    def run():
        b.recv(4096)
        b.close()

    threading.Thread(target=run, daemon=True).start()
    with pytest.raises(TunnelError, match="closed the connection"):
        http_request(_SockStream(a), "GET", "/", "localhost", timeout=3)


def test_tunnel_handshake_auth_and_keepalive(pf, mlflow):
    pf.backends["mlflow-0"] = mlflow.addr
    api = MemoryKube(pf)
    with api.open_portforward("asgard", "mlflow-0", 5000, timeout=5) as t:
        r1 = http_request(t, "GET", "/health", "localhost:5000", timeout=5)
        r2 = http_request(t, "GET", "/version", "localhost:5000", timeout=5)
    assert (r1.status, r1.text) == (200, "OK")
    assert (r2.status, r2.text) == (200, "3.17.2")
    assert r1.keep_alive and r2.keep_alive
    assert len(pf.upgrades) == 1, "both requests went through one WebSocket"
    up = pf.upgrades[0]
    assert up["path"] == "/api/v1/namespaces/asgard/pods/mlflow-0/portforward"
    assert up["query"]["ports"] == ["5000"]
    assert up["headers"]["sec-websocket-protocol"] == "v4.channel.k8s.io"
    assert up["headers"]["authorization"] == "Bearer test-token"
    assert [h for _p, h in mlflow.requests] == ["localhost:5000", "localhost:5000"]


def test_tunnel_large_body_is_intact(pf):
    payload = bytes(range(256)) * 8192  # 2 MiB

    srv = socket.create_server(("127.0.0.1", 0))

    def serve():
        c, _addr = srv.accept()
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += c.recv(4096)
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(payload) + payload)
        c.close()

    threading.Thread(target=serve, daemon=True).start()
    pf.backends["p"] = srv.getsockname()
    api = MemoryKube(pf)
    with api.open_portforward("asgard", "p", 5000, timeout=5) as t:
        res = http_request(t, "GET", "/", "localhost", timeout=10, max_body=4 << 20)
    assert res.body == payload
    assert res.keep_alive is False
    srv.close()


def test_upgrade_refused_pod_gone_is_transient(pf):
    api = MemoryKube(pf)
    with pytest.raises(TunnelError) as ei:
        api.open_portforward("asgard", "gone-pod", 5000, timeout=3)
    assert ei.value.status == 404
    assert "gone-pod" in str(ei.value)
    assert ei.value.transient


def test_upgrade_refused_429_is_transient_403_is_not(pf):
    api = MemoryKube(pf)
    pf.refuse_next = [429, 403]
    with pytest.raises(TunnelError) as e1:
        api.open_portforward("asgard", "x", 5000, timeout=3)
    with pytest.raises(TunnelError) as e2:
        api.open_portforward("asgard", "x", 5000, timeout=3)
    assert (e1.value.status, e1.value.transient) == (429, True)
    assert (e2.value.status, e2.value.transient) == (403, False)


def test_error_channel_raises_pod_error(pf):
    pf.backends["p"] = ("127.0.0.1", 1)
    pf.error_text["p"] = "error forwarding port 5000 to pod p, uid : connection refused"
    api = MemoryKube(pf)
    with pytest.raises(TunnelError) as ei:
        with api.open_portforward("asgard", "p", 5000, timeout=3) as t:
            http_request(t, "GET", "/", "localhost", timeout=3)
    assert ei.value.pod_error
    assert "connection refused" in str(ei.value)


def test_bad_handshake_port_is_rejected(pf, mlflow):
    pf.backends["p"] = mlflow.addr
    pf.bad_handshake = True
    with pytest.raises(TunnelError, match="handshake"):
        MemoryKube(pf).open_portforward("asgard", "p", 5000, timeout=3)


def test_handshake_timeout_when_server_is_silent():
    silent = socket.create_server(("127.0.0.1", 0))
    held = []
    threading.Thread(target=lambda: held.append(silent.accept()), daemon=True).start()
    from test_tunnel_fixtures import PortForwardServer as _P  # noqa: F401 - same module, for clarity

    class _Fake:
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"

    api = MemoryKube(_Fake())
    t0 = time.monotonic()
    with pytest.raises(TunnelTimeout):
        api.open_portforward("asgard", "p", 5000, timeout=0.5)
    assert time.monotonic() - t0 < 3
    silent.close()


def test_relay_local_socket_through_tunnel(pf, mlflow):
    pf.backends["p"] = mlflow.addr
    api = MemoryKube(pf)
    client, server_side = socket.socketpair()
    tunnel = api.open_portforward("asgard", "p", 5000, timeout=5)
    counts = {}

    def run():
        counts["r"] = relay(server_side, tunnel)
        server_side.close()  # as the forwarder does after relay() returns

    th = threading.Thread(target=run, daemon=True)
    th.start()
    client.sendall(b"GET /health HTTP/1.1\r\nHost: localhost:5000\r\nConnection: close\r\n\r\n")
    data = b""
    client.settimeout(5)
    while True:
        chunk = client.recv(4096)
        if not chunk:
            break
        data += chunk
    th.join(5)
    assert data.startswith(b"HTTP/1.1 200")
    assert data.endswith(b"OK")
    up, down = counts["r"]
    assert up > 40 and down == len(data)
    tunnel.close()
