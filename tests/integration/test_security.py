"""Security properties of the collection, measured against the lab with real playbooks, real MLflow pods and a
real PostgreSQL (tests/helpers/postgres.py).

- The backend-store password never appears in any output: deploy (inline URI: the role creates the Secret),
  patch and verify at -vvv with --diff: stdout, stderr, the Ansible log file, the JSON report; the Deployment
  carries the URI only as a secretKeyRef.
- Port-forwards listen on loopback only unless explicitly asked (allow_non_loopback).
- TLS verification stays on by default: a kubeconfig with another CA fails clearly and changes nothing.
- The least-privilege RBAC of deploy/rbac/ (ServiceAccount, Role, RoleBinding, namespace reader): deploy, patch and
  verify pass as that account (the lab enforces RBAC for it, see tests/lab/asgardlab/rbac.py), without a single
  403, and it may do nothing more (other namespaces, secrets, namespaces, cluster roles, exec, escalation).
- The deployed pod runs non-root with the hardened securityContext (spec, and the running processes' /proc).

One MLflow serves the whole module: ``deployed`` runs deploy, patch and verify once, as the automation account, at
-vvv --diff with an Ansible log file; the secrets, RBAC, port-forward and hardening tests read that one result.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import json
import socket
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers.ansible_runner import REPO, run_playbook  # noqa: E402
from helpers.postgres import PostgresServer, ensure_lab_driver  # noqa: E402

pytestmark = pytest.mark.lab

PASSWORD = "Pg" + uuid.uuid4().hex[:20]  # alphanumeric: its URL-encoded form is itself
RBAC_DIR = REPO / "deploy" / "rbac"
SA = "asgard-mlflow-automation"


# --------------------------------------------------------------------------- helpers
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listeners(port: int) -> set[str]:
    """Local addresses (hex, as in /proc/net/tcp) listening on ``port`` in the host network namespace."""
    out = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        addr, p = f[1].split(":")
        if int(p, 16) == port and f[3] == "0A":
            out.add(addr)
    return out


def _tasks_playbook(tmp_path: Path, name: str, tasks: list[dict]) -> Path:
    pb = tmp_path / f"{name}.yml"
    pb.write_text(yaml.safe_dump([{"name": name, "hosts": "localhost", "gather_facts": False, "tasks": tasks}],
                                 sort_keys=False))
    return pb


def _needles(uri: str) -> list[str]:
    return [PASSWORD, base64.b64encode(uri.encode()).decode(), base64.b64encode(PASSWORD.encode()).decode()]


def _assert_no_secret(where: str, text: str, needles: list[str]) -> None:
    for n in needles:
        assert n not in text, f"the backend-store password (or its base64) appears in {where}"


def _pod(lab, ns: str) -> dict:
    pods = [p for p in lab.request("GET", f"/api/v1/namespaces/{ns}/pods?labelSelector=app%3Dmlflow").json()["items"]
            if not p["metadata"].get("deletionTimestamp")]
    assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
    return pods[0]


def _container_procs(pod: dict) -> list[dict]:
    """The lab runs containers as host processes tagged ASGARDLAB_CONTAINER_ID=<lab>-<containerID>."""
    cid = pod["status"]["containerStatuses"][0]["containerID"].split("://", 1)[1].encode()
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            env = (d / "environ").read_bytes().split(b"\0")
            if not any(e.startswith(b"ASGARDLAB_CONTAINER_ID=") and e.endswith(b"-" + cid) for e in env):
                continue
            status = dict(line.split(":\t", 1) for line in (d / "status").read_text().splitlines() if ":\t" in line)
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        out.append({"pid": int(d.name), "uid": status["Uid"].split(), "gid": status["Gid"].split(),
                    "capeff": status["CapEff"].strip(), "cmd": cmd})
    return out


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def postgres(lab, tmp_path_factory):
    ensure_lab_driver()
    # not under pytest's tmp dirs: they are private to root, and the server runs as the postgres user
    with PostgresServer(Path(tempfile.mkdtemp(prefix="asgard-sec-pg-")), password=PASSWORD) as pg:
        yield pg


# --------------------------------------------------------------------------- 1. secrets never in output
def test_password_never_in_any_output(lab, deployed, postgres):
    needles = _needles(deployed["uri"])
    for name, res in deployed["runs"].items():
        assert res.rc == 0, f"{name}: {res.output}"
        _assert_no_secret(f"{name} stdout (-vvv --diff)", res.stdout, needles)
        _assert_no_secret(f"{name} stderr", res.stderr, needles)
    assert "Secret" in deployed["runs"]["deploy"].stdout and "content redacted" in deployed["runs"]["deploy"].stdout
    log = deployed["log"].read_text()
    assert "TASK [" in log  # the log file really got the run
    _assert_no_secret("the Ansible log file", log, needles)
    report = deployed["report"].read_text()
    assert json.loads(report)  # a real, non-empty JSON report
    _assert_no_secret("the verify JSON report", report, needles)
    # the URI reached the pod through the Secret, never as a literal in the Deployment
    dep = lab.request("GET", f"/apis/apps/v1/namespaces/{deployed['ns']}/deployments/mlflow-deployment").json()
    _assert_no_secret("the Deployment object", json.dumps(dep), needles)
    env = {e["name"]: e for e in dep["spec"]["template"]["spec"]["containers"][0].get("env", [])}
    assert "secretKeyRef" in env["MLFLOW_BACKEND_STORE_URI"]["valueFrom"], env.get("MLFLOW_BACKEND_STORE_URI")
    # and MLflow really uses the PostgreSQL store behind it
    assert postgres.psql("SELECT count(*) FROM alembic_version") == "1"


# --------------------------------------------------------------------------- 2. loopback-only port-forwards
def test_port_forward_loopback_only_unless_asked(lab, deployed, tmp_path):
    port = _free_port()
    base = {"namespace": deployed["ns"], "service": "mlflow-service", "local_port": port}
    pb = _tasks_playbook(tmp_path, "forward", [
        {"name": "refused", "asgard.mlflow.port_forward": {**base, "address": "0.0.0.0"}, "register": "refused",
         "ignore_errors": True},
        {"name": "nothing listens after the refusal", "ansible.builtin.wait_for": {"port": port, "host": "127.0.0.1",
                                                                                  "state": "stopped", "timeout": 1}},
        {"name": "default", "asgard.mlflow.port_forward": base, "register": "default"},
        {"name": "health through it", "ansible.builtin.uri": {"url": f"http://127.0.0.1:{port}/health",
                                                              "return_content": True}, "register": "health"},
        {"name": "listeners while the default forward runs",
         "ansible.builtin.command": "cat /proc/net/tcp", "register": "tcp_default", "changed_when": False},
        {"name": "stop", "asgard.mlflow.port_forward": {**base, "state": "absent"}},
        {"name": "explicit", "asgard.mlflow.port_forward": {**base, "address": "0.0.0.0", "allow_non_loopback": True},
         "register": "explicit"},
        {"name": "listeners while the explicit forward runs",
         "ansible.builtin.command": "cat /proc/net/tcp", "register": "tcp_explicit", "changed_when": False},
        {"name": "stop again", "asgard.mlflow.port_forward": {**base, "address": "0.0.0.0", "allow_non_loopback": True,
                                                              "state": "absent"}},
        {"name": "results", "ansible.builtin.set_fact": {"out": {
            "refused": "{{ refused }}", "default": "{{ default }}", "health": "{{ health.content }}",
            "tcp_default": "{{ tcp_default.stdout }}", "tcp_explicit": "{{ tcp_explicit.stdout }}"}}},
    ])
    res = run_playbook(pb, kubeconfig=lab.kubeconfig, env=lab.env())
    failed = {t["task"]["name"]: [h.get("msg") for h in t["hosts"].values()] for t in res.tasks()
              if any(h.get("failed") and not h.get("ignore_errors") for h in t["hosts"].values())}
    assert res.rc == 0, failed
    out = res.task("results")[0]["ansible_facts"]["out"]
    refused = out["refused"]
    assert refused["failed"] is True
    assert "allow_non_loopback" in refused["msg"] and "0.0.0.0" in refused["msg"], refused["msg"]
    assert out["default"]["address"] == "127.0.0.1" and out["health"].strip() == "OK"
    hexport = f"{port:04X}"

    def listening(tcp: str) -> set[str]:
        return {f[1].split(":")[0] for f in (line.split() for line in tcp.splitlines()[1:])
                if f[1].endswith(":" + hexport) and f[3] == "0A"}

    assert listening(out["tcp_default"]) == {"0100007F"}  # 127.0.0.1 only
    assert listening(out["tcp_explicit"]) == {"00000000"}  # 0.0.0.0, because it was asked for
    assert _listeners(port) == set()  # both stopped


# --------------------------------------------------------------------------- 3. TLS verification on by default
def _other_ca_kubeconfig(lab, path: Path) -> Path:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "not-the-lab-ca")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(key, hashes.SHA256()))
    cfg = yaml.safe_load(lab.kubeconfig.read_text())
    cfg["clusters"][0]["cluster"]["certificate-authority-data"] = base64.b64encode(
        cert.public_bytes(serialization.Encoding.PEM)).decode()
    assert "insecure-skip-tls-verify" not in cfg["clusters"][0]["cluster"]
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_wrong_ca_fails_clearly_and_changes_nothing(lab, tmp_path):
    kc = _other_ca_kubeconfig(lab, tmp_path / "wrong-ca.kubeconfig")
    ns = f"t-tls-{uuid.uuid4().hex[:8]}"
    res = run_playbook("playbooks/deploy.yml", kubeconfig=kc, env=lab.env(KUBECONFIG=str(kc)),
                       extra_vars={"deploy_namespace": ns, "deploy_workers": 1})
    assert res.rc != 0, res.output
    assert "CERTIFICATE_VERIFY_FAILED" in res.stdout + res.stderr, res.output
    assert lab.request("GET", f"/api/v1/namespaces/{ns}").status_code == 404
    # the modules, with the discovery cache of earlier runs warm in TMPDIR (as on any controller)
    port = _free_port()
    pb = _tasks_playbook(tmp_path, "probe", [
        {"name": "warm the discovery cache with the right CA", "kubernetes.core.k8s_info": {
            "api_version": "v1", "kind": "Service", "namespace": "default", "name": "kubernetes",
            "kubeconfig": str(lab.kubeconfig)}},
        {"name": "probe", "asgard.mlflow.mlflow_probe": {"namespace": "default", "service": "kubernetes",
                                                         "kubeconfig": str(kc), "fail_on_unhealthy": True},
         "register": "probe", "ignore_errors": True},
        {"name": "forward", "asgard.mlflow.port_forward": {"namespace": "default", "service": "kubernetes",
                                                           "local_port": port, "kubeconfig": str(kc)},
         "register": "fwd", "ignore_errors": True},
        {"name": "stop", "asgard.mlflow.port_forward": {"namespace": "default", "service": "kubernetes",
                                                        "local_port": port, "state": "absent"}},
        {"name": "results", "ansible.builtin.set_fact": {"out": {"probe": "{{ probe }}", "fwd": "{{ fwd }}"}}},
    ])
    res = run_playbook(pb, kubeconfig=lab.kubeconfig, env=lab.env())
    out = res.task("results")[0]["ansible_facts"]["out"]
    probe = out["probe"]
    assert probe["failed"] is True, probe
    why = probe["msg"] + " ".join(f.get("message", "") for f in probe.get("findings") or [])
    assert "CERTIFICATE_VERIFY_FAILED" in why, why
    fwd = out["fwd"]
    assert fwd["failed"] is True, f"port_forward started with an untrusted API server certificate: {fwd}"
    assert "CERTIFICATE_VERIFY_FAILED" in fwd["msg"], fwd["msg"]


# --------------------------------------------------------------------------- 4. least-privilege RBAC
def _rbac_manifests(ns: str) -> list[dict]:
    """deploy/rbac/*.yaml moved from namespace `asgard` to ``ns`` (cluster-scoped names suffixed with ``ns``)."""
    docs = []
    for f in sorted(RBAC_DIR.glob("*.y*ml")):
        docs += [d for d in yaml.safe_load_all(f.read_text()) if d]
    assert {d["kind"] for d in docs} >= {"ServiceAccount", "Role", "RoleBinding"}, [d["kind"] for d in docs]
    out = []
    for d in copy.deepcopy(docs):
        md = d["metadata"]
        if d["kind"] in ("ClusterRole", "ClusterRoleBinding"):
            md["name"] = f"{md['name']}-{ns}"
        else:
            md["namespace"] = ns
        if d["kind"] == "ClusterRole":
            for rule in d.get("rules", []):
                if rule.get("resources") == ["namespaces"]:
                    rule["resourceNames"] = [ns]
        if d["kind"] == "ClusterRoleBinding":
            d["roleRef"]["name"] = f"{d['roleRef']['name']}-{ns}"
        for s in d.get("subjects", []):
            if s.get("kind") == "ServiceAccount":
                s["namespace"] = ns
        out.append(d)
    return out


def _create(lab, obj: dict) -> None:
    from asgardlab import resources as R

    api_version, kind = obj["apiVersion"], obj["kind"]
    rt = R.by_kind(api_version, kind)
    assert rt is not None, f"{api_version} {kind}"
    base = f"/api/{api_version}" if not rt.group else f"/apis/{api_version}"
    ns = obj["metadata"].get("namespace")
    path = f"{base}/namespaces/{ns}/{rt.plural}" if rt.namespaced else f"{base}/{rt.plural}"
    r = lab.request("POST", path, json=obj)
    assert r.status_code == 201, r.text


@pytest.fixture(scope="module")
def automation(lab, tmp_path_factory):
    """A namespace with deploy/rbac/ applied; a kubeconfig authenticating as the automation ServiceAccount,
    its token read from the service-account-token Secret (as AWX would)."""
    ns = f"t-rbac-{uuid.uuid4().hex[:8]}"
    r = lab.request("POST", "/api/v1/namespaces", json={"metadata": {"name": ns}})
    assert r.status_code == 201, r.text
    manifests = _rbac_manifests(ns)
    for obj in manifests:
        _create(lab, obj)
    token = None
    token_secrets = [d["metadata"]["name"] for d in manifests
                     if d["kind"] == "Secret" and d.get("type") == "kubernetes.io/service-account-token"]
    for _ in range(50):
        if not token_secrets:
            break
        data = lab.request("GET", f"/api/v1/namespaces/{ns}/secrets/{token_secrets[0]}").json().get("data") or {}
        if data.get("token"):
            token = base64.b64decode(data["token"]).decode()
            break
        time.sleep(0.1)
    if token is None:  # no token Secret shipped: the TokenRequest API, as `kubectl create token` does
        r = lab.request("POST", f"/api/v1/namespaces/{ns}/serviceaccounts/{SA}/token", json={"spec": {"expirationSeconds": 3600}})
        assert r.status_code == 201, r.text
        token = r.json()["status"]["token"]
    cfg = yaml.safe_load(lab.kubeconfig.read_text())
    cfg["users"] = [{"name": SA, "user": {"token": token}}]
    cfg["contexts"] = [{"name": SA, "context": {"cluster": cfg["clusters"][0]["name"], "user": SA, "namespace": ns}}]
    cfg["current-context"] = SA
    kc = tmp_path_factory.mktemp("rbac") / "automation.kubeconfig"
    kc.write_text(yaml.safe_dump(cfg))
    yield {"ns": ns, "token": token, "kubeconfig": kc, "user": f"system:serviceaccount:{ns}:{SA}",
           "cluster_names": [d["metadata"]["name"] for d in manifests if d["kind"].startswith("Cluster")]}
    lab.request("DELETE", f"/api/v1/namespaces/{ns}")
    for d in manifests:
        if d["kind"] == "ClusterRoleBinding":
            lab.request("DELETE", f"/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/{d['metadata']['name']}")
        elif d["kind"] == "ClusterRole":
            lab.request("DELETE", f"/apis/rbac.authorization.k8s.io/v1/clusterroles/{d['metadata']['name']}")


@pytest.fixture(scope="module")
def deployed(lab, postgres, automation, tmp_path_factory):
    """deploy (inline PostgreSQL URI: the role creates the Secret), patch and verify at -vvv --diff with the default
    (human) callback and an Ansible log file, as the least-privilege automation account into its namespace. The
    verify leaves the dashboard port-forward: its listeners are read, then it is stopped. ``mine``: what that
    account sent to the API during these runs."""
    tmp = tmp_path_factory.mktemp("sec")
    uri = postgres.uri()
    ns, kc = automation["ns"], automation["kubeconfig"]
    log = tmp / "ansible.log"
    env = lab.env(KUBECONFIG=str(kc), ANSIBLE_LOG_PATH=str(log))
    report = tmp / "report.json"
    mark = lab.log_mark()
    runs = {
        "deploy": run_playbook("playbooks/deploy.yml", kubeconfig=kc, env=env, verbosity=3, diff=True,
                               json_output=False, extra_vars={"deploy_namespace": ns, "deploy_create_namespace": False,
                                                              "deploy_workers": 1, "deploy_backend_store_uri": uri,
                                                              "deploy_wait_timeout": 300}),
    }
    runs["patch"] = run_playbook("playbooks/patch.yml", kubeconfig=kc, env=env, verbosity=3, diff=True,
                                 json_output=False, extra_vars={"patch_namespace": ns, "patch_workers": 1})
    port = _free_port()
    runs["verify"] = run_playbook("playbooks/verify.yml", kubeconfig=kc, env=env, verbosity=3, diff=True,
                                  json_output=False, extra_vars={"verify_namespace": ns, "verify_min_workers": 1,
                                                                 "verify_port_forward": True,
                                                                 "verify_port_forward_local_port": port,
                                                                 "verify_report_path": str(report),
                                                                 "verify_patch_vars": {"patch_workers": 1}})
    try:
        listeners = _listeners(port)  # the forward verify left
    finally:
        stop = _tasks_playbook(tmp, "stop", [{"name": "stop", "asgard.mlflow.port_forward": {
            "namespace": ns, "service": "mlflow-service", "local_port": port, "state": "absent"}}])
        run_playbook(stop, kubeconfig=kc, env=lab.env(KUBECONFIG=str(kc)))
    mine = [e for e in lab.requests_since(mark) if e.get("user") == automation["user"]]
    return {"runs": runs, "log": log, "report": report, "uri": uri, "ns": ns, "listeners": listeners, "mine": mine}


def test_playbooks_pass_with_the_least_privilege_role(deployed):
    runs = deployed["runs"]
    for name, res in runs.items():
        assert res.rc == 0, f"{name}: {res.output}"
    assert deployed["listeners"] == {"0100007F"}  # the forward verify left: 127.0.0.1 only
    mine = deployed["mine"]
    assert mine, "the playbooks did not authenticate as the automation account"
    # asgard.mlflow.cluster_access asks its permissions with SelfSubjectAccessReviews, which every authenticated
    # account may create on a real cluster (ClusterRole system:basic-user); a lab without that API or role answers
    # 403, and the module then checks by reading (its result says so): not a permission the Role lacks
    ssar = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
    assert [e for e in mine if e["status"] == 403 and e["path"] != ssar] == [], \
        "the playbooks needed more than the Role grants"
    created = {e["path"].rsplit("/", 1)[-1] for e in mine if e["method"] == "POST" and e["status"] == 201}
    assert {"deployments", "services", "persistentvolumeclaims"} <= created, created


@pytest.mark.parametrize(("method", "path", "body"), [
    ("GET", "/api/v1/namespaces/default/secrets", None),
    ("GET", "/api/v1/namespaces/kube-system/secrets", None),
    ("GET", "/api/v1/secrets", None),
    ("GET", "/api/v1/namespaces/{ns}/secrets", None),
    ("GET", "/api/v1/namespaces/{ns}/secrets/asgard-mlflow-automation-token", None),
    ("DELETE", "/api/v1/namespaces/{ns}", None),
    ("DELETE", "/api/v1/namespaces/default", None),
    ("GET", "/api/v1/namespaces", None),
    ("GET", "/api/v1/namespaces/default", None),
    ("POST", "/apis/rbac.authorization.k8s.io/v1/clusterroles", {"metadata": {"name": "escalate"}, "rules": []}),
    ("POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles", {"metadata": {"name": "escalate"}, "rules": []}),
    ("POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings", {
        "metadata": {"name": "escalate"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                                      "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": SA, "namespace": "{ns}"}]}),
    ("DELETE", "/apis/apps/v1/namespaces/{ns}/deployments/mlflow-deployment", None),
    ("GET", "/apis/apps/v1/namespaces/default/deployments", None),
    ("POST", "/api/v1/namespaces/{ns}/pods/x/exec?command=id&stdout=true", None),
    ("POST", "/api/v1/namespaces/{ns}/serviceaccounts/" + SA + "/token", {"spec": {}}),
    ("GET", "/api/v1/nodes", None),
    ("POST", "/lab/faults", {"kind": "http_status", "status": 503}),
])
def test_the_role_grants_nothing_more(lab, automation, method, path, body):
    ns = automation["ns"]
    path = path.replace("{ns}", ns)
    if body is not None:
        body = json.loads(json.dumps(body).replace("{ns}", ns))
    before = lab.request("GET", f"/api/v1/namespaces/{ns}").json()["metadata"]["resourceVersion"]
    r = lab.request(method, path, token=automation["token"], json=body)
    assert r.status_code == 403, (method, path, r.status_code, r.text[:300])
    msg = r.json()["message"]
    assert f'User "{automation["user"]}" cannot' in msg, msg
    assert lab.request("GET", f"/api/v1/namespaces/{ns}").json()["metadata"]["resourceVersion"] == before


# --------------------------------------------------------------------------- 5. non-root, hardened
def test_pod_runs_non_root_hardened(lab, deployed):
    pod = _pod(lab, deployed["ns"])
    spec = pod["spec"]
    psc = spec["securityContext"]
    csc = spec["containers"][0]["securityContext"]
    assert psc["runAsNonRoot"] is True and psc["runAsUser"] == 1000 and psc["runAsGroup"] == 1000
    assert psc.get("fsGroup") == 1000
    assert (psc.get("seccompProfile") or csc.get("seccompProfile"))["type"] == "RuntimeDefault"
    assert csc["allowPrivilegeEscalation"] is False and csc["readOnlyRootFilesystem"] is True
    assert csc["capabilities"]["drop"] == ["ALL"] and not csc["capabilities"].get("add")
    assert csc.get("privileged") in (None, False)
    assert spec.get("automountServiceAccountToken") is False
    procs = _container_procs(pod)
    assert any("mlflow" in p["cmd"] for p in procs), procs
    for p in procs:
        assert set(p["uid"]) == {"1000"} and set(p["gid"]) == {"1000"}, p
        assert int(p["capeff"], 16) == 0, p
