"""Test support (no tests here): a small pods/portforward WebSocket endpoint speaking v4.channel.k8s.io
that relays to real TCP backends, an MLflow-like HTTP backend, and a KubeAPI whose REST reads are served
from memory (the module_utils boundary) while its portforward tunnels are real WebSockets.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import kubernetes.client
from ansible_collections.asgard.mlflow.plugins.module_utils._kube import KubeAPI, KubeError

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
PF_PATH = re.compile(r"^/api/v1/namespaces/([^/]+)/pods/([^/]+)/portforward$")


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


def read_frame(sock: socket.socket) -> tuple[int, bytes]:
    b1, b2 = _recv_exact(sock, 2)
    opcode = b1 & 0x0F
    masked = b2 & 0x80
    n = b2 & 0x7F
    if n == 126:
        n = struct.unpack("!H", _recv_exact(sock, 2))[0]
    elif n == 127:
        n = struct.unpack("!Q", _recv_exact(sock, 8))[0]
    mask = _recv_exact(sock, 4) if masked else b"\0\0\0\0"
    data = bytearray(_recv_exact(sock, n))
    for i in range(n):
        data[i] ^= mask[i % 4]
    return opcode, bytes(data)


def frame(payload: bytes, opcode: int = 2) -> bytes:
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 126)) + struct.pack("!H", n)
    else:
        head = bytes((0x80 | opcode, 127)) + struct.pack("!Q", n)
    return head + payload


class PortForwardServer:
    """Stand-in for the API server's portforward subresource; ``backends[pod] = (host, port)``."""

    def __init__(self):
        self.backends: dict[str, tuple[str, int]] = {}
        self.refuse: dict[str, int] = {}          # pod -> HTTP status for the upgrade
        self.refuse_next: list[int] = []           # statuses for the next upgrades, any pod
        self.error_text: dict[str, str] = {}      # pod -> text on the error channel after the handshake
        self.bad_handshake = False
        self.upgrades: list[dict] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._closing = False
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self):
        self._closing = True
        self.sock.close()

    def _accept(self):
        while not self._closing:
            try:
                conn, _addr = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _refuse(self, conn, status: int, message: str):
        body = json.dumps({"kind": "Status", "status": "Failure", "message": message, "code": status}).encode()
        conn.sendall(f"HTTP/1.1 {status} Refused\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                     f"Connection: close\r\n\r\n".encode() + body)
        conn.close()

    def _handle(self, conn: socket.socket):
        raw = b""
        while b"\r\n\r\n" not in raw:
            chunk = conn.recv(4096)
            if not chunk:
                conn.close()
                return
            raw += chunk
        head = raw.split(b"\r\n\r\n", 1)[0].decode()
        line, *hlines = head.split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, v in (h.split(":", 1) for h in hlines)}
        path = line.split()[1]
        u = urlparse(path)
        m = PF_PATH.match(u.path)
        self.upgrades.append({"path": u.path, "query": parse_qs(u.query), "headers": headers})
        if not m:
            return self._refuse(conn, 404, "not found")
        pod = m.group(2)
        port = int(parse_qs(u.query)["ports"][0])
        if self.refuse_next:
            return self._refuse(conn, self.refuse_next.pop(0), "injected")
        if pod in self.refuse:
            return self._refuse(conn, self.refuse[pod], f'pods "{pod}" refused')
        if pod not in self.backends:
            return self._refuse(conn, 404, f'pods "{pod}" not found')
        accept = base64.b64encode(hashlib.sha1((headers["sec-websocket-key"] + GUID).encode()).digest()).decode()
        conn.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      f"Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: v4.channel.k8s.io\r\n\r\n").encode())
        pbytes = bytes((port & 0xFF, port >> 8)) if not self.bad_handshake else b"\x01\x02"
        conn.sendall(frame(b"\x00" + pbytes) + frame(b"\x01" + pbytes))
        if pod in self.error_text:
            conn.sendall(frame(b"\x01" + self.error_text[pod].encode()))
            conn.sendall(frame(b"", 8))
            conn.close()
            return
        try:
            backend = socket.create_connection(self.backends[pod], timeout=5)
        except OSError as exc:
            conn.sendall(frame(b"\x01" + f"error forwarding port {port} to pod {pod}: {exc}".encode()) + frame(b"", 8))
            conn.close()
            return
        backend.settimeout(None)
        lock = threading.Lock()

        def upstream():
            try:
                while True:
                    op, data = read_frame(conn)
                    if op == 8:
                        break
                    if op == 2 and data[:1] == b"\x00":
                        backend.sendall(data[1:])
            except (EOFError, OSError):
                pass
            try:
                backend.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

        threading.Thread(target=upstream, daemon=True).start()
        try:
            while True:
                data = backend.recv(65536)
                if not data:
                    break
                with lock:
                    conn.sendall(frame(b"\x00" + data))
            with lock:
                conn.sendall(frame(b"", 8))
        except OSError:
            pass
        finally:
            backend.close()
            conn.close()


