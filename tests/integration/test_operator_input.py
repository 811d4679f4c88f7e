"""Issue 14 item 1: what an operator types is what happens.

`ansible-playbook playbooks/verify.yml -e verify_remediate=false` patched the broken Deployment: a value given as
`-e name=value` is a string, and "false" is a true string. The class is every boolean and integer variable of every
role, so these tests start from the roles' `meta/argument_specs.yml`:

- every boolean is classified in BOOLEANS (a new one that is not fails ``test_every_boolean_is_classified``): a
  *gate* switches a change on or off (proved by the lab runs below: when the operator says no in any spelling,
  nothing changes); a *value* is written into an object (proved: the object says what was typed); *other* changes
  no state (connection, output);
- the lab runs pass EVERY boolean, integer and float variable of the role on the command line as a string (`-e
  name=value`, the form an operator types), the gates in the spellings `false`, `no`, `0` (and `off`), rotated so
  that each gate gets each spelling across the runs, and `true`/`yes` where a change must happen;
- "nothing changed": no write (POST/PUT/PATCH/DELETE) in the lab's requests.log for the namespace, the Deployment's
  generation unchanged, the report and the play's stats claim nothing.
"""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers.ansible_runner import REPO, run_playbook  # noqa: E402
from helpers.kubectl import PortForward  # noqa: E402
from helpers.lab_objects import free_port, get_deployment  # noqa: E402
from fault_matrix_lab import PVC, create, deployment, server_args, service, serving_pod, store_via_api  # noqa: E402

pytestmark = pytest.mark.lab

WRITES = {"POST", "PUT", "PATCH", "DELETE"}
NO = ["false", "no", "0"]  # how an operator says no on the command line (YAML 1.1 booleans; Ansible's | bool)
YES = ["true", "yes", "1"]

