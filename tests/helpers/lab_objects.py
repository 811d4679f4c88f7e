"""Small readers/writers of lab objects shared by the integration tests (through the `lab` fixture's
authenticated ``lab.request``), so each test file does not carry its own copy."""

from __future__ import annotations

import json
import socket
import time

DEPLOYMENT = "mlflow-deployment"


def get_deployment(lab, ns: str, name: str = DEPLOYMENT) -> dict:
    r = lab.request("GET", f"/apis/apps/v1/namespaces/{ns}/deployments/{name}")
    assert r.status_code == 200, r.text
    return r.json()


def live_pods(lab, ns: str, selector: str = "app=mlflow") -> list[dict]:
    """The pods matching ``selector`` that are not being deleted (none while the API answers an error, e.g. a
    fault the test injected: callers poll)."""
    r = lab.request("GET", f"/api/v1/namespaces/{ns}/pods", params={"labelSelector": selector})
    return [p for p in r.json().get("items", []) if not p["metadata"].get("deletionTimestamp")]


def json_patch(lab, ns: str, ops: list[dict], name: str = DEPLOYMENT) -> None:
    r = lab.request("PATCH", f"/apis/apps/v1/namespaces/{ns}/deployments/{name}", data=json.dumps(ops),
                    headers={"Content-Type": "application/json-patch+json"})
    assert r.status_code == 200, r.text


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def codes(findings) -> set[str]:
    """The finding codes of a verify report's list of findings."""
    return {f["code"] for f in findings or []}


def wait_container_waiting(lab, ns: str, reason: str = "CrashLoopBackOff", timeout: float = 120) -> str:
    """Poll the MLflow pods until a container waits with ``reason``; returns the last reason seen."""
    end = time.monotonic() + timeout
    waiting = ""
    while time.monotonic() < end and waiting != reason:
        for p in live_pods(lab, ns):
            for c in p.get("status", {}).get("containerStatuses", []):
                waiting = (c.get("state", {}).get("waiting") or {}).get("reason", "") or waiting
        time.sleep(1)
    return waiting
