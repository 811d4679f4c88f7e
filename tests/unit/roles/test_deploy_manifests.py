"""Render every manifest of the deploy role for several variable sets (through ansible-playbook, the role's
own manifests.yml) and check them against the real Kubernetes schemas (kubernetes-validate, strict) and
against real MLflow: its CLI parser accepts the args, and its Host check accepts the computed allow-list."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import yaml
from asgardlab.schemas import kubernetes_validate  # installed apart from .venv's site-packages

from helpers.ansible_runner import run_playbook

K8S_VERSION = "1.37.0"
SECRET_URI = "postgresql://mlflow:S3cr3t-pw@pg.db.svc:5432/mlflow"

VARIANTS: dict[str, dict] = {
    "defaults": {},
    "gunicorn": {"deploy_server": "gunicorn", "deploy_workers": 2},
    "uvicorn": {"deploy_server": "uvicorn", "deploy_workers": 1},
    "static_prefix": {"deploy_static_prefix": "/mlflow"},
    "postgres_existing_secret": {
        "deploy_backend_store_secret": {"name": "pg-creds", "key": "dsn"},
        "deploy_backend_store_uri": "",
        "deploy_pvc_enabled": False,
        "deploy_artifacts_destination": "s3://bucket/mlflow",
        "deploy_env_from_secrets": ["s3-creds"],
        "deploy_replicas": 2,
    },
    "inline_credentials": {"deploy_backend_store_uri": SECRET_URI, "deploy_namespace": "ml-prod"},
    "ingress_pdb_netpol": {
        "deploy_ingress_enabled": True,
        "deploy_ingress_hosts": ["mlflow.example.com"],
        "deploy_ingress_class_name": "nginx",
        "deploy_ingress_tls_secret": "mlflow-tls",
        "deploy_ingress_annotations": {"nginx.ingress.kubernetes.io/proxy-body-size": "0"},
        "deploy_pdb_enabled": True,
        "deploy_network_policy_enabled": True,
        "deploy_network_policy_from": [{"namespaceSelector": {"matchLabels": {"team": "ml"}}}],
        "deploy_allowed_hosts_extra": ["mlflow.internal:8080"],
        "deploy_image_pull_secrets": ["ghcr"],
        "deploy_tolerations": [{"key": "ml", "operator": "Exists", "effect": "NoSchedule"}],
        "deploy_node_selector": {"pool": "ml"},
        "deploy_enable_job_execution": True,
    },
    "mlflow2_prefix": {"deploy_image": "ghcr.io/mlflow/mlflow:v2.22.5", "deploy_static_prefix": "/mlflow"},
    "mlflow35_latest_prefix": {
        "deploy_image": "ghcr.io/mlflow/mlflow:latest",
        "deploy_mlflow_version": "3.5.0",
        "deploy_static_prefix": "/mlflow",
    },
    "mlflow_defaults_hosts": {"deploy_allowed_hosts_mode": "mlflow_defaults", "deploy_service_port": 80},
    # every boolean and integer as `-e name=value` passes it: a string
    "strings": {
        "deploy_workers": "2", "deploy_replicas": "1", "deploy_pvc_enabled": "false", "deploy_serve_artifacts": "no",
        "deploy_ingress_enabled": "false", "deploy_enable_job_execution": "0", "deploy_service_port": "80",
        "deploy_container_port": "5000", "deploy_read_only_root_filesystem": "false",
        "deploy_backend_store_uri": "sqlite:////tmp/mlflow.db", "deploy_pdb_enabled": "false",
        "deploy_automount_service_account_token": "no", "deploy_run_as_user": "1001", "deploy_server": "gunicorn",
        "deploy_gunicorn_timeout": "600", "deploy_keep_alive": "7",
    },
}
ENABLED = {
    "namespace": lambda v: True,
    "serviceaccount": lambda v: True,
    "pvc": lambda v: v.get("deploy_pvc_enabled", True) not in (False, "false"),
    "deployment": lambda v: True,
    "dbupgrade_job": lambda v: True,
    "service": lambda v: True,
    "ingress": lambda v: v.get("deploy_ingress_enabled", False),
    "pdb": lambda v: v.get("deploy_pdb_enabled", False),
    "networkpolicy": lambda v: v.get("deploy_network_policy_enabled", False),
    # a custom resource: kubernetes-validate has no schema for it; the lab's API server validates it against the
    # Gateway API CRD schema when tests/integration/test_deploy_ingress.py applies it
    "httproute": lambda v: False,
}
IMAGE = "ghcr.io/mlflow/mlflow:v3.17.2"


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[str, dict]:
    """One ansible-playbook run, one play per variant: preflight, then the role's manifests.yml."""
    tmp = tmp_path_factory.mktemp("deploy-render")
    plays = []
    for name, variables in VARIANTS.items():
        plays.append({
            "name": f"render {name}",
            "hosts": "localhost",
            "gather_facts": False,
            "vars": variables,
            "tasks": [
                {"ansible.builtin.include_role": {"name": "asgard.mlflow.deploy", "tasks_from": "preflight.yml"}},
                {"ansible.builtin.include_role": {"name": "asgard.mlflow.deploy", "tasks_from": "manifests.yml"}},
                {"ansible.builtin.copy": {
                    "content": "{{ {'objects': _deploy_manifests, 'secret': _deploy_secret_manifest | default(none)} | to_json }}",
                    "dest": str(tmp / f"{name}.json"),
                    "mode": "0600",
                }},
            ],
        })
    playbook = tmp / "render.yml"
    playbook.write_text(yaml.safe_dump(plays, sort_keys=False))
    # render only: no cluster here, so the preflight's one API read is skipped
    res = run_playbook(playbook, json_output=False, timeout=900, skip_tags="deploy_preflight_cluster")
    assert res.rc == 0, res.output
    return {name: json.loads((tmp / f"{name}.json").read_text()) for name in VARIANTS}


