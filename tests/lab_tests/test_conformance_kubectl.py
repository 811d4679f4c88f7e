"""kubectl 1.32 (/usr/bin/kubectl) against the lab: get/describe/delete/apply (client- and server-side)."""

from __future__ import annotations

import subprocess
import time

KUBECTL = "/usr/bin/kubectl"


def kubectl(lab, *args: str, stdin: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([KUBECTL, *args], input=stdin, env=lab.env(), capture_output=True, text=True, timeout=timeout)


def manifest(ns: str, args: str = "--a") -> str:
    return f"""
apiVersion: v1
kind: Namespace
metadata:
  name: {ns}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: {ns}
  labels: {{app: web}}
spec:
  replicas: 0
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      containers:
      - name: web
        image: example.invalid/web:1.0
        args: ["{args}"]
        ports: [{{containerPort: 8080}}]
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: {ns}
spec:
  selector: {{app: web}}
  ports: [{{port: 80, targetPort: 8080}}]
---
apiVersion: v1
kind: Secret
metadata:
  name: creds
  namespace: {ns}
data:
  password: c2VjcmV0
"""


def test_apply_get_describe_delete(lab, lab_namespace):
    ns = lab_namespace
    r = kubectl(lab, "apply", "-f", "-", stdin=manifest(ns))
    assert r.returncode == 0, r.stderr
    assert "deployment.apps/web created" in r.stdout and "service/web created" in r.stdout and "secret/creds created" in r.stdout
    r = kubectl(lab, "apply", "-f", "-", stdin=manifest(ns))
    assert r.returncode == 0, r.stderr
    assert "deployment.apps/web unchanged" in r.stdout and "service/web unchanged" in r.stdout and "secret/creds unchanged" in r.stdout
    r = kubectl(lab, "apply", "-f", "-", stdin=manifest(ns, "--b"))
    assert "deployment.apps/web configured" in r.stdout, r.stdout + r.stderr
    assert kubectl(lab, "get", "deploy", "web", "-n", ns, "-o", "jsonpath={.metadata.generation} {.spec.template.spec.containers[0].args[0]}").stdout == "2 --b"

    out = kubectl(lab, "get", "deploy,svc,secret", "-n", ns).stdout
    assert "NAME" in out and "READY" in out and "UP-TO-DATE" in out and "AVAILABLE" in out
    assert "deployment.apps/web" in out and "0/0" in out
    assert "service/web" in out and "ClusterIP" in out and "80/TCP" in out
    assert "secret/creds" in out and "Opaque" in out
    wide = kubectl(lab, "get", "deploy", "-n", ns, "-o", "wide").stdout
    assert "CONTAINERS" in wide and "example.invalid/web:1.0" in wide and "app=web" in wide
    nss = kubectl(lab, "get", "ns").stdout
    assert ns in nss and "Active" in nss and "STATUS" in nss

    desc = kubectl(lab, "describe", "deployment", "web", "-n", ns).stdout
    assert "RollingUpdateStrategy:  25% max unavailable, 25% max surge" in desc and "--b" in desc
    desc = kubectl(lab, "describe", "svc", "web", "-n", ns).stdout
    assert "TargetPort:" in desc and "8080/TCP" in desc
    assert "password:  6 bytes" in kubectl(lab, "describe", "secret", "creds", "-n", ns).stdout

    r = kubectl(lab, "delete", "deployment", "web", "-n", ns)
    assert r.returncode == 0 and 'deployment.apps "web" deleted' in r.stdout
    r = kubectl(lab, "get", "deployment", "web", "-n", ns)
    assert r.returncode != 0 and 'deployments.apps "web" not found' in r.stderr


def test_server_side_apply(lab, lab_namespace):
    ns = lab_namespace
    r = kubectl(lab, "apply", "--server-side", "-f", "-", stdin=manifest(ns))
    assert r.returncode == 0, r.stderr
    assert "deployment.apps/web serverside-applied" in r.stdout and "secret/creds serverside-applied" in r.stdout
    r = kubectl(lab, "apply", "--server-side", "--force-conflicts", "-f", "-", stdin=manifest(ns, "--c"))
    assert r.returncode == 0, r.stderr
    assert kubectl(lab, "get", "deploy", "web", "-n", ns, "-o", "jsonpath={.spec.template.spec.containers[0].args[0]}").stdout == "--c"
    r = kubectl(lab, "delete", "-f", "-", stdin=manifest(ns).split("---", 2)[2])
    assert r.returncode == 0 and 'service "web" deleted' in r.stdout


def test_kubectl_errors(lab, lab_namespace):
    bad = manifest(lab_namespace).split("---")[1].replace("name: web\n  namespace", "name: Web_1\n  namespace")
    r = kubectl(lab, "apply", "-f", "-", stdin=bad)
    assert r.returncode != 0 and 'The Deployment "Web_1" is invalid: metadata.name: Invalid value: "Web_1"' in r.stderr and "metadata.name" in r.stderr
    r = kubectl(lab, "apply", "-f", "-", stdin="apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w, namespace: default}\n")
    assert r.returncode != 0 and 'no matches for kind "Widget" in version "example.com/v1"' in r.stderr
    typo = manifest(lab_namespace).split("---")[1].replace("replicas: 0", "replicas: 0\n  replicaz: 1")
    r = kubectl(lab, "apply", "-f", "-", stdin=typo)
    assert r.returncode != 0 and "replicaz" in r.stderr
    r = kubectl(lab, "get", "widgets")
    assert r.returncode != 0 and 'the server doesn\'t have a resource type "widgets"' in r.stderr


def test_get_watch(lab, lab_namespace):
    proc = subprocess.Popen([KUBECTL, "get", "configmaps", "-n", lab_namespace, "-w", "--request-timeout=6s"],
                            env=lab.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)
        r = kubectl(lab, "apply", "-f", "-", stdin=f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: watched, namespace: {lab_namespace}}}\ndata: {{a: b}}\n")
        assert r.returncode == 0, r.stderr
        out, _ = proc.communicate(timeout=15)
    finally:
        proc.kill()
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "DATA", "AGE"]
    assert any(line.split()[:2] == ["watched", "1"] for line in lines[1:])
