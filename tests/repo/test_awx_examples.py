# Copyright: (c) 2025, asgard.mlflow contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""examples/awx/awx_objects.yml: the AWX objects as code.

There is no AWX server here, so the playbook is checked the ways that need none: ansible-playbook
--syntax-check and ansible-lint (production profile) with the real awx.awx collection installed by
scripts/awx-collection.sh, its schedules' RRULEs parsed, its references to the repo's playbooks and
variables resolved, and real runs that stop at the preflight (bad input names the variable) or at the
first controller call (the Kubernetes token never shows in the output, even with -vvv).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from ansible.parsing.utils.yaml import from_yaml
from dateutil.rrule import rrulestr

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
EXAMPLE = ROOT / "examples" / "awx" / "awx_objects.yml"
TOKEN = "s3cr3t-token-never-logged-9f2c"


def _load():
    """The example as ansible reads it (it uses the !unsafe tag)."""
    return from_yaml(EXAMPLE.read_text(), file_name=str(EXAMPLE))


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ASGARD_", "CONTROLLER_", "TOWER_", "K8S_AUTH_"))}
    env.update(PATH=f"{BIN}:{env.get('PATH', '')}", ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_FORCE_COLOR="0", PY_COLORS="0")
    env.update(extra)
    return env


@pytest.fixture(scope="module", autouse=True)
def awx_collection():
    proc = subprocess.run([str(ROOT / "scripts" / "awx-collection.sh")], cwd=ROOT, capture_output=True, text=True,
                          env=_env(PYTHON=sys.executable), timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (ROOT / ".collections/ansible_collections/awx/awx/plugins/modules/schedule.py").is_file()


@pytest.fixture(scope="module")
def tasks() -> list[dict]:
    plays = _load()
    assert isinstance(plays, list) and len(plays) == 1
    return plays[0]["tasks"]


def _module_tasks(tasks: list[dict], module: str, fleet: bool = False) -> list[dict]:
    """The tasks using awx.awx.<module>: those of the single-MLflow templates, or (fleet) those named 'Fleet | ...'."""
    return [t for t in tasks if f"awx.awx.{module}" in t and t["name"].startswith("Fleet |") == fleet]


def _run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "ansible-playbook"), *args, str(EXAMPLE)], cwd=ROOT, capture_output=True,
                          text=True, env=env, timeout=180)


