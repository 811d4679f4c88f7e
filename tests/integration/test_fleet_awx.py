"""playbooks/fleet.yml as AWX runs it: through ansible-runner (the library AWX's jobs and ansible-navigator use)
with a private data directory laid out as AWX lays it out, on two lab clusters.

- ``project/``: the project checkout (its ansible.cfg enables the inventory plugin); ``inventory/``: the inventory
  source examples/awx/fleet.mlflow_servers.yml (scoped to this test's namespaces: the labs are shared);
- ``env/``: what AWX's credential injectors put there: cluster A as ``K8S_AUTH_HOST``, ``K8S_AUTH_API_KEY``,
  ``K8S_AUTH_SSL_CA_CERT`` (a 0600 file under ``env/``) and ``K8S_AUTH_VERIFY_SSL`` (the "OpenShift or Kubernetes API
  Bearer Token" credential), cluster B as the ``ASGARD_FLEET_B_*`` variables of the example's credential type;
  ``JOB_ID``, ``INVENTORY_ID``, ... in the environment and ``awx_*``/``tower_*`` in the extra vars (a schedule's
  ``extra_data`` overrides the template's);
- one fresh private data dir per run (ansible-runner 2.4.3 lets a stale ``env/envvars`` win over new envvars);
- the artifacts are read as AWX reads them: ``status``, ``rc`` and the ``playbook_on_stats`` event's
  ``artifact_data`` (the job's artifacts, from ``set_stats``); no credential in ``stdout`` or any job event.
Shared reference: kubernetes-ingress-awx-facts.md section 4.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from pathlib import Path

import ansible_runner
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers import fleet_objects as fo  # noqa: E402
from helpers.ansible_runner import VENV_BIN  # noqa: E402

pytestmark = pytest.mark.lab
REPO = Path(__file__).resolve().parents[2]
SOURCE = REPO / "examples" / "awx" / "fleet.mlflow_servers.yml"


@pytest.fixture(scope="module")
def clusters(lab, second_lab):
    uid = uuid.uuid4().hex[:6]
    ns_a, ns_b = f"awx-a-{uid}", f"awx-b-{uid}"
    try:
        fo.apply(lab, ns_a, fo.healthy(ns_a))
        fo.apply(second_lab, ns_b, fo.seed())
        fo.wait_serving(lab, ns_a, "app=mlflow")
        fo.wait_serving(second_lab, ns_b, "app=mlflow", "/static/health")
        yield {"a": (lab, ns_a), "b": (second_lab, ns_b)}
    finally:
        fo.delete_namespaces(lab, [ns_a])
        fo.delete_namespaces(second_lab, [ns_b])


def private_data_dir(tmp_path: Path, clusters: dict) -> tuple[Path, dict]:
    """A fresh AWX-like private data dir; returns it and the job's envvars."""
    (lab_a, ns_a), (lab_b, ns_b) = clusters["a"], clusters["b"]
    pdd = tmp_path / f"job-{uuid.uuid4().hex[:8]}"
    (pdd / "env").mkdir(parents=True)
    (pdd / "inventory").mkdir()
    (pdd / "project").symlink_to(REPO)
    source = yaml.safe_load(SOURCE.read_text())
    source["connections"][0]["namespaces"] = [ns_a]
    source["connections"][1]["namespaces"] = [ns_b]
    (pdd / "inventory" / "fleet.mlflow_servers.yml").write_text(yaml.safe_dump(source, sort_keys=False))
    envvars = {"JOB_ID": "4242", "INVENTORY_ID": "7", "PROJECT_REVISION": "0123abcd", "AWX_HOST": "https://awx.invalid",
               "ANSIBLE_RETRY_FILES_ENABLED": "False", "TMPDIR": str(lab_a.env()["TMPDIR"]),
               "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}"}
    for name, lab in (("a", lab_a), ("b", lab_b)):
        ca = pdd / "env" / f"tmp{uuid.uuid4().hex[:8]}"  # AWX: a temp file under env/, mode 0600
        ca.write_text(Path(lab.ca).read_text())
        ca.chmod(0o600)
        if name == "a":
            envvars.update({"K8S_AUTH_HOST": lab.api, "K8S_AUTH_API_KEY": lab.token,
                            "K8S_AUTH_SSL_CA_CERT": str(ca), "K8S_AUTH_VERIFY_SSL": "True"})
        else:
            envvars.update({"ASGARD_FLEET_B_HOST": lab.api, "ASGARD_FLEET_B_TOKEN": lab.token,
                            "ASGARD_FLEET_B_CA_CERT": str(ca)})
    return pdd, envvars


