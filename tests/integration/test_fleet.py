"""The fleet on two lab clusters: the asgard.mlflow.mlflow_servers inventory finds every MLflow (an unlabelled,
renamed one on cluster A; the seed's labelled mlflow-deployment on cluster B) and nothing else (a look-alike sidecar
Deployment), playbooks/fleet.yml audits without changing anything, then heals the broken one, leaves the healthy one
alone and writes one fleet report. Driven as a user does: ansible-inventory / ansible-playbook with
-i <file>.mlflow_servers.yml and -e name=value strings.

Two MLflow servers are enough for what the fleet does (one healthy, one broken, on two clusters); cluster A's
namespace pattern still matches two namespaces (the renamed MLflow's and the look-alike's)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers import fleet_objects as fo  # noqa: E402
from helpers.ansible_runner import VENV_BIN, run_playbook  # noqa: E402
from helpers.inventory_output import listing, plain  # noqa: E402

pytestmark = pytest.mark.lab
REPO = Path(__file__).resolve().parents[2]
B_TOKEN_VAR = "FLEET_TEST_B_TOKEN"
B_TOKEN_REF = "{{ lookup('ansible.builtin.env', 'FLEET_TEST_B_TOKEN') }}"
GONE_TOKEN_REF = "{{ lookup('ansible.builtin.env', 'FLEET_TEST_GONE_TOKEN') }}"


class Fleet:
    def __init__(self, lab_a, lab_b, tmp: Path):
        uid = uuid.uuid4().hex[:6]
        self.a, self.b, self.tmp = lab_a, lab_b, tmp
        self.ns = {"renamed": f"fr-{uid}", "lookalike": f"fl-{uid}", "broken": f"fb-{uid}"}
        self.uid = uid
        self.inventory = tmp / "two-labs.mlflow_servers.yml"
        self.write_inventory()
        env = lab_a.env(**{B_TOKEN_VAR: lab_b.token, "FLEET_TEST_GONE_TOKEN": "not-a-credential",
                           "ANSIBLE_SHOW_CUSTOM_STATS": "1"})
        env.pop("KUBECONFIG", None)  # every connection is explicit: nothing may come from the environment
        self.env = env
        self.expected = {f"lab-a/{self.ns['renamed']}/tracking", f"lab-b/{self.ns['broken']}/mlflow-deployment"}
        self.lab_a_namespaces = [self.ns["renamed"], self.ns["lookalike"]]

    def write_inventory(self, extra_connections=()):
        cfg = {"plugin": "asgard.mlflow.mlflow_servers", "connections": [
            # a pattern: one cluster-wide list, filtered (other tests' MLflows are in this lab too)
            {"name": "lab-a", "kubeconfig": str(self.a.kubeconfig), "namespaces": [f"f[rl]-{self.uid}"]},
            # plain names: listed namespace by namespace; the token by reference, from the environment
            {"name": "lab-b", "host": self.b.api, "api_key": B_TOKEN_REF,
             "ca_cert": str(self.b.ca), "namespaces": [self.ns["broken"]]},
            *extra_connections]}
        self.inventory.write_text(yaml.safe_dump(cfg, sort_keys=False))

    def inventory_cli(self, *args):
        return subprocess.run([str(VENV_BIN / "ansible-inventory"), "-i", str(self.inventory), *args], cwd=REPO,
                              env=self.env, capture_output=True, text=True, timeout=300)

    def playbook(self, *args, name="fleet"):
        report, md = self.tmp / f"{name}.json", self.tmp / f"{name}.md"
        res = run_playbook("playbooks/fleet.yml", inventory=self.inventory, env=self.env, timeout=1800,
                           extra_args=["-e", f"fleet_report_path={report}", "-e", f"fleet_markdown_report_path={md}",
                                       "-e", "verify_min_workers=1", "-e", "verify_rollout_timeout=300", *args])
        return res, (json.loads(report.read_text()) if report.exists() else {}), (md.read_text() if md.exists() else "")


@pytest.fixture(scope="module")
def fleet(lab, second_lab, tmp_path_factory):
    f = Fleet(lab, second_lab, tmp_path_factory.mktemp("fleet"))
    try:
        fo.apply(lab, f.ns["renamed"], fo.healthy(f.ns["renamed"], name="tracking", labels={"run": "tracking"},
                                                  service="tracking-http", container="server", named_port=True))
        fo.apply(lab, f.ns["lookalike"], fo.lookalike())
        fo.apply(second_lab, f.ns["broken"], fo.seed())
        fo.wait_serving(lab, f.ns["renamed"], "run=tracking")
        fo.wait_serving(second_lab, f.ns["broken"], "app=mlflow", "/static/health")
        yield f
    finally:
        fo.delete_namespaces(lab, f.lab_a_namespaces)
        fo.delete_namespaces(second_lab, [f.ns["broken"]])


def test_inventory_lists_every_mlflow_of_two_labs_and_nothing_else(fleet):
    proc = fleet.inventory_cli("--list", "-vvv")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    inv = plain(listing(proc))
    hv = inv["_meta"]["hostvars"]
    assert set(hv) == fleet.expected, "the look-alike log shipper (app=mlflow, no mlflow server) must not be found"
    assert set(inv["mlflow_servers"]["hosts"]) == fleet.expected
    renamed = hv[f"lab-a/{fleet.ns['renamed']}/tracking"]
    assert (renamed["verify_service"], renamed["verify_container"], renamed["mlflow_labels"]) == (
        "tracking-http", "server", {"run": "tracking"})
    broken = hv[f"lab-b/{fleet.ns['broken']}/mlflow-deployment"]
    assert (broken["mlflow_server_kind"], broken["mlflow_static_prefix"], broken["verify_host"]) == (
        "gunicorn", "/static", fleet.b.api)
    assert broken["verify_api_key"] == B_TOKEN_REF
    assert renamed["verify_kubeconfig"] == str(fleet.a.kubeconfig)
    assert set(inv["mlflow_cluster_lab_b"]["hosts"]) == {f"lab-b/{fleet.ns['broken']}/mlflow-deployment"}
    assert fleet.b.token not in out and fleet.a.token not in out, "a credential reached the inventory output"


def test_audit_changes_nothing_then_the_fleet_heals_the_broken_one(fleet):
    labs = {"a": (fleet.a, fleet.lab_a_namespaces),
            "b": (fleet.b, [fleet.ns["broken"]])}
    before = {k: fo.snapshot(lab, nss) for k, (lab, nss) in labs.items()}
    marks = {k: lab.log_mark() for k, (lab, _n) in labs.items()}
    # audit, with a third cluster that cannot be reached: every instance is still tried, the run fails at the end
    fleet.write_inventory([{"name": "lab-gone", "host": "https://127.0.0.1:9",
                            "api_key": GONE_TOKEN_REF,
                            "namespaces": ["x"]}])
    res, rep, md = fleet.playbook("-e", "verify_remediate=false", "--forks", "3", name="audit")
    assert res.rc != 0, res.output
    assert {k: fo.snapshot(lab, nss) for k, (lab, nss) in labs.items()} == before, "audit mode changed a Deployment"
    for k, (lab, nss) in labs.items():
        writes = [e for e in lab.requests_since(marks[k]) if e["method"] not in ("GET", "HEAD")
                  and any(f"/namespaces/{ns}/" in e["path"] for ns in nss)]
        assert writes == [], f"audit mode wrote to lab {k}: {writes}"
    rows = {r["host"]: r for r in rep["instances"]}
    assert set(rows) == fleet.expected
    broken = rows[f"lab-b/{fleet.ns['broken']}/mlflow-deployment"]
    assert broken["status"] == "unhealthy" and "ROOT_NOT_FOUND" in broken["remaining"]
    assert broken["remediated"] == []
    assert all(rows[h]["status"] == "healthy" for h in fleet.expected - {broken["host"]}), rep["summary"]
    assert rep["meta"]["remediate"] is False and rep["summary"]["discovery_failed"] == ["lab-gone"]
    assert rep["discovery_errors"][0]["cluster"] == "lab-gone"
    assert f"lab-b/{fleet.ns['broken']}/mlflow-deployment unhealthy" in res.output
    assert "discovery failed for cluster(s) lab-gone" in res.output
    assert "audit (no remediation)" in md

    # heal: the broken one is fixed, the healthy one is left alone, one report
    fleet.write_inventory()
    res, rep, md = fleet.playbook("--forks", "3", name="heal")
    assert res.rc == 0, res.output
    rows = {r["host"]: r for r in rep["instances"]}
    assert set(rows) == fleet.expected and rep["summary"]["ok"] is True
    healed = rows[f"lab-b/{fleet.ns['broken']}/mlflow-deployment"]
    assert healed["status"] == "healthy" and "ROOT_NOT_FOUND" in healed["findings"]
    assert [r["action"] for r in healed["remediated"] if r.get("changed")] == ["patch"]
    assert healed["report"]["meta"]["namespace"] == fleet.ns["broken"]
    for host in fleet.expected - {healed["host"]}:
        assert rows[host]["status"] == "healthy" and rows[host]["remediated"] == [], rows[host]
    assert rep["summary"]["remediated_instances"] == 1 and rep["summary"]["actions"] == {"patch": 1}
    dep = fleet.b.request("GET", f"/apis/apps/v1/namespaces/{fleet.ns['broken']}/deployments/mlflow-deployment").json()
    assert "--static-prefix" not in json.dumps(dep["spec"]["template"]["spec"]["containers"][0])
    assert after_unchanged(fleet, before["a"]), "the healthy instance (or the look-alike) was changed"
    table = [ln for ln in md.splitlines() if ln.startswith("| ") and "---" not in ln]
    assert len(table) == 1 + len(fleet.expected) and any(healed["host"] in ln and "| patch |" in ln for ln in table), md
    stats = res.data.get("global_custom_stats", {}).get("mlflow_fleet", {})
    assert stats.get("summary", {}).get("remediated_instances") == 1, res.data.get("global_custom_stats")
    assert stats["remediated"] == [{"host": healed["host"], "actions": ["patch"]}]
    assert fleet.b.token not in res.stdout + res.stderr


def after_unchanged(fleet, before_a) -> bool:
    return fo.snapshot(fleet.a, fleet.lab_a_namespaces) == before_a