def test_syntax_check():
    proc = _run("--syntax-check", env=_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ansible_lint_production_profile():
    proc = subprocess.run([str(BIN / "ansible-lint"), "--profile", "production", "--nocolor", str(EXAMPLE)],
                          cwd=ROOT, capture_output=True, text=True, env=_env(), timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Profile 'production' was required, and it passed" in proc.stdout + proc.stderr


def test_every_object_kind_is_managed(tasks):
    used = {k.split(".")[-1] for t in tasks for k in t if k.startswith("awx.awx.")}
    assert {"execution_environment", "project", "inventory", "host", "credential_type", "credential",
            "notification_template", "job_template", "schedule", "workflow_job_template", "inventory_source"} <= used, used
    # Every task that talks to the controller uses the FQCN and leaves the objects present.
    for t in tasks:
        for key, args in t.items():
            if key.startswith("awx.awx."):
                assert args.get("state") == "present", t["name"]


def test_job_templates_point_at_existing_playbooks(tasks):
    (jt,) = _module_tasks(tasks, "job_template")
    names = [item["name"] for item in jt["loop"]]
    assert names == ["deploy", "patch", "verify"]
    assert jt["awx.awx.job_template"]["playbook"] == "playbooks/{{ item.name }}.yml"
    missing = [n for n in names if not (ROOT / "playbooks" / f"{n}.yml").is_file()]
    assert not missing, f"AWX job templates refer to playbooks that do not exist: {missing}"


def _declared(role: str) -> str:
    """Text where playbooks/<role>.yml and roles/<role> declare their variables."""
    parts = [ROOT / "playbooks" / f"{role}.yml", *sorted((ROOT / "roles" / role).glob("defaults/*.yml")),
             *sorted((ROOT / "roles" / role).glob("meta/argument_specs.y*ml"))]
    return "\n".join(p.read_text() for p in parts if p.is_file())


def _undeclared(role: str, names) -> list[str]:
    known = _declared(role)
    assert known, f"playbooks/{role}.yml / roles/{role} do not exist yet"
    return sorted(n for n in names if not re.search(rf"^\s*{n}:|(?<![A-Za-z0-9_]){n}(?![A-Za-z0-9_])", known, re.M))


def test_extra_vars_exist_in_the_playbooks_they_target(tasks):
    play = _load()[0]
    extra = play["vars"]["asgard_awx_verify_extra_vars"]
    assert extra == {"verify_port_forward": False}, "AWX verify must not open the persistent port-forward"
    (sched,) = _module_tasks(tasks, "schedule")
    assert "verify_remediate" in sched["awx.awx.schedule"]["extra_data"]
    problems = {"verify": _undeclared("verify", set(extra) | {"verify_remediate"})}
    (jt,) = _module_tasks(tasks, "job_template")
    for item in jt["loop"]:
        if isinstance(item["extra_vars"], dict):
            problems[item["name"]] = _undeclared(item["name"], item["extra_vars"])
    assert jt["loop"][0]["extra_vars"] == {"deploy_create_namespace": False}, "see deploy/rbac/"
    problems = {k: v for k, v in problems.items() if v}
    assert not problems, f"the AWX objects pass variables the playbooks do not declare: {problems}"


def test_schedules_every_15_minutes_report_and_remediate(tasks):
    play = _load()[0]
    rule = rrulestr(play["vars"]["asgard_awx_verify_rrule"])
    first, second, third = rule[0], rule[1], rule[2]
    assert second - first == timedelta(minutes=15) == third - second
    assert first.tzinfo is not None, "AWX needs DTSTART with a time zone"
    (sched,) = _module_tasks(tasks, "schedule")
    variants = {item["mode"]: item["remediate"] for item in sched["loop"]}
    assert variants == {"report": False, "remediate": True}
    # exactly one schedule is enabled, the one asgard_awx_verify_mode names
    assert sched["awx.awx.schedule"]["enabled"] == "{{ asgard_awx_verify_mode == item.mode }}"
    assert play["vars"]["asgard_awx_verify_mode"] == "report", "the default must only report"


def test_credential_type_injects_the_standard_k8s_auth_variables(tasks):
    (ct,) = _module_tasks(tasks, "credential_type")
    env = ct["awx.awx.credential_type"]["injectors"]["env"]
    assert set(env) == {"K8S_AUTH_HOST", "K8S_AUTH_API_KEY", "K8S_AUTH_SSL_CA_CERT", "K8S_AUTH_VERIFY_SSL"}
    fields = {f["id"]: f for f in ct["awx.awx.credential_type"]["inputs"]["fields"]}
    assert fields["bearer_token"].get("secret") is True
    assert fields["verify_ssl"].get("default") is True
    (cred,) = _module_tasks(tasks, "credential")
    assert cred.get("no_log") is True


def test_workflow_verify_notifies_on_failure(tasks):
    (wf,) = _module_tasks(tasks, "workflow_job_template")
    args = wf["awx.awx.workflow_job_template"]
    (nt,) = _module_tasks(tasks, "notification_template")
    assert nt["awx.awx.notification_template"]["notification_type"] == "webhook"
    assert args["notification_templates_error"] == [nt["awx.awx.notification_template"]["name"]]
    (node,) = args["workflow_nodes"]
    assert node["unified_job_template"]["name"] == "{{ asgard_awx_prefix }}-verify"


def test_missing_input_fails_in_preflight_naming_the_variable():
    proc = _run(env=_env())
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "asgard_awx_scm_url (or env ASGARD_SCM_URL) is empty; expected the git URL" in out, out
    assert "TASK [Execution environment" not in out, "a controller call ran before the preflight failed"


def test_bad_input_names_field_and_token_is_never_logged(tmp_path):
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    good = {"ASGARD_SCM_URL": "https://git.example.invalid/asgard/mlflow.git", "ASGARD_K8S_HOST": "https://127.0.0.1:6443",
            "ASGARD_K8S_TOKEN": TOKEN, "ASGARD_K8S_CA_CERT_FILE": str(ca),
            "ASGARD_NOTIFY_URL": "https://hooks.example.invalid/x",
            # a closed local port: the first controller call fails fast, nothing leaves the machine
            "CONTROLLER_HOST": "https://127.0.0.1:9", "CONTROLLER_OAUTH_TOKEN": "x", "CONTROLLER_VERIFY_SSL": "false"}
    bad = _run("-vvv", "-e", "asgard_awx_verify_mode=sometimes", env=_env(**good))
    out = bad.stdout + bad.stderr
    assert bad.returncode != 0
    assert "asgard_awx_verify_mode is invalid; expected report or remediate" in out, out
    assert TOKEN not in out
    # Valid input passes the preflight and fails only at the controller; the credential task hides the token.
    run = _run("-vvv", "--start-at-task", "Credential of the automation service account (token never logged)",
               env=_env(**good))
    out = run.stdout + run.stderr
    assert run.returncode != 0
    assert "Credential of the automation service account" in out
    assert "censored" in out, out
    assert TOKEN not in out


# ------------------------------------------------------------------------------------------------ the fleet
FLEET_SOURCE = ROOT / "examples" / "awx" / "fleet.mlflow_servers.yml"


def test_fleet_inventory_source_is_the_plugin_config_in_the_project(tasks):
    (src,) = _module_tasks(tasks, "inventory_source", fleet=True)
    args = src["awx.awx.inventory_source"]
    assert (args["source"], args["source_project"]) == ("scm", "{{ asgard_awx_prefix }}")
    path = ROOT / args["source_path"]
    assert path == FLEET_SOURCE and path.name.endswith("mlflow_servers.yml"), "the plugin only reads *mlflow_servers.yml"
    assert args["update_on_launch"] is True and args["overwrite"] is True, "every job sees the fleet as it is now"
    assert args["credential"] == "{{ asgard_awx_prefix }}-fleet"
    config = from_yaml(path.read_text())
    assert config["plugin"] == "asgard.mlflow.mlflow_servers"
    # the project's ansible.cfg enables the plugin (AWX runs ansible-inventory in the project directory)
    assert "asgard.mlflow.mlflow_servers" in (ROOT / "ansible.cfg").read_text()


def test_fleet_credential_injects_what_the_source_reads(tasks):
    (ct,) = _module_tasks(tasks, "credential_type", fleet=True)
    args = ct["awx.awx.credential_type"]
    env = args["injectors"]["env"]
    assert {"K8S_AUTH_HOST", "K8S_AUTH_API_KEY", "K8S_AUTH_SSL_CA_CERT", "K8S_AUTH_VERIFY_SSL"} <= set(env)
    source = FLEET_SOURCE.read_text()
    read = set(re.findall(r"lookup\('ansible.builtin.env', '([A-Z0-9_]+)'\)", source))
    assert read and read <= set(env), f"the inventory source reads variables the credential does not inject: {read - set(env)}"
    fields = {f["id"]: f for f in args["inputs"]["fields"]}
    assert all(fields[k].get("secret") is True for k in fields if k.endswith("token"))
    (cred,) = _module_tasks(tasks, "credential", fleet=True)
    assert cred.get("no_log") is True
    (jt,) = _module_tasks(tasks, "job_template", fleet=True)
    assert jt["awx.awx.job_template"]["credentials"] == [cred["awx.awx.credential"]["name"]]


def test_fleet_job_template_schedule_and_failure_notification(tasks):
    play = _load()[0]
    (jt,) = _module_tasks(tasks, "job_template", fleet=True)
    args = jt["awx.awx.job_template"]
    assert (ROOT / args["playbook"]).is_file() and args["playbook"] == "playbooks/fleet.yml"
    assert args["inventory"] == "{{ asgard_awx_prefix }}-fleet"
    assert args["forks"] == "{{ asgard_awx_fleet_forks }}" and int(play["vars"]["asgard_awx_fleet_forks"]) > 1
    (nt,) = _module_tasks(tasks, "notification_template", fleet=True)
    assert args["notification_templates_error"] == [nt["awx.awx.notification_template"]["name"]]
    assert nt["awx.awx.notification_template"]["notification_type"] == "webhook"
    (sched,) = _module_tasks(tasks, "schedule", fleet=True)
    sargs = sched["awx.awx.schedule"]
    assert sargs["unified_job_template"] == args["name"]
    rule = rrulestr(play["vars"]["asgard_awx_fleet_rrule"])
    assert rule[1] - rule[0] == timedelta(hours=1) and rule[0].tzinfo is not None
    assert "verify_remediate" in sargs["extra_data"] and play["vars"]["asgard_awx_fleet_mode"] == "report"
    extra = set(play["vars"]["asgard_awx_fleet_extra_vars"]) | {"verify_remediate"}
    known = (ROOT / "playbooks" / "fleet.yml").read_text() + (ROOT / "playbooks" / "vars" / "fleet.yml").read_text() \
        + _declared("verify")
    missing = sorted(n for n in extra if not re.search(rf"(?<![A-Za-z0-9_]){n}(?![A-Za-z0-9_])", known))
    assert not missing, f"the fleet job template passes variables nothing declares: {missing}"
