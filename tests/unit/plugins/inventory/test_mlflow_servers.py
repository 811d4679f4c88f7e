"""The asgard.mlflow.mlflow_servers inventory plugin through the real ansible-inventory CLI, with the Kubernetes API
faked at the module_utils boundary (``_kube.api_from_auth``; inventory_driver.py). tests/integration/test_fleet.py
runs the same path against two lab clusters."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[3]
sys.path.insert(0, str(HERE.parent / "module_utils"))
from fleet_fixtures import deployment, mlflow_container, service, sidecar  # noqa: E402
sys.path.insert(0, str(HERE.parents[2]))
from helpers.inventory_output import listing, plain  # noqa: E402

TOKEN = "tok-B-9f2c1e-never-in-the-output"
AWX_TOKEN = "tok-AWX-77aa-never-in-the-output"

CLUSTER_A = {
    "deployments": [
        deployment("ml"),
        deployment("team-x", name="tracking", labels={"run": "tracking", "team": "x"},
                   containers=[mlflow_container(name="server", args=[
                       "mlflow server --port 5000 --gunicorn-opts='--timeout 300' --static-prefix=/mlflow"])]),
        deployment("ml", name="mlflow-log-shipper", labels={"app": "mlflow", "c": "logs"}, containers=[sidecar()]),
    ],
    "services": [service("ml"), service("team-x", name="tracking-http", selector={"run": "tracking"},
                                        target_port="http")],
}
CLUSTER_B = {"deployments": [deployment("asgard", containers=[mlflow_container(
    args=["mlflow server --port 5000 --static-prefix=/static --gunicorn-opts='--timeout 120 --workers 2'"])])],
    "services": [service("asgard")]}


def run(tmp_path, config: dict, clusters: dict, *args, env=None, name="fleet.mlflow_servers.yml"):
    src = tmp_path / name
    src.write_text(json.dumps(config))
    calls = tmp_path / "calls.jsonl"
    scenario = tmp_path / "scenario.json"
    scenario.write_text(json.dumps({"clusters": clusters, "calls": str(calls)}))
    run_env = {k: v for k, v in os.environ.items() if not k.startswith(("K8S_AUTH_", "KUBECONFIG"))}
    run_env.update(ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1", CLUSTER_B_TOKEN=TOKEN,
                   ANSIBLE_INVENTORY_UNPARSED_FAILED="1", ANSIBLE_DEPRECATION_WARNINGS="0",
                   PYTHONPATH=str(REPO / ".collections"))
    run_env.update(env or {})
    proc = subprocess.run([sys.executable, str(HERE / "inventory_driver.py"), str(scenario), "-i", str(src), *args],
                          cwd=REPO, env=run_env, capture_output=True, text=True, timeout=180, check=False)
    made = [json.loads(ln) for ln in calls.read_text().splitlines()] if calls.exists() else []
    return proc, made


def two_clusters(**extra):
    cfg = {"plugin": "asgard.mlflow.mlflow_servers", "connections": [
        {"name": "lab-a", "kubeconfig": "/etc/fleet/kubeconfig", "context": "a"},
        {"name": "lab-b", "host": "https://b.example:6443",
         "api_key": "{{ lookup('ansible.builtin.env', 'CLUSTER_B_TOKEN') }}", "ca_cert": "/etc/fleet/b-ca.crt"}]}
    cfg.update(extra)
    return cfg


CLUSTERS = {"a": CLUSTER_A, "https://b.example:6443": CLUSTER_B}


def test_hosts_groups_and_role_variables(tmp_path):
    proc, made = run(tmp_path, two_clusters(), CLUSTERS, "--list", "-vvv")
    inv = listing(proc)
    hv = plain(inv["_meta"]["hostvars"])
    assert sorted(hv) == ["lab-a/ml/mlflow-deployment", "lab-a/team-x/tracking", "lab-b/asgard/mlflow-deployment"]
    assert sorted(plain(inv)["mlflow_servers"]["hosts"]) == sorted(hv)
    assert sorted(inv["mlflow_cluster_lab_a"]["hosts"]) == ["lab-a/ml/mlflow-deployment", "lab-a/team-x/tracking"]
    assert inv["mlflow_server_gunicorn"]["hosts"] == ["lab-a/team-x/tracking", "lab-b/asgard/mlflow-deployment"]
    assert inv["mlflow_version_3_17_2"]["hosts"] and inv["mlflow_namespace_team_x"]["hosts"] == ["lab-a/team-x/tracking"]
    t = hv["lab-a/team-x/tracking"]
    assert {k: t[k] for k in ("verify_namespace", "verify_deployment", "verify_service", "verify_service_port",
                              "verify_container", "verify_kubeconfig", "verify_context")} == {
        "verify_namespace": "team-x", "verify_deployment": "tracking", "verify_service": "tracking-http",
        "verify_service_port": 5000, "verify_container": "server", "verify_kubeconfig": "/etc/fleet/kubeconfig",
        "verify_context": "a"}
    assert (t["mlflow_static_prefix"], t["mlflow_server_kind"], t["mlflow_labels"]) == (
        "/mlflow", "gunicorn", {"run": "tracking", "team": "x"})
    assert "verify_expected_static_prefix" not in t, "verify decides whether a prefix is wanted"
    assert (t["ansible_connection"], t["ansible_python_interpreter"]) == (
        "local", "{{ lookup('ansible.builtin.env', 'ANSIBLE_PYTHON_INTERPRETER') or ansible_playbook_python }}")
    b = hv["lab-b/asgard/mlflow-deployment"]
    assert b["verify_api_key"] == "{{ lookup('ansible.builtin.env', 'CLUSTER_B_TOKEN') }}"
    assert b["mlflow_credentials"] == {"options": ["api_key", "ca_cert", "host"], "environment": []}
    assert b["mlflow_cluster_reachable"] is True
    # discovery got the rendered token; the output only the reference
    assert {m["key"]: m["options"] for m in made} == {"a": ["context", "kubeconfig"],
                                                      "https://b.example:6443": ["api_key", "ca_cert", "host"]}
    assert TOKEN not in proc.stdout + proc.stderr
    assert "hunter2" not in proc.stdout + proc.stderr, "env values of the Deployment are never read into the inventory"
    assert not inv.get("mlflow_discovery_failed", {}).get("hosts")


def test_host_output_and_graph(tmp_path):
    proc, _made = run(tmp_path, two_clusters(), CLUSTERS, "--host", "lab-b/asgard/mlflow-deployment")
    host = plain(listing(proc))
    assert host["verify_service"] == "mlflow-service" and host["mlflow_static_prefix"] == "/static"
    assert TOKEN not in proc.stdout
    proc, _made = run(tmp_path, two_clusters(), CLUSTERS, "--graph")
    assert proc.returncode == 0 and "mlflow-log-shipper" not in proc.stdout and "|--lab-a/team-x/tracking" in proc.stdout


def test_constructed_features(tmp_path):
    cfg = two_clusters(
        compose={"verify_expected_static_prefix": "mlflow_static_prefix | default('', true)",
                 "verify_min_workers": "1"},
        keyed_groups=[{"key": "mlflow_labels.team | default('none')", "prefix": "team"}],
        groups={"prefixed": "mlflow_static_prefix is not none", "on_b": "mlflow_cluster == 'lab-b'"})
    inv = listing(run(tmp_path, cfg, CLUSTERS, "--list")[0])
    hv = plain(inv["_meta"]["hostvars"])
    assert hv["lab-a/team-x/tracking"]["verify_expected_static_prefix"] == "/mlflow"
    assert hv["lab-a/ml/mlflow-deployment"]["verify_expected_static_prefix"] == ""
    assert hv["lab-a/ml/mlflow-deployment"]["verify_min_workers"] == 1
    assert inv["team_x"]["hosts"] == ["lab-a/team-x/tracking"]
    assert sorted(inv["team_none"]["hosts"]) == ["lab-a/ml/mlflow-deployment", "lab-b/asgard/mlflow-deployment"]
    assert sorted(inv["prefixed"]["hosts"]) == ["lab-a/team-x/tracking", "lab-b/asgard/mlflow-deployment"]
    assert inv["on_b"]["hosts"] == ["lab-b/asgard/mlflow-deployment"]


def test_instance_filter_and_host_name(tmp_path):
    cfg = two_clusters(instance_filter="server_kind == 'gunicorn' && contains(keys(labels), 'team')",
                       host_name="cluster ~ '-' ~ labels.team ~ '-' ~ deployment")
    inv = listing(run(tmp_path, cfg, CLUSTERS, "--list")[0])
    assert sorted(inv["_meta"]["hostvars"]) == ["lab-a-x-tracking"]


@pytest.mark.parametrize("extra,message", [
    ({"instance_filter": "server_kind =="}, "instance_filter: 'server_kind ==' is not a valid JMESPath expression"),
    ({"host_name": "cluster"}, "host_name: 'cluster' gives 'lab-a' for both"),
    ({"namespaces": ["ml", "Team_X"]}, "namespaces[1]: 'Team_X' is not namespace names or shell patterns"),
    ({"connections": [{"name": "b", "host": "https://b.example:6443", "api_key": "literal-" + TOKEN}]},
     "connections[0].api_key: a literal token would be copied into every host's variables"),
    ({"connections": [{"name": "a", "context": "a", "proxy": "http://p"}]}, "connections[0].proxy: not supported"),
])
def test_bad_configuration_names_the_option(tmp_path, extra, message):
    proc, _made = run(tmp_path, two_clusters(**extra), CLUSTERS, "--list", "-vvv")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert message in " ".join(out.split()), out
    assert TOKEN not in out


def test_awx_credential_and_a_kubeconfig_connection_conflict(tmp_path):
    env = {"K8S_AUTH_HOST": "https://a.example:6443", "K8S_AUTH_API_KEY": AWX_TOKEN}
    proc, made = run(tmp_path, two_clusters(), CLUSTERS, "--list", env=env)
    out = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode != 0
    assert "connections[0] (lab-a): kubeconfig/context are set, but K8S_AUTH_HOST" in out
    assert made == [], "nothing was asked of any cluster"
    assert AWX_TOKEN not in out


def test_unreachable_cluster_is_reported_not_a_traceback(tmp_path):
    clusters = {"a": "unreachable", "https://b.example:6443": CLUSTER_B}
    proc, _made = run(tmp_path, two_clusters(), clusters, "--list")
    inv = listing(proc)
    assert "cluster lab-a: discovery failed, the fleet is incomplete" in " ".join(proc.stderr.split())
    assert "Traceback" not in proc.stderr
    assert inv["mlflow_discovery_failed"]["hosts"] == ["lab-a"]
    hv = plain(inv["_meta"]["hostvars"])
    assert hv["lab-a"]["mlflow_cluster_reachable"] is False
    assert "connection refused" in hv["lab-a"]["mlflow_discovery_errors"][0]
    assert list(inv["mlflow_servers"]["hosts"]) == ["lab-b/asgard/mlflow-deployment"]
    strict, _made = run(tmp_path, two_clusters(strict=True), clusters, "--list")
    assert strict.returncode != 0
    assert "discovery failed (strict): lab-a cluster:" in " ".join((strict.stdout + strict.stderr).split())


def test_cache_holds_facts_not_credentials(tmp_path):
    cache_dir = tmp_path / "cache"
    cfg = two_clusters(cache=True, cache_plugin="ansible.builtin.jsonfile", cache_connection=str(cache_dir),
                       cache_timeout=3600)
    first, made1 = run(tmp_path, cfg, CLUSTERS, "--list")
    assert len(made1) == 2 and listing(first)
    (tmp_path / "calls.jsonl").unlink()
    second, made2 = run(tmp_path, cfg, CLUSTERS, "--list")
    assert made2 == [], "the second run is served from the cache"
    assert listing(second)["_meta"] == listing(first)["_meta"]
    files = list(cache_dir.iterdir())
    assert files
    text = "".join(f.read_text() for f in files)
    assert "tracking-http" in text and TOKEN not in text and "hunter2" not in text and "CLUSTER_B_TOKEN" not in text
    third, made3 = run(tmp_path, cfg, CLUSTERS, "--list", "--flush-cache")
    assert len(made3) == 2 and listing(third)


def test_file_name_must_end_in_mlflow_servers(tmp_path):
    proc, made = run(tmp_path, two_clusters(), CLUSTERS, "--list", name="fleet.yml")
    assert proc.returncode != 0 and made == []