def _container(out: dict, kind: str = "deployment") -> dict:
    containers = out["objects"][kind]["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def _env(container: dict) -> dict:
    return {e["name"]: e for e in container["env"]}


@pytest.mark.parametrize("variant", VARIANTS)
def test_manifests_validate_against_kubernetes_schemas(rendered, variant):
    out = rendered[variant]
    checked = 0
    for key, manifest in out["objects"].items():
        if not ENABLED[key](VARIANTS[variant]):
            continue
        kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)
        checked += 1
    if out["secret"] is not None:
        kubernetes_validate.validate(out["secret"], K8S_VERSION, strict=True)
        checked += 1
    assert checked >= 5


def test_defaults_follow_the_seed(rendered):
    out = rendered["defaults"]
    dep = out["objects"]["deployment"]
    assert dep["metadata"]["name"] == "mlflow-deployment"
    assert dep["metadata"]["namespace"] == "asgard"
    assert dep["spec"]["selector"]["matchLabels"] == {"app": "mlflow"}
    assert dep["spec"]["strategy"] == {"type": "Recreate"}  # SQLite on a ReadWriteOnce PVC
    pod = dep["spec"]["template"]["spec"]
    assert pod["enableServiceLinks"] is False
    assert pod["automountServiceAccountToken"] is False
    c = _container(out)
    assert c["image"] == "ghcr.io/mlflow/mlflow:v3.17.2"
    assert c["command"] == ["mlflow"]
    args = c["args"]
    assert args[:4] == ["server", "--host=0.0.0.0", "--port=5000", "--workers=4"]
    assert "--backend-store-uri=sqlite:////mlflow/mlflow.db" in args
    assert "--default-artifact-root=mlflow-artifacts:/" in args
    assert "--serve-artifacts" in args and "--artifacts-destination=/mlflow/artifacts" in args
    assert not any(a.startswith("--static-prefix") for a in args)
    assert "--uvicorn-opts=--timeout-keep-alive 5" in args
    assert not any(a.startswith(("--gunicorn-opts", "--allowed-hosts", "--cors-allowed-origins")) for a in args)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"] == {"path": "/health", "port": "http", "scheme": "HTTP"}
    # 0.2.0: startup 2 s x 90 (was 5 x 36), readiness 5 s x 6 (was 10 x 3): the same windows, Ready sooner
    assert (c["startupProbe"]["periodSeconds"], c["startupProbe"]["failureThreshold"]) == (2, 90)
    assert (c["readinessProbe"]["periodSeconds"], c["readinessProbe"]["timeoutSeconds"], c["readinessProbe"]["failureThreshold"]) == (5, 5, 6)
    assert (c["livenessProbe"]["periodSeconds"], c["livenessProbe"]["timeoutSeconds"], c["livenessProbe"]["failureThreshold"]) == (20, 10, 6)
    assert c["ports"] == [{"name": "http", "containerPort": 5000, "protocol": "TCP"}]
    env = _env(c)
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"]["value"] == "false"
    assert "MLFLOW_BACKEND_STORE_URI" not in env
    sc = c["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    psc = pod["securityContext"]
    assert psc["runAsNonRoot"] is True and psc["runAsUser"] == 1000 and psc["fsGroup"] == 1000
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    assert {"/tmp", "/home/mlflow", "/mlflow"} <= mounts
    assert env["HOME"]["value"] == "/home/mlflow"
    assert c["resources"] == {"requests": {"cpu": "250m", "memory": "768Mi"}, "limits": {"memory": "2Gi"}}
    svc = out["objects"]["service"]
    assert svc["metadata"]["name"] == "mlflow-service" and svc["spec"]["type"] == "ClusterIP"
    assert svc["spec"]["ports"] == [{"name": "http", "port": 5000, "targetPort": "http", "protocol": "TCP"}]
    assert svc["spec"]["selector"] == {"app": "mlflow"}
    assert out["objects"]["serviceaccount"]["automountServiceAccountToken"] is False
    assert out["secret"] is None


def test_allowed_hosts_contain_service_dns_names(rendered):
    hosts = _env(_container(rendered["defaults"]))["MLFLOW_SERVER_ALLOWED_HOSTS"]["value"].split(",")
    for name in ("mlflow-service", "mlflow-service.asgard", "mlflow-service.asgard.svc", "mlflow-service.asgard.svc.cluster.local"):
        assert f"{name}:5000" in hosts
    assert {"localhost:*", "127.0.0.1:*", "10.*", "192.168.*"} <= set(hosts)


def test_allowed_hosts_accepted_by_mlflows_own_host_check(rendered, monkeypatch):
    """The computed list, read by MLflow 3.17.2's own code, lets legitimate clients in and keeps others out."""
    from mlflow.server import security_utils

    value = _env(_container(rendered["ingress_pdb_netpol"]))["MLFLOW_SERVER_ALLOWED_HOSTS"]["value"]
    monkeypatch.setenv("MLFLOW_SERVER_ALLOWED_HOSTS", value)
    allowed = security_utils.get_allowed_hosts_from_env()
    ok = ["localhost:5000", "127.0.0.1:8080", "[::1]:5000", "localhost", "mlflow-service:5000",
          "mlflow-service.asgard.svc.cluster.local:5000", "mlflow-service.asgard.svc:5000", "10.250.0.7:5000",
          "172.20.1.1:5000", "192.168.1.5:5000", "mlflow.example.com", "mlflow.example.com:443", "mlflow.internal:8080"]
    for host in ok:
        assert security_utils.is_allowed_host_header(allowed, host), host
    for host in ["evil.example.net", "mlflow-service.asgard.svc.cluster.local:80", "100.64.0.1:5000", "mlflow.internal:9090"]:
        assert not security_utils.is_allowed_host_header(allowed, host), host


@pytest.mark.parametrize("variant", VARIANTS)
def test_args_accepted_by_mlflow_cli(rendered, variant, monkeypatch):
    """Real MLflow (3.17.2, the venv's) parses the rendered args and env; combos it refuses raise UsageError."""
    from mlflow import cli

    c = _container(rendered[variant])
    for e in c["env"]:
        if "value" in e:
            monkeypatch.setenv(e["name"], e["value"])
    assert c["args"][0] == "server"
    ctx = cli.server.make_context("server", list(c["args"][1:]))
    p = ctx.params
    cli._validate_server_args(ctx=ctx, gunicorn_opts=p["gunicorn_opts"], workers=p["workers"], waitress_opts=p["waitress_opts"],
                              uvicorn_opts=p["uvicorn_opts"], allowed_hosts=p["allowed_hosts"],
                              cors_allowed_origins=p["cors_allowed_origins"], x_frame_options=p["x_frame_options"],
                              disable_security_middleware=p["disable_security_middleware"])
    assert p["port"] == 5000 and p["host"] == "0.0.0.0"


def test_gunicorn_variant(rendered):
    c = _container(rendered["gunicorn"])
    assert "--workers=2" in c["args"]
    assert "--gunicorn-opts=--timeout 300 --worker-class sync --keep-alive 5" in c["args"]
    assert not any(a.startswith("--uvicorn-opts") for a in c["args"])
    # security settings only through env with gunicorn (MLflow refuses the flags with --gunicorn-opts)
    assert "MLFLOW_SERVER_ALLOWED_HOSTS" in _env(c)


def test_uvicorn_variant(rendered):
    c = _container(rendered["uvicorn"])
    assert "--workers=1" in c["args"]
    assert "--uvicorn-opts=--timeout-keep-alive 5" in c["args"]


def test_static_prefix_probes_follow(rendered):
    c = _container(rendered["static_prefix"])
    assert "--static-prefix=/mlflow" in c["args"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"]["path"] == "/mlflow/health"
    # before 3.7 the health route stays at /health
    c2 = _container(rendered["mlflow35_latest_prefix"])
    assert c2["readinessProbe"]["httpGet"]["path"] == "/health"
    assert "MLFLOW_SERVER_ALLOWED_HOSTS" in _env(c2)


def test_mlflow2_uses_gunicorn_and_no_host_list(rendered):
    c = _container(rendered["mlflow2_prefix"])
    assert any(a.startswith("--gunicorn-opts=") for a in c["args"])
    assert "MLFLOW_SERVER_ALLOWED_HOSTS" not in _env(c)  # MLflow 2.x has no Host check
    assert c["startupProbe"]["httpGet"]["path"] == "/health"
    assert rendered["mlflow2_prefix"]["objects"]["deployment"]["metadata"]["annotations"]["asgard.mlflow/mlflow-version"] == "2.22.5"


def test_mlflow_defaults_mode_leaves_allowed_hosts_unset(rendered):
    out = rendered["mlflow_defaults_hosts"]
    assert "MLFLOW_SERVER_ALLOWED_HOSTS" not in _env(_container(out))
    assert out["objects"]["service"]["spec"]["ports"][0]["port"] == 80


def test_existing_secret_variant(rendered):
    out = rendered["postgres_existing_secret"]
    c = _container(out)
    env = _env(c)
    assert env["MLFLOW_BACKEND_STORE_URI"]["valueFrom"] == {"secretKeyRef": {"name": "pg-creds", "key": "dsn"}}
    assert not any(a.startswith("--backend-store-uri") for a in c["args"])
    assert c["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]
    assert "--artifacts-destination=s3://bucket/mlflow" in c["args"]
    dep = out["objects"]["deployment"]
    assert dep["spec"]["replicas"] == 2
    assert dep["spec"]["strategy"]["type"] == "RollingUpdate"
    assert "data" not in {v["name"] for v in dep["spec"]["template"]["spec"]["volumes"]}
    assert out["secret"] is None
    job = out["objects"]["dbupgrade_job"]
    jc = _container(out, "dbupgrade_job")
    assert jc["args"] == ["db", "upgrade", "$(MLFLOW_BACKEND_STORE_URI)"]
    assert _env(jc)["MLFLOW_BACKEND_STORE_URI"] == env["MLFLOW_BACKEND_STORE_URI"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert "startupProbe" not in jc


def test_inline_credentials_go_to_a_secret_only(rendered):
    out = rendered["inline_credentials"]
    secret = out["secret"]
    assert secret["metadata"] == secret["metadata"] | {"name": "mlflow-backend-store", "namespace": "ml-prod"}
    assert base64.b64decode(secret["data"]["uri"]).decode() == SECRET_URI
    c = _container(out)
    assert _env(c)["MLFLOW_BACKEND_STORE_URI"]["valueFrom"] == {"secretKeyRef": {"name": "mlflow-backend-store", "key": "uri"}}
    for key, manifest in out["objects"].items():
        assert "S3cr3t-pw" not in json.dumps(manifest), key
    hosts = _env(c)["MLFLOW_SERVER_ALLOWED_HOSTS"]["value"]
    assert "mlflow-service.ml-prod.svc.cluster.local:5000" in hosts
    # a Secret change rolls the pods
    ann = out["objects"]["deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert len(ann["asgard.mlflow/backend-store-secret-checksum"]) == 64


def test_ingress_pdb_netpol_variant(rendered):
    out = rendered["ingress_pdb_netpol"]
    ing = out["objects"]["ingress"]
    assert ing["metadata"]["name"] == "mlflow-ingress"
    assert ing["spec"]["ingressClassName"] == "nginx"
    assert ing["spec"]["tls"] == [{"hosts": ["mlflow.example.com"], "secretName": "mlflow-tls"}]
    path = ing["spec"]["rules"][0]["http"]["paths"][0]
    assert path["backend"]["service"] == {"name": "mlflow-service", "port": {"number": 5000}}
    hosts = _env(_container(out))["MLFLOW_SERVER_ALLOWED_HOSTS"]["value"].split(",")
    assert "mlflow.example.com" in hosts and "mlflow.example.com:*" in hosts and "mlflow.internal:8080" in hosts
    pdb = out["objects"]["pdb"]
    assert pdb["spec"]["maxUnavailable"] == 1 and pdb["spec"]["selector"]["matchLabels"] == {"app": "mlflow"}
    np_ = out["objects"]["networkpolicy"]
    assert np_["spec"]["ingress"][0]["ports"] == [{"port": 5000, "protocol": "TCP"}]
    assert np_["spec"]["ingress"][0]["from"] == [{"namespaceSelector": {"matchLabels": {"team": "ml"}}}]
    c = _container(out)
    assert _env(c)["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"]["value"] == "true"
    assert "/dev/shm" in {m["mountPath"] for m in c["volumeMounts"]}
    pod = out["objects"]["deployment"]["spec"]["template"]["spec"]
    assert pod["imagePullSecrets"] == [{"name": "ghcr"}]
    assert pod["nodeSelector"] == {"pool": "ml"}


def test_templates_carry_the_managed_comment():
    templates = Path(__file__).resolve().parents[3] / "roles" / "deploy" / "templates"
    files = sorted(templates.glob("*.yaml.j2"))
    assert len(files) >= 10
    for f in files:
        if f.name == "pod_spec.yaml.j2":  # included fragment
            continue
        assert f.read_text().startswith("{{ ansible_managed | comment }}"), f.name


def test_string_typed_variables_mean_what_they_say(rendered):
    """`-e deploy_pvc_enabled=false` is the string "false", true in Jinja: the role converts every boolean and
    integer once (vars/main.yml) and uses only the converted values."""
    out = rendered["strings"]
    dep = out["objects"]["deployment"]
    c = _container(out)
    pod = dep["spec"]["template"]["spec"]
    assert "data" not in {v["name"] for v in pod["volumes"]}  # deploy_pvc_enabled=false
    assert "--no-serve-artifacts" in c["args"] and "--serve-artifacts" not in c["args"]
    assert "--workers=2" in c["args"] and dep["spec"]["replicas"] == 1
    assert "--gunicorn-opts=--timeout 600 --worker-class sync --keep-alive 7" in c["args"]
    assert _env(c)["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"]["value"] == "false"
    assert "/dev/shm" not in {m["mountPath"] for m in c["volumeMounts"]}
    assert c["securityContext"]["readOnlyRootFilesystem"] is False
    assert pod["automountServiceAccountToken"] is False and pod["securityContext"]["runAsUser"] == 1001
    assert out["objects"]["service"]["spec"]["ports"][0]["port"] == 80
    assert c["ports"][0]["containerPort"] == 5000


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_settings_parser_reads_back_what_deploy_rendered(rendered, variant):
    """Issue 16 "rules once": the Deployment the deploy role renders, read back by the collection's settings parser
    (what verify and patch read), says what the role meant, and the patch role's rules find nothing to change."""
    from ansible_collections.asgard.mlflow.plugins.filter.mlflow_rules import mlflow_allowed_hosts, mlflow_server_facts
    from ansible_collections.asgard.mlflow.plugins.module_utils import _mlflow_rules as R
    from ansible_collections.asgard.mlflow.plugins.module_utils._compliance import compliance
    from ansible_collections.asgard.mlflow.plugins.module_utils._settings import server_settings

    v = VARIANTS[variant]
    dep = rendered[variant]["objects"]["deployment"]
    prefix = v.get("deploy_static_prefix", "")
    facts = mlflow_server_facts(v.get("deploy_image", IMAGE), v.get("deploy_mlflow_version", ""), prefix,
                                v.get("deploy_server", ""))
    s = server_settings(dep, mlflow_version=v.get("deploy_mlflow_version") or None)
    assert (s["server"], s["mlflow_version"], s["health_path"]) == (facts["server"], facts["mlflow_version"],
                                                                    facts["health_path"])
    assert s["workers"] == int(v.get("deploy_workers", 4)) and s["port"] == 5000 and s["host"] == "0.0.0.0"
    assert s["static_prefix"] == (prefix or None)
    c = _container(rendered[variant])
    assert {c[p]["httpGet"]["path"] for p in ("startupProbe", "readinessProbe", "livenessProbe")} == {s["health_path"]}
    hosts = None
    if not facts["host_check"]:
        assert s["allowed_hosts"] is None
    elif v.get("deploy_allowed_hosts_mode") == "mlflow_defaults":
        assert s["allowed_hosts"] == "default"
    else:
        ns = v.get("deploy_namespace", "asgard")
        hosts = mlflow_allowed_hosts("mlflow-service", ns, int(v.get("deploy_service_port", 5000)),
                                     ingress_hosts=v.get("deploy_ingress_hosts") if v.get("deploy_ingress_enabled") else [],
                                     extra=v.get("deploy_allowed_hosts_extra", []))
        assert s["allowed_hosts"] == hosts
    keep_alive = int(v.get("deploy_keep_alive", 5))
    if s["server"] == "gunicorn":
        g = s["gunicorn"]
        want = (int(v.get("deploy_gunicorn_timeout", 300)), keep_alive, "sync")
        assert (g["timeout"], g["keep_alive"], g["worker_class"]) == want
    else:
        assert s["uvicorn"]["timeout_keep_alive"] == keep_alive
    assert s["contradictions"] == []
    targets = {"workers": s["workers"], "static_prefix": prefix, "port": 5000, "allowed_hosts": hosts,
               "gunicorn_timeout": int(v.get("deploy_gunicorn_timeout", 300)), "gunicorn_keep_alive": keep_alive,
               "uvicorn_timeout_keep_alive": keep_alive, "mlflow_version": v.get("deploy_mlflow_version") or None,
               **{k: dict(t) for k, t in R.PROBE_TIMINGS.items()}}
    result = compliance(dep, targets)
    assert result["compliant"], result["changes"]


def test_role_defaults_are_the_python_rules():
    """The roles' documented defaults are MLflow's rules as the Python side writes them (kept in step here)."""
    from ansible_collections.asgard.mlflow.plugins.module_utils import _mlflow_rules as R

    roles = Path(__file__).resolve().parents[3] / "roles"
    deploy = yaml.safe_load((roles / "deploy" / "defaults" / "main.yml").read_text())
    patch = yaml.safe_load((roles / "patch" / "defaults" / "main.yml").read_text())
    for d, p in (("deploy", deploy), ("patch", patch)):
        assert p[f"{d}_allowed_hosts_pod_ranges"] == list(R.POD_IP_RANGES)
        assert p[f"{d}_workers"] == R.DEFAULT_WORKERS
        for probe in ("startup_probe", "readiness_probe", "liveness_probe"):
            assert p[f"{d}_{probe}"] == R.PROBE_TIMINGS[probe]
    assert deploy["deploy_container_port"] == patch["patch_port"] == R.DEFAULT_PORT
