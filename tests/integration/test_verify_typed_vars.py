"""Issue 14, item 1, for the verify role: what an operator types is what happens.

`ansible-playbook playbooks/verify.yml -e verify_remediate=false` (the audit command in the README) gives the role
the STRING "false"; before 0.2.0 the role's YAML used it raw (a non-empty string is true in Jinja) and the audit
patched the broken Deployment. Each run below is an argv split like a shell splits a command line (shlex), so every
`-e name=value` arrives as a string, against the seed's broken Deployment in the lab. Every boolean of the role that
gates a change or a failure is given as `false`/`no`/`0` (and the numbers as strings): nothing changes that the
operator said no to - the Deployment's generation stays, and the lab's request log shows no write in the namespace.
"""

from __future__ import annotations

import json
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers.ansible_runner import REPO, VENV_BIN, ansible_env  # noqa: E402
from helpers.lab_objects import free_port, get_deployment, live_pods  # noqa: E402
from test_verify_heal import wait_log  # noqa: E402

pytestmark = pytest.mark.lab  # the request log is read for this module's namespace only (writes_in)
SEED = REPO / "playbooks" / "files" / "seed-before.yml"
WRITES = {"POST", "PUT", "PATCH", "DELETE"}


@pytest.fixture(scope="module")
def seed_ns(lab):
    """The seed incident's "Before" Deployment (gunicorn --timeout 120, --static-prefix=/static: / answers 404)."""
    import uuid

    ns = f"t-typed-{uuid.uuid4().hex[:8]}"
    r = lab.request("POST", "/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace",
                                                        "metadata": {"name": ns}})
    assert r.status_code == 201, r.text
    for obj in (o for o in yaml.safe_load_all(SEED.read_text()) if o):
        path = {"Deployment": f"/apis/apps/v1/namespaces/{ns}/deployments",
                "Service": f"/api/v1/namespaces/{ns}/services"}[obj["kind"]]
        r = lab.request("POST", path, json=obj)
        assert r.status_code == 201, r.text
    wait_log(lab, ns, "Listening at")  # gunicorn listens; then wait until its workers answer
    end = time.monotonic() + 300
    while time.monotonic() < end:
        ips = [p["status"].get("podIP") for p in live_pods(lab, ns) if p.get("status", {}).get("podIP")]
        try:
            if ips and requests.get(f"http://{ips[0]}:5000/static/health", headers={"Host": "localhost:5000"},
                                    timeout=5).status_code == 200:
                break
        except requests.RequestException:
            pass
        time.sleep(1)
    yield ns
    lab.request("DELETE", f"/api/v1/namespaces/{ns}")


def shell(lab, command_line: str, tmp_path: Path, name: str):
    """Run `ansible-playbook <command_line>` split as a shell would; returns (rc, output, report or {})."""
    report = tmp_path / f"{name}.json"
    argv = [str(VENV_BIN / "ansible-playbook"), *shlex.split(command_line), "-e", f"verify_report_path={report}"]
    env = ansible_env(**{k: v for k, v in lab.env().items() if k in ("KUBECONFIG", "TMPDIR")})
    proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=900, check=False)
    rep = json.loads(report.read_text()) if report.exists() else {}
    return proc.returncode, proc.stdout + proc.stderr, rep


def writes_in(lab, mark: int, ns: str) -> list[str]:
    return [f"{r['method']} {r['path']}" for r in lab.requests_since(mark)
            if r["method"] in WRITES and f"/namespaces/{ns}/" in r["path"]]


def assert_audited(lab, seed_ns: str, mark: int, gen: int, out: str, rep: dict) -> None:
    """verify_remediate said no: nothing written, the generation unchanged, a report that remediated and planned
    nothing and still names the seed's fault."""
    assert writes_in(lab, mark, seed_ns) == [], out[-3000:]
    assert get_deployment(lab, seed_ns)["metadata"]["generation"] == gen
    assert rep["meta"]["remediate"] is False and rep["remediated"] == [] and rep["plan"]["actions"] == []
    assert "ROOT_NOT_FOUND" in {f["code"] for f in rep["remaining"]}