def awx_extravars(launch: str, **extra) -> dict:
    meta = {"job_id": 4242, "job_launch_type": launch, "inventory_id": 7, "inventory_name": "asgard-mlflow-fleet",
            "project_revision": "0123abcd", "project_scm_branch": "main", "job_template_id": 12,
            "job_template_name": "asgard-mlflow-fleet", "execution_node": "awx-task-0"}
    if launch == "scheduled":
        meta.update(schedule_id=3, schedule_name="asgard-mlflow-fleet-hourly")
    else:
        meta.update(user_id=1, user_name="ops", user_email="ops@example.invalid", user_first_name="", user_last_name="")
    ev = {f"{prefix}_{k}": v for prefix in ("awx", "tower") for k, v in meta.items()}
    ev.update(extra)
    return ev


def run_job(tmp_path, clusters, monkeypatch, extravars):
    # the job's environment is AWX's, not this test session's
    for key in list(os.environ):
        if key.startswith(("K8S_AUTH_", "ANSIBLE_", "ASGARD_")) or key in ("KUBECONFIG", "PYTHONPATH"):
            monkeypatch.delenv(key, raising=False)
    pdd, envvars = private_data_dir(tmp_path, clusters)
    r = ansible_runner.run(private_data_dir=str(pdd), playbook="playbooks/fleet.yml",
                           inventory=str(pdd / "inventory"), envvars=envvars, extravars=extravars,
                           forks=3, quiet=True, timeout=1800)
    artifacts = Path(r.config.artifact_dir)
    stats_events = [e for e in r.events if e.get("event") == "playbook_on_stats"]
    assert len(stats_events) == 1, (artifacts / "stdout").read_text()[-6000:]
    text = (artifacts / "stdout").read_text()
    for ev in (artifacts / "job_events").iterdir():
        text += ev.read_text()
    return r, artifacts, stats_events[0]["event_data"].get("artifact_data") or {}, text


def test_fleet_job_through_ansible_runner(tmp_path, clusters, monkeypatch):
    (lab_a, ns_a), (lab_b, ns_b) = clusters["a"], clusters["b"]
    secrets = (lab_a.token, lab_b.token)
    broken = f"cluster-b/{ns_b}/mlflow-deployment"
    healthy = f"cluster-a/{ns_a}/mlflow-deployment"
    before = fo.snapshot(lab_b, [ns_b])

    # the schedule: audit (extra_data verify_remediate: false overrides the template), fails, changes nothing
    r, artifacts, data, text = run_job(tmp_path, clusters, monkeypatch,
                                       awx_extravars("scheduled", verify_remediate=False, verify_min_workers=1))
    assert (r.status, r.rc) == ("failed", 2), (artifacts / "stdout").read_text()[-6000:]
    assert (artifacts / "status").read_text() == "failed" and (artifacts / "rc").read_text() == "2"
    fleet = data["mlflow_fleet"]
    assert fleet["summary"]["instances"] == 2 and fleet["summary"]["ok"] is False
    assert [p["host"] for p in fleet["not_healthy"]] == [broken]
    assert "ROOT_NOT_FOUND" in fleet["not_healthy"][0]["remaining"] and fleet["remediated"] == []
    assert fo.snapshot(lab_b, [ns_b]) == before, "the audit job changed the broken Deployment"
    assert not any(s in text for s in secrets), "a credential is in the job's stdout or events"

    # launched by a user: heals the broken one, succeeds, publishes what it did
    r, artifacts, data, text = run_job(tmp_path, clusters, monkeypatch,
                                       awx_extravars("manual", verify_min_workers=1, verify_rollout_timeout=300))
    assert (r.status, r.rc) == ("successful", 0), (artifacts / "stdout").read_text()[-6000:]
    fleet = data["mlflow_fleet"]
    s = fleet["summary"]
    assert (s["instances"], s["healthy"], s["remediated_instances"], s["ok"]) == (2, 2, 1, True)
    assert fleet["remediated"] == [{"host": broken, "actions": ["patch"]}] and fleet["not_healthy"] == []
    assert sorted(s["clusters"]) == ["cluster-a", "cluster-b"]
    assert r.stats["failures"] == {} and set(r.stats["ok"]) >= {broken, healthy, "localhost"}
    assert not any(s in text for s in secrets), "a credential is in the job's stdout or events"


def test_the_awx_inventory_source_is_the_example():
    """The source the job uses is examples/awx/fleet.mlflow_servers.yml, only scoped to the test's namespaces."""
    src = yaml.safe_load(SOURCE.read_text())
    assert src["plugin"] == "asgard.mlflow.mlflow_servers"
    a, b = src["connections"]
    assert set(a) == {"name"}, "cluster-a comes from the AWX Kubernetes credential (K8S_AUTH_*)"
    refs = json.dumps(b)
    assert all(f"ASGARD_FLEET_B_{v}" in refs for v in ("HOST", "TOKEN", "CA_CERT"))
    assert b["api_key"].startswith("{{") and "lookup(" in b["api_key"], "the token by reference only"
