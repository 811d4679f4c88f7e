"""Bad input, table-driven (issue 8, "Bad input"): each case runs a real playbook (a role through its playbook, or a
module in a one-task play) against the lab and must fail BEFORE changing anything, with a message naming the
field or the cause and what was expected.

"Nothing changed" is asserted twice: the resourceVersions of every object in the target namespace are the same
after the run, and the lab's request log shows no write (POST/PUT/PATCH/DELETE) touching the namespaces the case
names. Cases that name a namespace that does not exist also assert it still does not exist.

Role variables are written with the prefix constants ``D`` / ``P`` below (``deploy_`` / ``patch_``), so a
rename of the roles' variables is a one-line change.

Cases with the same ``run`` share one ansible-playbook run: the roles check their argument specs, then report every
bad variable of their preflight at once (roles/*/tasks/preflight.yml), so the bad variables that fail at the same
stage are given together and each case's message must be one line of that failure naming its variable (all of the
case's substrings in that line); module cases of one run are one task each in one play (every task but the last
with ignore_errors), each task must fail with its own message. A run's "nothing changed" checks cover all its cases.
"""

from __future__ import annotations

import base64
import json
import shutil
import socket
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers.ansible_runner import run_playbook  # noqa: E402
from helpers.lab_objects import free_port  # noqa: E402

pytestmark = pytest.mark.lab

WRITES = {"POST", "PUT", "PATCH", "DELETE"}
MISSING_NS = f"fm-missing-{uuid.uuid4().hex[:8]}"  # a namespace that never exists
# the kinds whose resourceVersions are compared (everything the roles could create or change)
KINDS = {
    "deployments": "/apis/apps/v1/namespaces/{ns}/deployments",
    "services": "/api/v1/namespaces/{ns}/services",
    "configmaps": "/api/v1/namespaces/{ns}/configmaps",
    "secrets": "/api/v1/namespaces/{ns}/secrets",
    "serviceaccounts": "/api/v1/namespaces/{ns}/serviceaccounts",
    "persistentvolumeclaims": "/api/v1/namespaces/{ns}/persistentvolumeclaims",
    "jobs": "/apis/batch/v1/namespaces/{ns}/jobs",
}


@dataclass
class Case:
    id: str
    target: str  # "deploy" | "patch" | "verify" (playbooks/<target>.yml) or a module FQCN
    args: dict
    expect: list[str]  # substrings the failure message must contain (field/cause and expected form)
    kubeconfig: str = "admin"  # admin | directory | missing | invalid_yaml | wrong_token | forbidden
    via_env: bool = True  # pass the kubeconfig as KUBECONFIG (else as the role variable / module option)
    extra: dict = field(default_factory=dict)  # {"env": {...}}: more environment ({server}, {ca} substituted)
    run: str = ""  # cases with the same run share one ansible-playbook run (see the module docstring)
    starts: str = ""  # in a shared role run: the case's line of the failure starts with this


