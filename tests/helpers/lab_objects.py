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


# --------------------------------------------------------------------- the deploy role (test_deploy_*.py, test_verify_auth)
def api_get(lab, path: str) -> dict:
    """GET one object (or list) of the lab's API; fails the test on an error status."""
    r = lab.request("GET", path)
    r.raise_for_status()
    return r.json()


def ready_pod_ip(lab, ns: str) -> str:
    """The pod IP of the one Ready, not terminating ``app=mlflow`` pod."""
    pods = api_get(lab, f"/api/v1/namespaces/{ns}/pods?labelSelector=app%3Dmlflow")["items"]
    ips = [p["status"]["podIP"] for p in pods if not p["metadata"].get("deletionTimestamp")
           and all(c.get("ready") for c in p["status"].get("containerStatuses", [{}])) and p["status"].get("podIP")]
    assert len(ips) == 1, pods
    return ips[0]


def deploy(lab, ns: str, *cli_vars: str, **kwargs):
    """playbooks/deploy.yml into ``ns`` with one worker, ``-e name=value`` strings as an operator types them;
    ``kwargs`` go to run_playbook (verbosity, diff, extra_vars, ...)."""
    from helpers.ansible_runner import run_playbook

    kwargs.setdefault("timeout", 900)
    return run_playbook("playbooks/deploy.yml", kubeconfig=lab.kubeconfig, env=lab.env(),
                        cli_vars=[f"deploy_namespace={ns}", "deploy_workers=1", "deploy_wait_timeout=240", *cli_vars],
                        **kwargs)
