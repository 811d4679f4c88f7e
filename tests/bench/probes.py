"""One probe round (GET /health, GET /, GET /version on one keep-alive connection) three ways:

- ``collection_round``: the collection's own code path, in process (module_utils ``run_probe``: resolve the
  Service's pod with 2 GETs, open a v4 portforward WebSocket, HTTP through it), without Ansible; with
  ``resolved`` (the pod already known, as the verify role passes it) without the 2 GETs;
- ``floor_round``: the same three requests sent directly to the pod's 127.0.0.1:5000 from a thread inside
  the pod's network namespace (no API server, no tunnel);
- ``peer_round``: what people write today with the ``kubernetes`` client: list the pods by label, then
  ``kubernetes.stream.portforward`` (its documented example usage) and the same HTTP through ``pf.socket()``.
"""

from __future__ import annotations

import http.client
import socket
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO / ".collections") not in sys.path:
    sys.path.insert(0, str(REPO / ".collections"))

from ansible_collections.asgard.mlflow.plugins.module_utils._kube import KubeAPI  # noqa: E402
from ansible_collections.asgard.mlflow.plugins.module_utils._probe import ProbeOptions, run_probe  # noqa: E402
from ansible_collections.asgard.mlflow.plugins.module_utils._target import Target  # noqa: E402

PATHS = ("/health", "/", "/version")


def api_client(kubeconfig: str):
    from kubernetes import client, config

    cfg = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
    return client.ApiClient(cfg)


def collection_round(api_client_, namespace: str, resolved: dict | None = None) -> dict:
    """One mlflow_probe round through module_utils (the code the module runs after building its client).

    ``resolved``: the module option of that name (a pod the caller has already resolved): no Service/pod reads.
    """
    api = KubeAPI(api_client_, timeout=10.0)
    target = Target.from_params({"namespace": namespace, "service": "mlflow-service", "pod": None,
                                 "label_selectors": [], "remote_port": None, "resolved": resolved})
    t0 = time.perf_counter()
    res = run_probe(api, target, ProbeOptions(api_check=False))
    ms = (time.perf_counter() - t0) * 1000.0
    if not res["healthy"]:
        raise RuntimeError(f"probe round unhealthy in {namespace}: {res['findings']}")
    return {"ms": ms, "api_requests": res["api_requests"], "tunnels": res["tunnels_opened"],
            "resolved": res.get("resolved")}


def _three_requests(conn: http.client.HTTPConnection) -> None:
    for path in PATHS:
        conn.request("GET", path, headers={"Host": "localhost:5000"})
        r = conn.getresponse()
        body = r.read()
        if r.status != 200:
            raise RuntimeError(f"GET {path}: {r.status} {body[:200]!r}")


def floor_round() -> float:
    """Run inside the pod's network namespace (see benchlab.in_netns): ms for connect + 3 requests."""
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", 5000, timeout=10)
    try:
        _three_requests(conn)
    finally:
        conn.close()
    return (time.perf_counter() - t0) * 1000.0


class _SockConn(http.client.HTTPConnection):
    """http.client over an already connected socket (the portforward socket)."""

    def __init__(self, sock) -> None:
        super().__init__("localhost", 5000, timeout=10)
        self.sock = sock

    def connect(self) -> None:  # the socket is given
        if self.sock is None:
            raise OSError("portforward socket closed")


def peer_round(api_client_, namespace: str) -> float:
    """Plain ``kubernetes`` client usage: list pods by label, portforward, HTTP over pf.socket(port)."""
    from kubernetes import client
    from kubernetes.stream import portforward

    core = client.CoreV1Api(api_client_)
    t0 = time.perf_counter()
    pods = core.list_namespaced_pod(namespace, label_selector="app=mlflow").items
    name = next(p.metadata.name for p in pods if p.status.phase == "Running")
    pf = portforward(core.connect_get_namespaced_pod_portforward, name, namespace, ports="5000")
    sock = pf.socket(5000)
    sock.setblocking(True)
    sock.settimeout(10)
    conn = _SockConn(sock)
    try:
        _three_requests(conn)
    finally:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()
        pf.close() if hasattr(pf, "close") else None
    ms = (time.perf_counter() - t0) * 1000.0
    err = pf.error(5000)
    if err:
        raise RuntimeError(f"portforward error: {err}")
    return ms