# `{ns}` is the shared namespace holding the Deployment the cases must not touch, `{missing}` a namespace that
# does not exist, `{kc}` the path of the case's kubeconfig.
D = "deploy_"  # role variable prefixes (see the module docstring)
P = "patch_"
CASES = [
    # ---------------------------------------------------------------- deploy role: types and ranges
    Case("deploy-workers-not-a-number", "deploy", {f"{D}namespace": "{ns}", f"{D}workers": "four"},
         [f"{D}workers", "int"], run="deploy-argument-spec"),
    Case("deploy-workers-0", "deploy", {f"{D}namespace": "{ns}", f"{D}workers": 0},
         [f"{D}workers=0", "expected an integer >= 1"], run="deploy-preflight"),
    Case("deploy-container-port-0", "deploy", {f"{D}namespace": "{ns}", f"{D}container_port": 0},
         [f"{D}container_port=0", "1-65535"], run="deploy-preflight"),
    Case("deploy-service-port-70000", "deploy", {f"{D}namespace": "{ns}", f"{D}service_port": 70000},
         [f"{D}service_port=70000", "1-65535"], run="deploy-preflight"),
    Case("deploy-wait-timeout-negative", "deploy", {f"{D}namespace": "{ns}", f"{D}wait_timeout": -1},
         [f"{D}wait_timeout=-1", "expected an integer >= 1"], run="deploy-preflight"),
    Case("deploy-server-not-a-choice", "deploy", {f"{D}namespace": "{ns}", f"{D}server": "waitress"},
         [f"{D}server", "uvicorn", "gunicorn"], run="deploy-argument-spec"),
    Case("deploy-probe-unknown-key", "deploy",
         {f"{D}namespace": "{ns}", f"{D}liveness_probe": {"periodSeconds": 20, "timeout": 10, "failureThreshold": 6}},
         [f"{D}liveness_probe", "periodSeconds, timeoutSeconds and failureThreshold"], run="deploy-preflight"),
    Case("deploy-static-prefix-without-slash", "deploy", {f"{D}namespace": "{ns}", f"{D}static_prefix": "mlflow"},
         [f"{D}static_prefix=\"mlflow\"", 'starts with "/"'], run="deploy-preflight"),
    Case("deploy-allowed-host-with-space", "deploy",
         {f"{D}namespace": "{ns}", f"{D}allowed_hosts_extra": ["mlflow example.com"]},
         [f"{D}allowed_hosts_extra", "mlflow example.com", "space"], run="deploy-preflight"),
    Case("deploy-image-malformed", "deploy", {f"{D}namespace": "{ns}", f"{D}image": "ghcr.io/MLflow/mlflow:v3 17"},
         [f"{D}image", "not a valid image reference", "ghcr.io/mlflow/mlflow:v3.17.2"], run="deploy-preflight"),
    Case("deploy-namespace-malformed", "deploy", {f"{D}namespace": "Bad_Namespace"},
         [f"{D}namespace", "Bad_Namespace", "not a valid namespace name"]),
    Case("deploy-sqlite-two-replicas", "deploy", {f"{D}namespace": "{ns}", f"{D}replicas": 2},
         [f"{D}replicas <= 1 (is 2)", "SQLite"], run="deploy-preflight"),
    # ---------------------------------------------------------------- deploy role: cluster access
    Case("deploy-missing-namespace", "deploy", {f"{D}namespace": "{missing}", f"{D}create_namespace": False},
         ["namespace {missing} does not exist", f"{D}create_namespace"]),
    # the kubeconfig preflight: the source named (variable or environment variable and path), the cause, what to do
    Case("deploy-kubeconfig-is-a-directory", "deploy", {f"{D}namespace": "{ns}", f"{D}kubeconfig": "{kc}"},
         [f"{D}kubeconfig={{kc}}", "is a directory, not a kubeconfig file", f"set {D}kubeconfig"],
         kubeconfig="directory", via_env=False),
    Case("deploy-kubeconfig-missing", "deploy", {f"{D}namespace": "{ns}"},
         ["KUBECONFIG={kc}", "does not exist", f"set {D}kubeconfig"], kubeconfig="missing"),
    Case("deploy-kubeconfig-invalid-yaml", "deploy", {f"{D}namespace": "{ns}"},
         ["KUBECONFIG={kc} is not a valid kubeconfig", "invalid YAML", "line 3", "regenerate"],
         kubeconfig="invalid_yaml"),
    Case("deploy-invalid-token-401", "deploy", {f"{D}namespace": "{ns}"},
         ["rejected the credentials from the kubeconfig KUBECONFIG={kc}", "401 Unauthorized", "Renew"],
         kubeconfig="wrong_token"),
    Case("deploy-k8s-auth-env-token-401", "deploy", {f"{D}namespace": "{ns}"},  # AWX's Kubernetes credential
         ["rejected the credentials from the API server {server}", "K8S_AUTH_API_KEY", "401 Unauthorized"],
         kubeconfig="missing", extra={"env": {"K8S_AUTH_HOST": "{server}", "K8S_AUTH_SSL_CA_CERT": "{ca}",
                                              "K8S_AUTH_API_KEY": "revoked-token"}}),
    Case("deploy-rbac-forbidden-403", "deploy", {f"{D}namespace": "{ns}"},
         ["403 Forbidden", "RBAC", "deploy/rbac/"], kubeconfig="forbidden"),
    # ---------------------------------------------------------------- patch role
    Case("patch-workers-0", "patch", {f"{P}namespace": "{ns}", f"{P}workers": 0},
         [f"{P}workers=0", "expected an integer >= 1"]),
    Case("patch-gunicorn-timeout-negative", "patch", {f"{P}namespace": "{ns}", f"{P}gunicorn_timeout": -1},
         [f"{P}gunicorn_timeout=-1", "expected an integer >= 1"], run="patch-preflight"),
    Case("patch-port-70000", "patch", {f"{P}namespace": "{ns}", f"{P}port": 70000},
         [f"{P}port=70000", "1-65535"], run="patch-preflight"),
    Case("patch-static-prefix-without-slash", "patch", {f"{P}namespace": "{ns}", f"{P}static_prefix": "static"},
         [f"{P}static_prefix=\"static\"", "starts with '/'"], run="patch-preflight",
         starts='patch_static_prefix="static" is invalid'),
    Case("patch-allowed-host-with-space", "patch",
         {f"{P}namespace": "{ns}", f"{P}allowed_hosts_extra": ["mlflow .example.com"]},
         [f"{P}allowed_hosts_extra", "without commas or spaces"], run="patch-preflight"),
    Case("patch-mode-not-a-choice", "patch", {f"{P}namespace": "{ns}", f"{P}workers_mode": "more"},
         [f"{P}workers_mode", "exact", "at_least"]),
    Case("patch-unknown-deployment", "patch", {f"{P}namespace": "{ns}", f"{P}name": "no-such-deployment"},
         ["no-such-deployment", "not found", "Deployment {ns}/no-such-deployment not found; nothing was changed"]),
    Case("patch-missing-namespace", "patch", {f"{P}namespace": "{missing}"},
         ["{missing}"]),
    Case("patch-kubeconfig-missing", "patch", {f"{P}namespace": "{ns}", f"{P}kubeconfig": "{kc}"},
         [f"{P}kubeconfig={{kc}}", "does not exist", f"set {P}kubeconfig"], kubeconfig="missing", via_env=False),
    Case("patch-kubeconfig-invalid-yaml", "patch", {f"{P}namespace": "{ns}"},
         ["KUBECONFIG={kc} is not a valid kubeconfig", "invalid YAML", "line 3"], kubeconfig="invalid_yaml"),
    Case("patch-invalid-token-401", "patch", {f"{P}namespace": "{ns}"},
         ["rejected the credentials from the kubeconfig KUBECONFIG={kc}", "401 Unauthorized", "Renew"],
         kubeconfig="wrong_token"),
    Case("patch-rbac-forbidden-403", "patch", {f"{P}namespace": "{ns}"},
         ["403 Forbidden", "Deployment {ns}/mlflow-deployment", "deploy/rbac/role.yaml"], kubeconfig="forbidden"),
    # ---------------------------------------------------------------- modules
    Case("probe-unknown-option", "asgard.mlflow.mlflow_probe", {"namespace": "{ns}", "bogus_option": 1},
         ["Unsupported parameters", "bogus_option"], run="modules"),
    Case("probe-timeout-negative", "asgard.mlflow.mlflow_probe", {"namespace": "{ns}", "timeout": -1},
         ["timeout"], run="modules"),
    Case("probe-remote-port-70000", "asgard.mlflow.mlflow_probe", {"namespace": "{ns}", "remote_port": 70000},
         ["remote_port", "1", "65535"], run="modules"),
    Case("probe-missing-namespace", "asgard.mlflow.mlflow_probe", {"namespace": "{missing}", "fail_on_unhealthy": True},
         ["namespace '{missing}' does not exist"], run="modules"),
    Case("probe-kubeconfig-invalid-yaml", "asgard.mlflow.mlflow_probe", {"namespace": "{ns}", "kubeconfig": "{kc}"},
         ["kubeconfig"], kubeconfig="invalid_yaml", via_env=False, run="modules"),
    Case("probe-invalid-token-401", "asgard.mlflow.mlflow_probe", {"namespace": "{ns}", "fail_on_unhealthy": True},
         ["401"], kubeconfig="wrong_token", run="modules"),
    Case("port-forward-non-loopback-bind", "asgard.mlflow.port_forward",
         {"namespace": "{ns}", "address": "0.0.0.0", "local_port": "{free_port}"},
         ["0.0.0.0", "loopback", "allow_non_loopback"], run="modules"),
    Case("port-forward-local-port-70000", "asgard.mlflow.port_forward", {"namespace": "{ns}", "local_port": 70000},
         ["local_port", "65535"], run="modules"),
    Case("port-forward-missing-namespace", "asgard.mlflow.port_forward",
         {"namespace": "{missing}", "local_port": "{free_port}"},
         ["NAMESPACE_NOT_FOUND", "{missing}", "does not exist"], run="modules"),
    Case("remediation-lock-duration-5", "asgard.mlflow.remediation_lock",
         {"namespace": "{ns}", "lease_duration": 5, "wait_timeout": -1},
         ["lease_duration: 5 is out of range (expected seconds from 10 to 3600)", "wait_timeout: -1 is out of range"], run="modules"),
    # ---------------------------------------------------------------- issue 14: typed as an operator types it
    Case("patch-workers-not-a-number", "patch", {f"{P}namespace": "{ns}", f"{P}workers": "four"},
         [f"{P}workers", "four"], run="patch-preflight"),
    Case("verify-remediate-not-a-boolean", "verify", {"verify_namespace": "{ns}", "verify_remediate": "maybe",
                                                      "verify_port_forward": False},
         ["verify_remediate", "maybe"]),
    Case("verify-container-not-in-the-pod", "verify", {"verify_namespace": "{ns}", "verify_port_forward": False,
                                                       "verify_container": "no-such-container"},
         ["no-such-container", "mlflow"]),
    # ---------------------------------------------------------------- verify role
    Case("verify-probe-timeout-negative", "verify", {"verify_namespace": "{ns}", "verify_probe_timeout": -1,
                                                     "verify_port_forward": False},
         ["verify_probe_timeout > 0"]),
    Case("verify-missing-namespace", "verify", {"verify_namespace": "{missing}", "verify_port_forward": False,
                                                "verify_remediate": True},
         ["{missing}"]),
]


