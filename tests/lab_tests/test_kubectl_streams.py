"""kubectl 1.32 port-forward, exec and attach against the lab, in both of kubectl's transports.

WebSocket is kubectl's default (port-forward: SPDY/3.1 tunneled in subprotocol ``SPDY/3.1+portforward.k8s.io``;
exec/attach: ``v5.channel.k8s.io``); ``KUBECTL_PORT_FORWARD_WEBSOCKETS=false`` and
``KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false`` make it speak SPDY/3.1 over an HTTP upgrade instead
(kubectl ``pkg/cmd/portforward/portforward.go createDialer``, ``pkg/cmd/exec/exec.go``, ``pkg/cmd/util/helpers.go``).
The wire protocols are described in /work/shared/reference/kubernetes-ingress-awx-facts.md section 1 and in the
lab's ``asgardlab/kubelet/{spdy,httpstream,portforward,remotecommand}.py``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import socket
import subprocess
import threading
import time

import pytest
from asgardlab.kubelet.testing import apply, delete_namespace, get, make_namespace, ready, wait_for
from helpers.kubectl import PortForward

MODES = {"websocket": "true", "spdy": "false"}

# A pod with an HTTP server on 8080 that answers its own name, and a TCP echo server on 7000.
SERVER = r"""
import http.server, os, socket, threading
def echo(c):
    with c:
        while data := c.recv(65536):
            c.sendall(data)
def echo_server():
    s = socket.create_server(("0.0.0.0", 7000))
    while True:
        threading.Thread(target=echo, args=(s.accept()[0],), daemon=True).start()
class Name(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = os.environ["POD"].encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
threading.Thread(target=echo_server, daemon=True).start()
http.server.ThreadingHTTPServer(("0.0.0.0", 8080), Name).serve_forever()
"""


def server_pod(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "streams"}},
            "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
                "name": "server", "image": "python:3.11", "command": ["python3", "-c", SERVER],
                "env": [{"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                "ports": [{"containerPort": 8080}, {"containerPort": 7000}],
                "readinessProbe": {"tcpSocket": {"port": 7000}, "periodSeconds": 1}}]}}


def wait_ready(lab, ns: str, name: str) -> None:
    wait_for(lambda: ready(get(lab, f"/api/v1/namespaces/{ns}/pods/{name}")), 120, f"{name} Ready")


@pytest.fixture(scope="module")
def ns(lab):
    name = make_namespace(lab, "streams")
    apply(lab, name, server_pod("web"))
    apply(lab, name, {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web-svc"},
                      "spec": {"selector": {"app": "streams"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}})
    wait_ready(lab, name, "web")
    yield name
    delete_namespace(lab, name, wait=90)


def forward(lab, ns: str, mode: str, *args: str) -> PortForward:
    return PortForward(lab.env(KUBECTL_PORT_FORWARD_WEBSOCKETS=MODES[mode]), "-n", ns, *args)


def http_get(port: int, path: str = "/") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
        return b"".join(iter(lambda: s.recv(65536), b""))


def echo(port: int, payload: bytes) -> bytes:
    """Send ``payload``, half-close, read everything the echo server sends back until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        def send():
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)

        t = threading.Thread(target=send)
        t.start()
        got = b"".join(iter(lambda: s.recv(1 << 16), b""))
        t.join()
        return got


def upgrades(lab, mark: int, t0: float, path: str, count: int) -> list[tuple[str, int]]:
    """(method, status) of the requests to ``path`` that started after ``t0``, once ``count`` are logged (a
    session is logged when it ends, so the log after ``mark`` can also hold sessions of the previous test)."""
    def since():
        return [(e["method"], e["status"]) for e in lab.requests_since(mark) if e["path"] == path
                and dt.datetime.fromisoformat(e["ts"]).timestamp() - e["duration_ms"] / 1000 >= t0]

    wait_for(lambda: len(since()) >= count, 30, f"{count} requests to {path}", 0.1)
    return since()