# verify_remediate=no and =false are the audits of the two tests below (verify_fail_when_unhealthy said no there);
# here the other two spellings, with the run failing on the unhealthy seed as an audit does by default
@pytest.mark.parametrize("no", ["0", "False"])
def test_audit_given_as_a_string_changes_nothing(lab, seed_ns, tmp_path, no):
    gen = get_deployment(lab, seed_ns)["metadata"]["generation"]
    mark = lab.log_mark()
    rc, out, rep = shell(lab, f"playbooks/verify.yml -e verify_namespace={seed_ns} -e verify_remediate={no} "
                              "-e verify_port_forward=false", tmp_path, f"audit-{no}")
    assert rc != 0, "the audit passed on the broken seed Deployment"
    assert_audited(lab, seed_ns, mark, gen, out, rep)
    assert "MLflow in " + seed_ns + " is unhealthy after this run" in out


def test_fail_when_unhealthy_false_and_numbers_as_strings(lab, seed_ns, tmp_path):
    """Also the audit typed verify_remediate=no."""
    gen = get_deployment(lab, seed_ns)["metadata"]["generation"]
    mark = lab.log_mark()
    rc, out, rep = shell(lab, f"playbooks/verify.yml -e verify_namespace={seed_ns} -e verify_remediate=no "
                              "-e verify_fail_when_unhealthy=false -e verify_port_forward=0 -e verify_transaction=no "
                              '-e verify_max_restarts=0 -e verify_remediation_rounds="1" -e verify_min_workers=4 '
                              '-e verify_probe_timeout=5 -e verify_set_stats=false', tmp_path, "no-fail")
    assert rc == 0, out[-3000:]
    assert_audited(lab, seed_ns, mark, gen, out, rep)
    assert "is unhealthy after this run" not in out  # verify_fail_when_unhealthy=false: no failure message
    assert rep["status"] == "unhealthy" and rep["healthy"] is False
    assert "transaction" not in {s["step"] for s in rep["steps"]}
    assert {s["step"]: s["status"] for s in rep["steps"]}["port_forward"] == "skipped"
    assert writes_in(lab, mark, seed_ns) == [] and get_deployment(lab, seed_ns)["metadata"]["generation"] == gen
    stats_task = out.split("Publish the summary for AWX workflows]", 1)[1].lstrip("*\n ")
    assert stats_task.startswith("skipping"), stats_task[:200]


def test_port_forward_false_starts_nothing(lab, seed_ns, tmp_path):
    """Also the audit typed verify_remediate=false."""
    port = free_port()
    gen = get_deployment(lab, seed_ns)["metadata"]["generation"]
    mark = lab.log_mark()
    rc, out, rep = shell(lab, f"playbooks/verify.yml -e verify_namespace={seed_ns} -e verify_remediate=false "
                              f"-e verify_fail_when_unhealthy=no -e verify_port_forward=false "
                              f"-e verify_port_forward_local_port={port}", tmp_path, "no-forward")
    assert rc == 0, out[-3000:]
    assert_audited(lab, seed_ns, mark, gen, out, rep)
    with socket.socket() as s:
        s.settimeout(1)
        assert s.connect_ex(("127.0.0.1", port)) != 0, "a forwarder was started"
    assert rep["meta"]["dashboard_url"] == ""


def test_check_mode_with_remediate_true_as_a_string_plans_and_changes_nothing(lab, seed_ns, tmp_path):
    gen = get_deployment(lab, seed_ns)["metadata"]["generation"]
    mark = lab.log_mark()
    rc, out, rep = shell(lab, f"playbooks/verify.yml --check -e verify_namespace={seed_ns} -e verify_remediate=yes "
                              "-e verify_port_forward=false", tmp_path, "check")
    assert rc == 0, out[-3000:]
    assert [a["action"] for a in rep["plan"]["actions"]] == ["patch"]
    assert rep["meta"]["check_mode"] is True and rep["remediated"] == []
    assert writes_in(lab, mark, seed_ns) == [] and get_deployment(lab, seed_ns)["metadata"]["generation"] == gen