# ------------------------------------------------------------------------------------------------ fixtures
def _seed_objects() -> list[dict]:
    """A Deployment (0 replicas: no pod needed) that every valid run of the patch role would change, a Service and a
    ConfigMap: the objects whose resourceVersions must not move."""
    labels = {"app": "mlflow"}
    container = {"name": "mlflow", "image": "ghcr.io/mlflow/mlflow:v3.17.2", "command": ["mlflow", "server"],
                 "args": ["--host=0.0.0.0", "--workers=1", "--static-prefix=/static",
                          "--backend-store-uri=sqlite:////mlflow/mlflow.db"],
                 "env": [{"name": "MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "value": "false"}],
                 "ports": [{"name": "http", "containerPort": 5000}]}
    return [
        ("/apis/apps/v1/namespaces/{ns}/deployments",
         {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "mlflow-deployment", "labels": labels},
          "spec": {"replicas": 0, "selector": {"matchLabels": labels},
                   "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}}}}),
        ("/api/v1/namespaces/{ns}/services",
         {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "mlflow-service"},
          "spec": {"selector": labels, "ports": [{"name": "http", "port": 5000, "targetPort": "http"}]}}),
        ("/api/v1/namespaces/{ns}/configmaps",
         {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "untouched"}, "data": {"k": "v"}}),
    ]


@pytest.fixture(scope="module")
def target_ns(lab):
    ns = f"fm-bad-{uuid.uuid4().hex[:8]}"
    r = lab.request("POST", "/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    assert r.status_code == 201, r.text
    for path, obj in _seed_objects():
        r = lab.request("POST", path.format(ns=ns), json=obj)
        assert r.status_code == 201, r.text
    # the controllers write the Deployment's status right after creation: wait until it is observed and the
    # resourceVersions settle (unchanged for 0.6 s; the lab's controllers run every 0.05 s), or the first case
    # compares against a snapshot taken mid-reconcile
    deadline = time.monotonic() + 30
    last, since = snapshot(lab, ns), time.monotonic()
    while not (time.monotonic() - since >= 0.6 and _observed(lab, ns)):
        if time.monotonic() > deadline:
            pytest.fail(f"namespace {ns} did not settle within 30 s: {last}")
        time.sleep(0.1)
        now = snapshot(lab, ns)
        if now != last:
            last, since = now, time.monotonic()
    yield ns
    lab.request("DELETE", f"/api/v1/namespaces/{ns}")


@pytest.fixture(scope="module")
def kubeconfigs(lab, tmp_path_factory) -> dict[str, Path]:
    """Broken kubeconfigs. We run as root, so "unreadable" is a directory or invalid YAML, not a chmod 000 file."""
    d = tmp_path_factory.mktemp("kubeconfigs")
    cfg = yaml.safe_load(lab.kubeconfig.read_text())
    out = {"admin": lab.kubeconfig, "directory": d / "kubeconfig-is-a-dir", "missing": d / "no-such-kubeconfig"}
    out["directory"].mkdir()
    ca = base64.b64decode(cfg["clusters"][0]["cluster"]["certificate-authority-data"])
    (d / "ca.crt").write_bytes(ca)
    out["invalid_yaml"] = d / "invalid.yaml"
    out["invalid_yaml"].write_text("apiVersion: v1\nclusters: [\n  - {cluster: : :\n")
    wrong = json.loads(json.dumps(cfg))
    wrong["users"][0]["user"]["token"] = "expired-or-invalid-" + uuid.uuid4().hex
    out["wrong_token"] = d / "wrong-token.yaml"
    out["wrong_token"].write_text(yaml.safe_dump(wrong))
    # a real identity without any RoleBinding: the lab's RBAC answers 403 for everything but discovery
    r = lab.request("POST", "/lab/tokens", json={"user": "fm-nobody", "expirationSeconds": 3600})
    assert r.status_code in (200, 201), f"the lab cannot mint tokens (RBAC missing?): {r.status_code} {r.text}"
    forbidden = json.loads(json.dumps(cfg))
    forbidden["users"][0]["user"]["token"] = r.json()["token"]
    out["forbidden"] = d / "forbidden.yaml"
    out["forbidden"].write_text(yaml.safe_dump(forbidden))
    yield out
    shutil.rmtree(d, ignore_errors=True)


# ------------------------------------------------------------------------------------------------- helpers
def _observed(lab, ns: str) -> bool:
    """The Deployment controller has written the seed Deployment's status (its generation observed)."""
    dep = lab.request("GET", f"/apis/apps/v1/namespaces/{ns}/deployments/mlflow-deployment").json()
    return (dep.get("status") or {}).get("observedGeneration") == dep["metadata"].get("generation")


def snapshot(lab, ns: str) -> dict[str, str]:
    out = {}
    for kind, path in KINDS.items():
        r = lab.request("GET", path.format(ns=ns))
        assert r.status_code == 200, r.text
        for item in r.json().get("items", []):
            out[f"{kind}/{item['metadata']['name']}"] = item["metadata"]["resourceVersion"]
    return out




def fill(value, subs: dict):
    if isinstance(value, str):
        for k, v in subs.items():
            value = value.replace("{" + k + "}", str(v))
        return value
    if isinstance(value, list):
        return [fill(v, subs) for v in value]
    if isinstance(value, dict):
        return {k: fill(v, subs) for k, v in value.items()}
    return value


def host_failure_text(host: dict) -> str:
    """The messages of one failed task result (what a user reads)."""
    if not host.get("failed"):
        return ""
    msgs = [str(host.get("msg", ""))]
    for k in ("argument_errors", "stderr", "exception"):
        if host.get(k):
            msgs.append(str(host[k])[:3000])
    for item in host.get("results", []) or []:  # loop items: the failed one's own message
        if isinstance(item, dict) and item.get("msg") not in (None, "All assertions passed"):
            msgs.append(str(item["msg"]))
    for f in host.get("findings", []) or []:  # mlflow_probe: the findings printed with the failure
        msgs.append(f"{f.get('code')}: {f.get('message')}")
    return "\n".join(msgs)


def failure_text(res) -> str:
    """The messages of the failed tasks, with the raw output as a fallback."""
    msgs = [host_failure_text(h) for t in res.tasks() for h in t.get("hosts", {}).values() if h.get("failed")]
    return "\n".join(msgs) or (res.stdout[-4000:] + res.stderr[-4000:])


def runs_of(cases: list[Case]) -> dict[str, list[Case]]:
    """run id -> its cases (a case without ``run`` is a run of its own)."""
    out: dict[str, list[Case]] = {}
    for c in cases:
        out.setdefault(c.run or c.id, []).append(c)
    return out


RUNS = runs_of(CASES)


def run_cases(lab, cases: list[Case], subs: dict, kubeconfigs: dict, tmp_path: Path):
    """One ansible-playbook run for ``cases`` (for a role: one role, one kubeconfig): a role gets the union of
    the cases' variables, a module one task per case (named by the case id; all but the last ignore errors, a case
    whose kubeconfig comes from the environment gets it as the task's environment)."""
    first = cases[0]
    if first.target in ("deploy", "patch", "verify"):
        assert {c.target for c in cases} == {first.target}, [c.id for c in cases]
        assert {(c.kubeconfig, c.via_env, json.dumps(c.extra)) for c in cases} == {(first.kubeconfig, first.via_env,
                                                                                    json.dumps(first.extra))}
        args = {}
        for c in cases:
            a = fill(c.args, subs[c.id])
            clash = {k for k in a if k in args and args[k] != a[k]}
            assert not clash, f"{c.id}: {clash} given twice in one run"
            args.update(a)
        kc = kubeconfigs[first.kubeconfig]
        env = lab.env(KUBECONFIG=str(kc if first.via_env else lab.kubeconfig), **fill(first.extra.get("env", {}), subs[first.id]))
        return run_playbook(f"playbooks/{first.target}.yml", extra_vars=args, env=env, timeout=300)
    tasks = []
    for n, c in enumerate(cases):
        args = fill(c.args, subs[c.id])
        if isinstance(args.get("local_port"), str):
            args["local_port"] = int(args["local_port"])
        task = {"name": c.id, c.target: args}
        if c.via_env and c.kubeconfig != "admin":
            task["environment"] = {"KUBECONFIG": str(kubeconfigs[c.kubeconfig])}
        assert not c.extra, f"{c.id}: extra environment in a module run"
        if n < len(cases) - 1:
            task["ignore_errors"] = True
        tasks.append(task)
    pb = tmp_path / "play.yml"
    pb.write_text(json.dumps([{"hosts": "localhost", "connection": "local", "gather_facts": False, "tasks": tasks}]))
    return run_playbook(pb, env=lab.env(KUBECONFIG=str(lab.kubeconfig)), timeout=300)


def task_failure_text(res, name: str) -> tuple[bool, str]:
    """(failed, messages) of the task ``name`` of a module run."""
    hosts = [h for t in res.tasks() if t.get("task", {}).get("name") == name for h in t.get("hosts", {}).values()]
    assert len(hosts) == 1, f"task {name} ran {len(hosts)} times\n{res.output[-3000:]}"
    return bool(hosts[0].get("failed")), host_failure_text(hosts[0])


# --------------------------------------------------------------------------------------------------- test
@pytest.mark.parametrize("run_id", list(RUNS))
def test_bad_input_fails_before_changing_anything(lab, target_ns, kubeconfigs, tmp_path, run_id: str):
    cases = RUNS[run_id]
    cluster = yaml.safe_load(kubeconfigs["admin"].read_text())["clusters"][0]["cluster"]
    subs = {c.id: {"ns": target_ns, "missing": MISSING_NS, "kc": kubeconfigs[c.kubeconfig], "free_port": free_port(),
                   "server": cluster["server"], "ca": kubeconfigs["missing"].parent / "ca.crt"}  # the lab's CA
            for c in cases}
    before = snapshot(lab, target_ns)
    mark = lab.log_mark()

    res = run_cases(lab, cases, subs, kubeconfigs, tmp_path)

    ids = [c.id for c in cases]
    assert res.rc != 0, f"{ids}: bad input was accepted\n{res.output}"
    assert res.changed == 0, f"{ids}: changed {res.changed_tasks()}"
    role = cases[0].target in ("deploy", "patch", "verify")
    msg = failure_text(res)
    print(f"\n[{run_id}] {msg[:2000]}")
    for case in cases:
        if not role:
            failed, text = task_failure_text(res, case.id)
            assert failed, f"{case.id}: bad input was accepted\n{res.output[-3000:]}"
        else:
            text = msg
        needles = [fill(n, subs[case.id]).lower() for n in case.expect]
        if role and len(cases) > 1:
            # one line of the shared failure is this case's: it holds every substring (and starts as told)
            start = fill(case.starts, subs[case.id]).lower()
            lines = [ln for ln in text.lower().splitlines() if ln.startswith(start) and all(n in ln for n in needles)]
            assert lines, f"{case.id}: no line of the message starts with {start!r} and holds all of {needles}:\n{text}"
        else:
            for needle in needles:
                assert needle in text.lower(), f"{case.id}: message lacks {needle!r}:\n{text}\n{res.output[-3000:]}"
    if role and any(c.starts for c in cases):
        # refused by the variable checks, before any API call: no kubernetes.core task ran (the requests log is shared)
        ran = [h.get("action", "") for t in res.tasks() for h in t["hosts"].values()]
        assert ran and not [a for a in ran if a.startswith("kubernetes.core.")], ran
    # nothing changed: no write on the namespaces the cases name, and identical resourceVersions
    names = (target_ns, MISSING_NS)
    writes = [f"{r['method']} {r['path']} -> {r['status']}" for r in lab.requests_since(mark)
              if r["method"] in WRITES and any(f"/namespaces/{n}" in r["path"] or r["path"].endswith("/namespaces")
                                               and n in json.dumps(r) for n in names)]
    assert writes == [], f"{ids}: writes during a bad-input run: {writes}"
    assert snapshot(lab, target_ns) == before
    r = lab.request("GET", f"/api/v1/namespaces/{MISSING_NS}")
    assert r.status_code == 404, f"{ids}: namespace {MISSING_NS} was created"
    for case in cases:
        if case.target.endswith("port_forward"):
            with socket.socket() as s:
                s.settimeout(1)
                assert s.connect_ex(("127.0.0.1", int(subs[case.id]["free_port"]))) != 0, f"{case.id}: a forwarder was started"