def run_threads(fns) -> list:
    results = [None] * len(fns)

    def call(i, fn):
        results[i] = fn()

    threads = [threading.Thread(target=call, args=(i, fn)) for i, fn in enumerate(fns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return results


def kubectl(lab, mode: str, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    env = lab.env(KUBECTL_REMOTE_COMMAND_WEBSOCKETS=MODES[mode])
    return subprocess.run(["kubectl", *args], input=stdin, env=env, capture_output=True, timeout=120)


# ------------------------------------------------------------------------------------------ port-forward
@pytest.mark.parametrize("mode", MODES)
def test_port_forward_connections_in_sequence_and_concurrently(lab, ns, mode):
    """Each local connection becomes an error+data stream pair sharing a ``requestid``; the session is dialed
    once and streams are opened per accepted connection (client-go ``tools/portforward/portforward.go
    handleConnection``; kubelet ``pkg/kubelet/cri/streaming/portforward/httpstream.go``). Tunneled in a WebSocket
    by default since 1.31 (client-go ``tools/portforward/tunneling_dialer.go``), SPDY POST upgrade otherwise."""
    mark, t0 = lab.log_mark(), time.time()
    with forward(lab, ns, mode, "pod/web", ":8080") as pf, forward(lab, ns, mode, "pod/web", ":7000") as raw:
        for _ in range(3):
            reply = http_get(pf.port)
            assert reply.startswith(b"HTTP/1.0 200") and reply.endswith(b"\r\n\r\nweb"), reply[:200]
        payloads = [os.urandom(100_000 + i) for i in range(4)]
        replies = run_threads([lambda p=p: echo(raw.port, p) for p in payloads]
                              + [lambda: http_get(pf.port) for _ in range(4)])
        assert [len(r) for r in replies[:4]] == [len(p) for p in payloads]
        assert replies[:4] == payloads
        assert all(r.endswith(b"web") for r in replies[4:]), replies[4:]
        assert pf.proc.poll() is None and raw.proc.poll() is None, pf.output() + raw.output()
        assert pf.stderr() == "" and raw.stderr() == "", pf.output() + raw.output()
    assert upgrades(lab, mark, t0, f"/api/v1/namespaces/{ns}/pods/web/portforward", 2) == [
        ("GET" if mode == "websocket" else "POST", 101)] * 2


@pytest.mark.parametrize("mode", MODES)
def test_port_forward_large_body_both_ways(lab, ns, mode):
    """8 MiB up and the same 8 MiB back through one forwarded connection, with the client's half-close (empty
    DATA+FIN on the data stream) passed on to the pod, which then finishes and closes (spdystream
    ``spdy/write.go`` DATA frames; kubelet ``portforward/httpstream.go``: streams half-closed when done)."""
    payload = os.urandom(8 << 20)
    with forward(lab, ns, mode, "pod/web", ":7000") as pf:
        got = echo(pf.port, payload)
    assert len(got) == len(payload) and hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()


@pytest.mark.parametrize("mode", MODES)
def test_port_forward_to_a_service(lab, ns, mode):
    """``kubectl port-forward svc/NAME LOCAL:SVCPORT`` resolves the Service itself: a pod from its selector and
    the targetPort of the service port; the API only sees a pod portforward (kubectl
    ``pkg/cmd/portforward/portforward.go``, ``pkg/util/service_port.go``)."""
    mark, t0 = lab.log_mark(), time.time()
    with forward(lab, ns, mode, "svc/web-svc", ":80") as pf:
        assert http_get(pf.port).endswith(b"web")
    assert len(upgrades(lab, mark, t0, f"/api/v1/namespaces/{ns}/pods/web/portforward", 1)) == 1
    assert f"/api/v1/namespaces/{ns}/services/web-svc" in {e["path"] for e in lab.requests_since(mark)}


@pytest.mark.parametrize("mode", MODES)
def test_port_forward_refused_port_error_text(lab, ns, mode):
    """Nothing listens on the port: the kubelet writes ``error forwarding port P to pod NAME, uid UID: ...`` on
    the error stream; kubectl prints ``an error occurred forwarding L -> P: <that text>`` and, since the
    error closes the connection, exits with ``lost connection to pod`` (client-go ``tools/portforward/
    portforward.go``; kubelet ``portforward/httpstream.go portForward``)."""
    uid = get(lab, f"/api/v1/namespaces/{ns}/pods/web")["metadata"]["uid"]
    with forward(lab, ns, mode, "pod/web", ":9") as pf:
        with socket.create_connection(("127.0.0.1", pf.port), timeout=30) as s:
            assert s.recv(100) == b""
        assert pf.wait(60) == 1
    err = pf.stderr()
    assert f"an error occurred forwarding {pf.port} -> 9: error forwarding port 9 to pod web, uid {uid}: " in err, err
    assert "connect: connection refused" in err and "error: lost connection to pod" in err, err


@pytest.mark.parametrize("mode", MODES)
def test_port_forward_pod_deleted_lost_connection(lab, ns, mode):
    """The pod goes away: the next forwarded connection fails on the error stream and kubectl exits with
    ``error: lost connection to pod`` (client-go ``tools/portforward/portforward.go ErrLostConnectionToPod``)."""
    name = f"gone-{mode}"
    apply(lab, ns, server_pod(name))
    wait_ready(lab, ns, name)
    with forward(lab, ns, mode, f"pod/{name}", ":8080") as pf:
        assert http_get(pf.port).endswith(name.encode())
        assert lab.request("DELETE", f"/api/v1/namespaces/{ns}/pods/{name}").status_code == 200
        wait_for(lambda: lab.request("GET", f"/api/v1/namespaces/{ns}/pods/{name}").status_code == 404, 60, f"{name} gone")
        with socket.create_connection(("127.0.0.1", pf.port), timeout=30) as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            assert s.recv(100) == b""
        assert pf.wait(60) == 1
    assert "error: lost connection to pod" in pf.stderr(), pf.output()


def test_port_forward_falls_back_to_spdy_when_the_tunnel_is_refused(lab, ns):
    """A non-101 answer to the WebSocket tunnel is an upgrade failure: kubectl dials again with the SPDY POST
    upgrade by itself (client-go ``tools/portforward/fallback_dialer.go``, apimachinery ``pkg/util/httpstream/
    httpstream.go IsUpgradeFailure``). Runs beside other tests: the fault is this worker's own (owner-scoped) and
    matches only this namespace's pod; the request log is read for that path only."""
    path = f"/api/v1/namespaces/{ns}/pods/web/portforward"
    lab.faults.add(kind="http_status", status=400, count=1, method="GET", path_regex=path)
    try:
        mark, t0 = lab.log_mark(), time.time()
        with forward(lab, ns, "websocket", "pod/web", ":8080") as pf:
            assert http_get(pf.port).endswith(b"web")
    finally:
        lab.faults.clear()
    assert upgrades(lab, mark, t0, path, 2) == [("GET", 400), ("POST", 101)]


# ------------------------------------------------------------------------------------------ exec, attach
@pytest.mark.parametrize("mode", MODES)
def test_exec_stdin_split_output_and_exit_code(lab, ns, mode):
    """stdin in (v5: CLOSE ``[255, 0]`` half-closes it; SPDY: FIN on the stdin stream), stdout and stderr on their
    own channels/streams, and the exit code from the ``metav1.Status`` on the error channel: kubectl prints
    ``command terminated with exit code N`` and exits N (apimachinery ``pkg/util/remotecommand/constants.go``;
    client-go ``tools/remotecommand/websocket.go``, ``spdy.go``, ``v4.go``; kubelet
    ``pkg/kubelet/cri/streaming/remotecommand/httpstream.go``)."""
    script = "import sys; d = sys.stdin.buffer.read(); print(len(d)); print('to-stderr', file=sys.stderr); sys.exit(3)"
    payload = os.urandom(3 << 20)
    r = kubectl(lab, mode, "-n", ns, "exec", "-i", "web", "--", "python3", "-c", script, stdin=payload)
    assert r.returncode == 3, r
    assert r.stdout == f"{len(payload)}\n".encode()
    assert r.stderr.decode().splitlines() == ["to-stderr", "command terminated with exit code 3"], r.stderr
    ok = kubectl(lab, mode, "-n", ns, "exec", "web", "--", "sh", "-c", "head -c 5000000 /dev/zero")
    assert ok.returncode == 0 and ok.stdout == bytes(5_000_000) and ok.stderr == b"", ok.stderr


@pytest.mark.parametrize("mode", MODES)
def test_attach_stdin_and_output(lab, ns, mode):
    """``kubectl attach -i``: output the container writes from now on (stdout and stderr apart), and stdin into a
    container declared ``stdin: true``; with ``stdinOnce`` the container's stdin closes when the attach's does, so
    the program ends and the attach with it (kubectl ``pkg/cmd/attach/attach.go``, same executors as exec;
    ``api core/v1/types.go`` Container.stdinOnce)."""
    name = f"attach-{mode}"
    apply(lab, ns, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": {
        "restartPolicy": "Never", "terminationGracePeriodSeconds": 1, "containers": [{
            "name": "c", "image": "python:3.11", "stdin": True, "stdinOnce": True, "command": ["python3", "-c",
            "import sys\nfor l in sys.stdin:\n    print('got:' + l.strip(), flush=True)\n"
            "    print('err:' + l.strip(), file=sys.stderr, flush=True)\nprint('bye', flush=True)"]}]}})
    wait_for(lambda: get(lab, f"/api/v1/namespaces/{ns}/pods/{name}")["status"].get("phase") == "Running", 120, f"{name} Running")
    r = kubectl(lab, mode, "-n", ns, "attach", "-i", name, stdin=b"a\nb\n")
    assert r.returncode == 0, r
    assert r.stdout.decode().splitlines() == ["got:a", "got:b", "bye"]
    assert [x for x in r.stderr.decode().splitlines() if x.startswith("err:")] == ["err:a", "err:b"], r.stderr
    phase = wait_for(lambda: get(lab, f"/api/v1/namespaces/{ns}/pods/{name}")["status"].get("phase") == "Succeeded", 60, "Succeeded")
    assert phase