class MlflowLike:
    """An HTTP server answering like MLflow does (per mlflow-server-facts.md): prefix, Host check, version."""

    def __init__(self, version="3.17.2", prefix="", allowed_hosts=None, fail_api=0, server="uvicorn",
                 health_status=200, close_each=False, basic_auth=None):
        self.version = version
        self.basic_auth = basic_auth  # (user, password): 401 on everything but /health without them (basic-auth app)
        self.authorization: list[tuple[str, str | None]] = []
        self.prefix = prefix
        self.allowed_hosts = allowed_hosts
        self.fail_api = fail_api
        self.health_status = health_status
        self.requests: list[tuple[str, str]] = []
        me = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            server_version = server

            def log_message(self, *a):
                pass

            def do_GET(self):
                me.requests.append((self.path, self.headers.get("Host", "")))
                me.authorization.append((self.path, self.headers.get("Authorization")))
                status, ctype, body = me.route(self.path, self.headers.get("Host", ""))
                if me.basic_auth and not self.path.endswith("/health") and not me.authorized(
                        self.headers.get("Authorization")):
                    status, ctype, body = 401, "text/plain", b"You are not authenticated."
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                if close_each:
                    self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.addr = self.httpd.server_address
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def authorized(self, header: str | None) -> bool:
        import base64

        want = "Basic " + base64.b64encode(":".join(self.basic_auth).encode()).decode()
        return header == want

    def _host_ok(self, host: str) -> bool:
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if self.allowed_hosts is not None:
            import fnmatch

            return any(fnmatch.fnmatch(host, pat) for pat in self.allowed_hosts)
        return name in ("localhost", "127.0.0.1", "[::1]", "0.0.0.0") or name.startswith(("10.", "192.168."))

    def route(self, path: str, host: str):
        under = tuple(int(x) for x in self.version.split(".")[:2]) >= (3, 7)
        host_check = tuple(int(x) for x in self.version.split(".")[:2]) >= (3, 5)
        p = self.prefix
        if p and under:
            if not path.startswith(p + "/"):
                return 404, "text/plain", b"Not Found"
            path = path[len(p):]
        api = path.split("?")[0]
        if path == "/health":
            return self.health_status, "text/plain", b"OK"
        if path == "/version":
            return 200, "text/plain", self.version.encode()
        if path == ((p + "/") if (p and not under) else "/"):
            return 200, "text/html", b"<!doctype html><html><head><title>MLflow</title></head><body></body></html>"
        if api in ("/api/2.0/mlflow/experiments/search", "/ajax-api/2.0/mlflow/experiments/search"):
            if host_check and not self._host_ok(host):
                return 403, "text/plain", b"Invalid Host header - possible DNS rebinding attack detected"
            if self.fail_api > 0:
                self.fail_api -= 1
                return 503, "text/plain", b"busy"
            return 200, "application/json", b'{"experiments": [{"experiment_id": "0", "name": "Default"}]}'
        return 404, "text/plain", b"Not Found"


def pod(name: str, labels=None, ready=True, created="2025-01-01T00:00:00Z", terminating=False, port=5000,
        args=None, env=None) -> dict:
    meta = {"name": name, "uid": f"uid-{name}", "labels": labels or {"app": "mlflow"}, "creationTimestamp": created}
    if terminating:
        meta["deletionTimestamp"] = "2025-01-01T00:10:00Z"
    return {
        "metadata": meta,
        "spec": {"containers": [{"name": "mlflow", "command": ["mlflow", "server"], "args": args or ["--port=5000"],
                                 "env": env or [], "ports": [{"name": "http", "containerPort": port}]}]},
        "status": {"phase": "Running", "podIP": "10.250.0.9",
                   "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


def service(name="mlflow-service", port=5000, target_port=5000, selector=None) -> dict:
    return {"metadata": {"name": name},
            "spec": {"selector": {"app": "mlflow"} if selector is None else selector,
                     "ports": [{"port": port, "targetPort": target_port}]}}


class MemoryKube(KubeAPI):
    """KubeAPI with REST reads from memory and real portforward WebSockets to ``PortForwardServer``."""

    def __init__(self, pf: PortForwardServer, namespaces=("asgard",)):
        cfg = kubernetes.client.Configuration()
        cfg.host = pf.url
        cfg.api_key = {"authorization": "Bearer test-token"}
        super().__init__(kubernetes.client.ApiClient(cfg))
        self.namespaces = set(namespaces)
        self.services: dict[tuple[str, str], dict] = {}
        self.pods: dict[str, list[dict]] = {}
        self.fail_next: list[int] = []
        self.on_list = None

    def _maybe_fail(self, path):
        self.requests += 1
        if self.fail_next:
            status = self.fail_next.pop(0)
            raise KubeError(f"GET {path}: HTTP {status}", status=status)

    def get_namespace(self, name):
        self._maybe_fail(f"/api/v1/namespaces/{name}")
        if name not in self.namespaces:
            raise KubeError("not found", status=404)
        return {"metadata": {"name": name}}

    def get_service(self, namespace, name):
        self._maybe_fail("services")
        try:
            return self.services[(namespace, name)]
        except KeyError:
            raise KubeError("not found", status=404) from None

    def get_pod(self, namespace, name):
        self._maybe_fail("pod")
        for p in self.pods.get(namespace, []):
            if p["metadata"]["name"] == name:
                return p
        raise KubeError("not found", status=404)

    def list_pods(self, namespace, label_selector):
        self._maybe_fail("pods")
        if self.on_list:
            self.on_list()
        want = dict(t.split("=", 1) for t in label_selector.split(",") if "=" in t)
        return [p for p in self.pods.get(namespace, [])
                if all(p["metadata"]["labels"].get(k) == v for k, v in want.items())]