# Every boolean of every role: (class, what it switches). class: gate | value | other.
BOOLEANS = {
    # deploy
    "deploy_validate_certs": ("other", "TLS verification of the API server"),
    "deploy_create_namespace": ("gate", "creates the namespace"),
    "deploy_service_account_create": ("gate", "creates the ServiceAccount"),
    "deploy_automount_service_account_token": ("value", "pod spec automountServiceAccountToken"),
    "deploy_enable_job_execution": ("value", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION"),
    "deploy_db_upgrade": ("gate", "runs the `mlflow db upgrade` Job on a version change"),
    "deploy_serve_artifacts": ("value", "--serve-artifacts / --no-serve-artifacts"),
    "deploy_pvc_enabled": ("gate", "mounts (and creates) a PersistentVolumeClaim"),
    "deploy_pvc_create": ("gate", "creates the PersistentVolumeClaim"),
    "deploy_ingress_enabled": ("gate", "creates the Ingress"),
    "deploy_route_enabled": ("gate", "creates the HTTPRoute"),
    "deploy_auth_enabled": ("gate", "creates the basic-auth Secret, runs --app-name=basic-auth"),
    "deploy_pdb_enabled": ("gate", "creates the PodDisruptionBudget"),
    "deploy_network_policy_enabled": ("gate", "creates the NetworkPolicy"),
    "deploy_read_only_root_filesystem": ("value", "securityContext.readOnlyRootFilesystem"),
    # patch
    "patch_validate_certs": ("other", "TLS verification of the API server"),
    "patch_read_configmaps": ("other", "reads the ConfigMaps the env comes from"),
    "patch_allowed_hosts_enabled": ("gate", "edits the allowed hosts"),
    "patch_probes": ("gate", "edits the probes"),
    "patch_allow_helm_managed": ("gate", "patches a Helm-managed Deployment"),
    "patch_wait": ("other", "waits for the rollout (reads)"),
    "patch_rollback": ("gate", "rolls a failed rollout back"),
    "patch_enable_service_links": ("value", "pod spec enableServiceLinks"),
    "patch_shell_exec": ("gate", "writes exec in front of mlflow server in a sh -c wrapper"),
    # verify
    "verify_validate_certs": ("other", "TLS verification of the API server"),
    "verify_probe_api_check": ("other", "one more read through the tunnel"),
    "verify_ingress_validate_certs": ("other", "TLS verification of the Ingress endpoint"),
    "verify_transaction": ("gate", "writes a synthetic run to the tracking server"),
    "verify_transaction_in_check_mode": ("gate", "writes the synthetic run in check mode"),
    "verify_port_forward": ("gate", "starts a forward process on the controller"),
    "verify_port_forward_cleanup": ("gate", "stops a kubectl port-forward holding the port"),
    "verify_remediate": ("gate", "patches / restarts / migrates"),
    "verify_set_stats": ("other", "publishes the summary for AWX"),
    "verify_fail_when_unhealthy": ("gate", "fails the run when MLflow is unhealthy"),
    "verify_no_log": ("other", "hides raw objects in the output"),
}


def specs() -> dict[str, dict]:
    """role -> {variable: spec} from the roles' argument specs."""
    out = {}
    for path in sorted((REPO / "roles").glob("*/meta/argument_specs.yml")):
        out[path.parts[-3]] = yaml.safe_load(path.read_text())["argument_specs"]["main"]["options"]
    return out


def is_bool(spec: dict) -> bool:
    return spec.get("type") == "bool" or (spec.get("type") == "raw" and isinstance(spec.get("default"), bool))


def is_number(spec: dict) -> bool:
    d = spec.get("default")
    return spec.get("type") in ("int", "float") or (spec.get("type") == "raw" and isinstance(d, int)
                                                      and not isinstance(d, bool))


def as_typed(role: str, values: dict[str, str | int | bool]) -> list[str]:
    """`-e name=value` for every boolean, integer and float variable of ``role`` (``values`` first, then the
    default spelled as a string), each as an operator types it."""
    argv = []
    for name, spec in specs()[role].items():
        if name in values:
            v = values[name]
        elif is_bool(spec) and spec.get("default") is not None:
            v = "true" if spec["default"] else "false"
        elif is_number(spec) and spec.get("default") is not None:
            v = spec["default"]
        else:
            continue
        argv += ["-e", f"{name}={str(v).lower() if isinstance(v, bool) else v}"]
    return argv


def writes_in(lab, mark: int, *namespaces: str) -> list[str]:
    return [f"{r['method']} {r['path']} -> {r['status']}" for r in lab.requests_since(mark)
            if r["method"] in WRITES and any(f"/namespaces/{n}/" in r["path"] or r["path"].endswith(f"/namespaces/{n}")
                                             for n in namespaces)]


def rotate(gates: list[str], run: int, forms=NO) -> dict[str, str]:
    """Gate j gets spelling (run + j) % len(forms): across len(forms) runs every gate gets every spelling."""
    return {g: forms[(run + j) % len(forms)] for j, g in enumerate(gates)}


# ------------------------------------------------------------------------------------------- the table itself
def test_every_boolean_is_classified():
    """Every boolean of every role's argument spec is in BOOLEANS (add a new one there, with its class), every gate
    is exercised by one of the lab runs of this file, and no classified name has disappeared."""
    found = {name for opts in specs().values() for name, spec in opts.items() if is_bool(spec)}
    assert found - set(BOOLEANS) == set(), f"classify these booleans in BOOLEANS: {sorted(found - set(BOOLEANS))}"
    assert set(BOOLEANS) - found == set(), f"gone from the argument specs: {sorted(set(BOOLEANS) - found)}"
    gates = {n for n, (cls, _what) in BOOLEANS.items() if cls == "gate"}
    source = Path(__file__).read_text()
    untested = sorted(g for g in gates if source.count(f'"{g}"') < 2)
    assert untested == [], f"gates without a lab run: {untested}"


# --------------------------------------------------------------------------------------------------- verify
VERIFY_GATES = ["verify_remediate", "verify_port_forward", "verify_transaction", "verify_fail_when_unhealthy"]


@pytest.fixture(scope="module")
def broken(lab):
    """A running MLflow with `--static-prefix=/static` (GET / answers 404: ROOT_NOT_FOUND, healed by a patch) and a
    store with one experiment, in its own namespace."""
    ns = f"op-{uuid.uuid4().hex[:8]}"
    r = lab.request("POST", "/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    assert r.status_code == 201, r.text
    # artifacts proxied to the PVC, so that the deep check (verify_transaction) can pass once healed
    args = [a if not a.startswith("--default-artifact-root") else "--artifacts-destination=/mlflow/artifacts"
            for a in server_args(extra=["--static-prefix=/static"])]
    create(lab, ns, PVC, deployment(args=args, ns=ns), service())
    _pod, base = serving_pod(lab, ns, prefix="/static")
    yield {"ns": ns, "base": base}
    lab.request("DELETE", f"/api/v1/namespaces/{ns}")


def verify_run(lab, tmp_path, ns: str, name: str, values: dict, check=False, env=None):
    rep = tmp_path / f"{name}.json"
    values = {"verify_min_workers": 1, "verify_rollout_timeout": 240, "verify_probe_deadline": 45, **values}
    argv = ["-e", f"verify_namespace={ns}", "-e", f"verify_report_path={rep}"] + as_typed("verify", values)
    res = run_playbook("playbooks/verify.yml", env=lab.env(**(env or {})), check=check, timeout=900, argv=argv)
    return res, (json.loads(rep.read_text()) if rep.exists() else {})


def test_verify_said_no_changes_nothing(lab, broken, tmp_path):
    """verify.yml on a broken MLflow with every gate said no (false / no / 0 / off, rotated over the runs), every
    other boolean and number typed as a string: no write in the namespace, generation unchanged, no forward, no
    synthetic run in the store, rc 0 although MLflow is unhealthy (verify_fail_when_unhealthy said no), a report
    that claims nothing. Then check mode with verify_transaction=yes and verify_transaction_in_check_mode=no writes
    nothing either; a kubectl port-forward on the port survives verify_port_forward_cleanup=off; and last
    verify_remediate=yes (with the numbers still strings) does heal it, so the broken Deployment really was
    remediable all along."""
    ns, base = broken["ns"], broken["base"]
    gen = get_deployment(lab, ns)["metadata"]["generation"]
    store = store_via_api(base)
    xdg = {"XDG_STATE_HOME": str(tmp_path / "state")}
    for run in range(3):
        port = free_port()
        said = rotate(VERIFY_GATES, run)
        mark = lab.log_mark()
        res, rep = verify_run(lab, tmp_path, ns, f"no-{run}", {**said, "verify_port_forward_local_port": port,
                                                                "verify_port_forward_cleanup": NO[run]}, env=xdg)
        where = f"run {run} ({said})"
        assert res.rc == 0, f"{where}: verify_fail_when_unhealthy={said['verify_fail_when_unhealthy']} failed the run\n{res.output}"
        assert writes_in(lab, mark, ns) == [], f"{where}: wrote to the cluster"
        assert get_deployment(lab, ns)["metadata"]["generation"] == gen, where
        assert res.changed == 0, f"{where}: changed {res.changed_tasks()}"
        assert rep["meta"]["remediate"] is False and rep["remediated"] == [], (where, rep.get("remediated"))
        assert rep["status"] != "healthy" and "ROOT_NOT_FOUND" in {f["code"] for f in rep["findings_before"]}, where
        steps = {s["step"]: s for s in rep["steps"]}
        assert steps["port_forward"]["status"] == "skipped", (where, steps["port_forward"])
        assert kubectl_free(port), f"{where}: something listens on {port}"
        assert store_via_api(base) == store, f"{where}: the tracking store changed (synthetic transaction?)"

    mark = lab.log_mark()
    res, rep = verify_run(lab, tmp_path, ns, "check", {"verify_remediate": "yes", "verify_port_forward": "no",
                                                      "verify_transaction": "yes",
                                                      "verify_transaction_in_check_mode": "no",
                                                      "verify_fail_when_unhealthy": "off"}, check=True, env=xdg)
    assert res.rc == 0, res.output
    assert writes_in(lab, mark, ns) == [] and get_deployment(lab, ns)["metadata"]["generation"] == gen
    assert store_via_api(base) == store, "check mode ran the synthetic transaction (verify_transaction_in_check_mode=no)"

    port = free_port()
    k = PortForward(lab.env(), "-n", ns, "svc/mlflow-service", f"{port}:5000")
    try:
        mark = lab.log_mark()
        res, rep = verify_run(lab, tmp_path, ns, "cleanup-off", {
            "verify_remediate": "off", "verify_port_forward": "yes", "verify_port_forward_cleanup": "off",
            "verify_port_forward_local_port": port, "verify_fail_when_unhealthy": "no"}, env=xdg)
        assert k.proc.poll() is None, "verify_port_forward_cleanup=off stopped the kubectl port-forward"
        assert writes_in(lab, mark, ns) == [] and get_deployment(lab, ns)["metadata"]["generation"] == gen
        assert "PORT_FORWARD_FAILED" in {f["code"] for f in rep["remaining"]}, rep["remaining"]
    finally:
        k.stop()

    res, rep = verify_run(lab, tmp_path, ns, "yes", {"verify_remediate": "yes", "verify_port_forward": "0",
                                                    "verify_transaction": "yes", "verify_fail_when_unhealthy": "1",
                                                    "verify_remediation_rounds": "1"}, env=xdg)
    assert res.rc == 0, res.output
    assert get_deployment(lab, ns)["metadata"]["generation"] > gen, "verify_remediate=yes did not remediate"
    assert rep["status"] == "healthy" and [a["action"] for a in rep["remediated"]] == ["patch"], rep["remediated"]
    assert {s["step"]: s for s in rep["steps"]}["transaction"]["status"] == "ok", "verify_transaction=yes did not run"


def kubectl_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


# ---------------------------------------------------------------------------------------------------- patch
def patch_deployment(name: str, labels: dict | None = None) -> dict:
    """A Deployment with 0 replicas (no pod: the patch role reads and patches the spec; a rollout of 0 pods is done
    at once), MLflow's command line, no allowed hosts and no probes."""
    dep = deployment(args=server_args(extra=["--static-prefix=/static"]))
    dep["metadata"]["name"] = name
    dep["metadata"]["labels"] = {**dep["metadata"]["labels"], **(labels or {})}
    dep["spec"]["replicas"] = 0
    c = dep["spec"]["template"]["spec"]["containers"][0]
    c.pop("readinessProbe", None)
    dep["spec"]["template"]["spec"]["volumes"] = [{"name": "data", "emptyDir": {}}]
    return dep


def patch_run(lab, ns: str, name: str, values: dict, check=False):
    argv = ["-e", f"patch_namespace={ns}", "-e", f"patch_name={name}"] + as_typed("patch", values)
    return run_playbook("playbooks/patch.yml", env=lab.env(), check=check, timeout=600, argv=argv)


def test_patch_said_no_changes_nothing(lab, lab_namespace):
    """patch.yml with every number typed as a string, on a `sh -c "mlflow server ..."` Deployment: a first run
    (allowed hosts and probes said yes, patch_shell_exec typed as false) makes the Deployment compliant and the
    script keeps its form; with the allowed hosts and probes taken out again by hand, runs that say no to both and
    to patch_shell_exec (false / no / 0, rotated: each gate gets each spelling) change nothing and the script keeps
    its form; typed as yes, `exec` goes in front of `mlflow server` (only that args element). A Helm-managed
    Deployment is refused for every spelling of patch_allow_helm_managed=no and untouched. (One Deployment for the
    three gates: the first, compliance-making run is the same for all of them.)"""
    ns = lab_namespace
    dep = patch_deployment("wrapped")
    c = dep["spec"]["template"]["spec"]["containers"][0]
    c["command"], c["args"] = ["/bin/sh", "-c"], ["mlflow " + " ".join(c["args"])]
    create(lab, ns, dep,
           patch_deployment("helm", labels={"app.kubernetes.io/managed-by": "Helm", "helm.sh/chart": "mlflow-1.0.0"}))
    numbers = {"patch_workers": "2", "patch_gunicorn_timeout": "120"}
    res = patch_run(lab, ns, "wrapped", {"patch_allowed_hosts_enabled": "yes", "patch_probes": "true",
                                         "patch_shell_exec": "false", **numbers})
    assert res.rc == 0, res.output
    c = get_deployment(lab, ns, "wrapped")["spec"]["template"]["spec"]["containers"][0]
    script = c["args"][0]
    assert script.startswith("mlflow server"), script
    assert "static-prefix" not in script and "--workers 2" in script.replace("=", " "), script
    assert c.get("readinessProbe") and any(e["name"] == "MLFLOW_SERVER_ALLOWED_HOSTS" for e in c["env"]), c
    # the operator takes the allowed hosts and the probes out by hand; the patch role must leave them out when told so
    ops = [{"op": "remove", "path": "/spec/template/spec/containers/0/" + k}
           for k in ("readinessProbe", "livenessProbe", "startupProbe") if c.get(k)]
    env = [e for e in c["env"] if e["name"] != "MLFLOW_SERVER_ALLOWED_HOSTS"]
    ops.append({"op": "replace", "path": "/spec/template/spec/containers/0/env", "value": env})
    r = lab.request("PATCH", f"/apis/apps/v1/namespaces/{ns}/deployments/wrapped", data=json.dumps(ops),
                    headers={"Content-Type": "application/json-patch+json"})
    assert r.status_code == 200, r.text
    gen = get_deployment(lab, ns, "wrapped")["metadata"]["generation"]
    for run in range(3):
        said = rotate(["patch_allowed_hosts_enabled", "patch_probes", "patch_shell_exec"], run)
        mark = lab.log_mark()
        res = patch_run(lab, ns, "wrapped", {**said, **numbers})
        assert res.rc == 0, f"run {run} ({said})\n{res.output}"
        assert writes_in(lab, mark, ns) == [], f"run {run} ({said}): wrote to the cluster"
        assert get_deployment(lab, ns, "wrapped")["metadata"]["generation"] == gen
        assert res.changed == 0, res.changed_tasks()
    assert get_deployment(lab, ns, "wrapped")["spec"]["template"]["spec"]["containers"][0]["args"] == [script]
    res = patch_run(lab, ns, "wrapped", {"patch_allowed_hosts_enabled": "yes", "patch_probes": "true",
                                         "patch_shell_exec": "yes", **numbers})
    assert res.rc == 0, res.output
    after = get_deployment(lab, ns, "wrapped")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert after == ["exec " + script], after

    helm_gen = get_deployment(lab, ns, "helm")["metadata"]["generation"]
    for form in NO:
        mark = lab.log_mark()
        res = patch_run(lab, ns, "helm", {"patch_allow_helm_managed": form})
        assert res.rc != 0, f"patch_allow_helm_managed={form}: a Helm-managed Deployment was patched\n{res.output}"
        assert "helm" in (res.stdout + res.stderr).lower()
        assert writes_in(lab, mark, ns) == [], f"patch_allow_helm_managed={form}: wrote to the cluster"
        assert get_deployment(lab, ns, "helm")["metadata"]["generation"] == helm_gen


def test_patch_rollback_said_no_keeps_the_patch(lab, lab_namespace, tmp_path):
    """A patch whose new pods never become Ready (the lab delays the start of every pod of the namespace, set before
    the Deployment exists: the patch role reads and patches the spec, no MLflow needs to run): with
    patch_rollback=no the failed rollout is not rolled back (one write: the patch), with patch_rollback=yes it is
    (a second write restores the template)."""
    ns = lab_namespace
    dep = patch_deployment("mlflow-deployment")
    dep["spec"]["replicas"] = 1
    dep["spec"]["progressDeadlineSeconds"] = 600
    r = lab.request("POST", f"/lab/pods/{ns}/*/fault", json={"delayStartSeconds": 3600})
    assert r.status_code in (200, 201), r.text
    try:
        create(lab, ns, dep)
        outcomes = {}
        for form in ("no", "yes"):
            before = get_deployment(lab, ns)["spec"]["template"]
            mark = lab.log_mark()
            res = patch_run(lab, ns, "mlflow-deployment", {"patch_rollback": form, "patch_wait_timeout": "10",
                                                           "patch_wait_sleep": "2", "patch_workers": str(1 + len(outcomes))})
            assert res.rc != 0, f"patch_rollback={form}: the rollout cannot succeed\n{res.output}"
            patches = [w for w in writes_in(lab, mark, ns) if w.startswith("PATCH ") and "/deployments/" in w]
            after = get_deployment(lab, ns)["spec"]["template"]
            outcomes[form] = (len(patches), after == before)
        assert outcomes["no"] == (1, False), f"patch_rollback=no rolled back: {outcomes}"
        assert outcomes["yes"] == (2, True), f"patch_rollback=yes did not roll back: {outcomes}"
    finally:
        lab.request("DELETE", f"/lab/pods/{ns}/*/fault")


# --------------------------------------------------------------------------------------------------- deploy
DEPLOY_GATES = ["deploy_service_account_create", "deploy_pvc_enabled", "deploy_pvc_create", "deploy_ingress_enabled",
                "deploy_pdb_enabled", "deploy_network_policy_enabled", "deploy_db_upgrade", "deploy_create_namespace",
                "deploy_route_enabled", "deploy_auth_enabled"]


def deploy_run(lab, ns: str, values: dict, image: str | None = None, check=False):
    argv = ["-e", f"deploy_namespace={ns}", "-e", "deploy_backend_store_uri=sqlite:////tmp/mlflow.db"]
    argv += ["-e", f"deploy_image={image}"] if image else []
    argv += as_typed("deploy", values)
    return run_playbook("playbooks/deploy.yml", env=lab.env(), check=check, timeout=600, argv=argv)


def test_deploy_said_no_creates_nothing_it_was_told_not_to(lab, lab_namespace, tmp_path):
    """deploy.yml into an existing namespace with every optional object said no (false / no / 0, rotated) and the
    value booleans set against their defaults, every number a string (`deploy_replicas=0`: no pod needed): only the
    Service and the Deployment are written, and the Deployment says what was typed. Into a namespace that does not
    exist with deploy_create_namespace said no: a clear failure and no namespace."""
    ns = lab_namespace
    values = {"deploy_replicas": "0", "deploy_automount_service_account_token": "yes",
              "deploy_read_only_root_filesystem": "no", "deploy_enable_job_execution": "1",
              "deploy_serve_artifacts": "0",
              # what the HTTPRoute and basic auth would need if their gates were taken for true
              "deploy_route_hostnames": "mlflow.example.test", "deploy_route_gateway_name": "gw",
              "deploy_auth_admin_password": "Operator-Typed-Pw1"}
    # the image changes at every run (2.22.5, then 3.17.2, then the same version under another name): each would
    # run the `mlflow db upgrade` Job if deploy_db_upgrade were taken for true
    images = ["ghcr.io/mlflow/mlflow:v2.22.5", "ghcr.io/mlflow/mlflow:v3.17.2", "ghcr.io/mlflow/mlflow:3.17.2"]
    for run in range(3):
        said = rotate(DEPLOY_GATES, run)
        mark = lab.log_mark()
        res = deploy_run(lab, ns, {**values, **said}, image=images[run])
        assert res.rc == 0, f"run {run} ({said})\n{res.output}"
        written = writes_in(lab, mark, ns)
        kinds = {w.split()[1].split(f"/namespaces/{ns}/", 1)[1].split("/")[0] for w in written}
        assert kinds <= {"deployments", "services"}, f"run {run} ({said}): {written}"
        spec = get_deployment(lab, ns)["spec"]
        pod = spec["template"]["spec"]
        c = pod["containers"][0]
        assert spec["replicas"] == 0 and pod.get("automountServiceAccountToken") is True, pod
        assert c["securityContext"]["readOnlyRootFilesystem"] is False, c["securityContext"]
        env = {e["name"]: e.get("value") for e in c.get("env", [])}
        assert env.get("MLFLOW_SERVER_ENABLE_JOB_EXECUTION") == "true", env
        assert "--serve-artifacts" not in c.get("command", []) + c.get("args", []), c
        assert "--app-name=basic-auth" not in c.get("args", []) and "MLFLOW_AUTH_ADMIN_PASSWORD" not in env, c
        assert not any(v.get("persistentVolumeClaim") for v in pod.get("volumes", [])), pod.get("volumes")
        for kind, path in (("serviceaccounts", "/api/v1"), ("persistentvolumeclaims", "/api/v1"),
                           ("ingresses", "/apis/networking.k8s.io/v1"), ("networkpolicies", "/apis/networking.k8s.io/v1"),
                           ("poddisruptionbudgets", "/apis/policy/v1"), ("jobs", "/apis/batch/v1"),
                           ("httproutes", "/apis/gateway.networking.k8s.io/v1"), ("secrets", "/api/v1")):
            items = lab.request("GET", f"{path}/namespaces/{ns}/{kind}").json().get("items", [])
            assert [i["metadata"]["name"] for i in items if kind != "serviceaccounts" or i["metadata"]["name"] != "default"] == [], (run, kind)

    missing = f"op-missing-{uuid.uuid4().hex[:8]}"
    for form in NO:
        mark = lab.log_mark()
        res = deploy_run(lab, missing, {"deploy_create_namespace": form, "deploy_replicas": "0"})
        assert res.rc != 0, f"deploy_create_namespace={form}\n{res.output}"
        assert "deploy_create_namespace" in res.stdout + res.stderr
        assert writes_in(lab, mark, missing) == [] and lab.request("GET", f"/api/v1/namespaces/{missing}").status_code == 404
