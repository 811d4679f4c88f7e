"""The shell-wrapper rule (SHELL_WRAPPER_NO_EXEC, patch target shell_exec): which `sh -c` scripts get `exec`,
which are reported only, and that the patch is one guarded element, idempotent, and composes with other edits.

Pure Python on Deployment dicts as the Kubernetes API returns them; the same code runs against the lab in
tests/integration/test_verify_shell_exec.py.
"""

from __future__ import annotations

import pathlib
import sys

import pytest

_COLLECTIONS = pathlib.Path(__file__).resolve().parents[4] / ".collections"
if str(_COLLECTIONS) not in sys.path:
    sys.path.insert(0, str(_COLLECTIONS))

from ansible_collections.asgard.mlflow.plugins.module_utils._compliance import compliance  # noqa: E402
from ansible_collections.asgard.mlflow.plugins.module_utils._settings import server_settings  # noqa: E402
from ansible_collections.asgard.mlflow.plugins.module_utils._step_settings import settings_findings  # noqa: E402
from ansible_collections.asgard.mlflow.plugins.module_utils._verify_plan import plan  # noqa: E402

FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures"
SEED_BEFORE = (FIXTURES / "seed-before.txt").read_text()
SERVER = "mlflow server --host=0.0.0.0 --port=5000 --workers=4"
V3, V2 = "ghcr.io/mlflow/mlflow:v3.17.2", "ghcr.io/mlflow/mlflow:v2.22.5"
# everything else off: only the shell wrapper is enforced
ONLY_EXEC = {"gunicorn_timeout": None, "gunicorn_keep_alive": None, "uvicorn_timeout_keep_alive": None,
             "workers": None, "static_prefix": None, "allowed_hosts": None, "port": None, "probes": False,
             "enable_service_links": None, "shell_exec": True}


def dep(command, args=None, image=V3, grace=None):
    c = {"name": "mlflow", "image": image, "command": command}
    if args is not None:
        c["args"] = args
    spec = {"containers": [c]}
    if grace is not None:
        spec["terminationGracePeriodSeconds"] = grace
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "mlflow-deployment", "namespace": "ns"},
            "spec": {"selector": {"matchLabels": {"app": "m"}},
                     "template": {"metadata": {"labels": {"app": "m"}}, "spec": spec}}}


def script_after(d, targets=None):
    r = compliance(d, ONLY_EXEC if targets is None else targets)
    c = r["after"]
    return r, (c.get("args") or c.get("command"))


# ------------------------------------------------------------------------------------------- which get exec
@pytest.mark.parametrize("script, expected", [
    (SERVER, f"exec {SERVER}"),
    (f"  {SERVER}\n", f"  exec {SERVER}\n"),
    (f"MLFLOW_X=1 {SERVER}", f"MLFLOW_X=1 exec {SERVER}"),  # dash: assignments before exec are exported to it
    (f"{SERVER} > /tmp/log 2>&1", f"exec {SERVER} > /tmp/log 2>&1"),
    (f"/opt/venv/bin/{SERVER}", f"exec /opt/venv/bin/{SERVER}"),
    ("python -m mlflow server --port=5000", "exec python -m mlflow server --port=5000"),
    (f"tini -- {SERVER}", f"exec tini -- {SERVER}"),
    (SEED_BEFORE, "exec " + SEED_BEFORE),
    (f"{SERVER};", f"exec {SERVER};"),
])
def test_one_simple_command_gets_exec(script, expected):
    r, after = script_after(dep(["/bin/sh", "-c"], [script]))
    assert after == [expected]
    assert r["compliant"] is False
    assert [c for c in r["changes"] if "exec" in c][0].startswith("args[0]: `exec ` before the mlflow command")


def test_the_patch_is_that_one_element_guarded_and_reversible():
    d = dep(["/bin/sh", "-c"], [SERVER], grace=60)
    r = compliance(d, ONLY_EXEC)
    ops = [o for o in r["patch"] if "/containers/" in o["path"]]
    assert ops == [
        {"op": "test", "path": "/spec/template/spec/containers/0/name", "value": "mlflow"},
        {"op": "test", "path": "/spec/template/spec/containers/0/args/0", "value": SERVER},
        {"op": "replace", "path": "/spec/template/spec/containers/0/args/0", "value": f"exec {SERVER}"},
    ]
    assert {"op": "replace", "path": "/spec/template/spec/containers/0/args/0", "value": SERVER} in r["rollback_patch"]
    assert "60 s grace period" in r["changes"][0]


def test_script_in_command_is_patched_in_command():
    r = compliance(dep(["sh", "-ec", SERVER]), ONLY_EXEC)
    assert {"op": "replace", "path": "/spec/template/spec/containers/0/command/2", "value": f"exec {SERVER}"} in r["patch"]


def test_idempotent_and_other_edits_compose():
    d = dep(["/bin/sh", "-c"], [SEED_BEFORE])
    r = compliance(d, {"shell_exec": True, "probes": False, "enable_service_links": None, "allowed_hosts": None})
    after = r["after"]["args"][0]
    assert after.startswith("exec mlflow server \\\n")
    assert "--static-prefix" not in after and "--timeout 300" in after and "--workers=4" in after
    d["spec"]["template"]["spec"]["containers"][0]["args"] = [after]
    again = compliance(d, {"shell_exec": True, "probes": False, "enable_service_links": None, "allowed_hosts": None})
    assert again["compliant"] is True, again["changes"]


def test_off_by_default_in_the_patch_module():
    r, after = script_after(dep(["/bin/sh", "-c"], [SERVER]), dict(ONLY_EXEC, shell_exec=False))
    assert r["compliant"] is True and after == [SERVER]


# ------------------------------------------------------------------------------------------- reported only
@pytest.mark.parametrize("script, why", [
    (f"mlflow db upgrade sqlite:///x.db && {SERVER}", "more than one command (&&)"),
    (f"cd /mlflow; {SERVER}", "more than one command (;)"),
    (f"pip install boto3\n{SERVER}", "more than one command (newline)"),
    (f"{SERVER} | tee /tmp/log", "more than one command (|)"),
    (f"{SERVER} &\nwait", "more than one command (&)"),
])
def test_several_commands_are_reported_never_rewritten(script, why):
    d = dep(["/bin/sh", "-c"], [script])
    s = server_settings(d)
    assert s["shell_wrapper"]["fixable"] is False
    assert why in s["shell_wrapper"]["reason"]
    r, after = script_after(d)
    assert r["compliant"] is True and after == [script]
    assert any("is not rewritten" in w for w in r["warnings"])
    step = settings_findings(s, min_workers=1)
    f = [f for f in step["findings"] if f["code"] == "SHELL_WRAPPER_NO_EXEC"][0]
    assert f["evidence"]["fixable"] is False and why in f["evidence"]["next_step"]
    p = plan([step], s)
    assert not p["patch"] and p["report_only"][0]["code"] == "SHELL_WRAPPER_NO_EXEC"
    assert why in p["report_only"][0]["next_step"]


def test_mlflow_2_is_reported_only():
    """MLflow 2.x's CLI does not pass SIGTERM on to gunicorn (docs/benchmarks.md): exec alone would not help."""
    s = server_settings(dep(["/bin/sh", "-c"], [SERVER], image=V2))
    assert s["shell_wrapper"]["fixable"] is False and "MLflow 2.22.5" in s["shell_wrapper"]["reason"]


# ------------------------------------------------------------------------------------------- no finding
@pytest.mark.parametrize("command, args", [
    (["mlflow", "server", "--port=5000"], None),
    (["/bin/sh", "-c"], [f"exec {SERVER}"]),
    (["/bin/sh", "-c"], [f"FOO=1 exec {SERVER}"]),
    (["/bin/sh", "-c"], [f"cd /x && exec {SERVER}"]),
    (["/bin/bash", "-c"], [SERVER]),  # bash execs a lone (last) command itself
    (["bash", "-c"], [f"cd /x && {SERVER}"]),
])
def test_no_shell_stays_pid_1(command, args):
    s = server_settings(dep(command, args))
    assert s["shell_wrapper"] is None
    assert not [f for f in settings_findings(s, min_workers=1)["findings"] if f["code"] == "SHELL_WRAPPER_NO_EXEC"]


def test_finding_names_the_grace_period_and_the_plan_patches_it():
    s = server_settings(dep(["/bin/sh", "-c"], [SERVER], grace=60))
    step = settings_findings(s, min_workers=1)
    f = [f for f in step["findings"] if f["code"] == "SHELL_WRAPPER_NO_EXEC"][0]
    assert f["severity"] == "warning" and f["step"] == "settings"
    assert "grace period (60 s)" in f["message"] and "`/bin/sh -c` runs mlflow server without exec (args[0])" in f["message"]
    p = plan([step], s)
    assert p["patch_targets"] == ["shell_exec"] and p["patch_vars"]["patch_shell_exec"] is True
    assert p["actions"][0]["reason"] == ["SHELL_WRAPPER_NO_EXEC"]
    # verify_remediations without patch: reported
    p = plan([step], s, enabled=["restart"])
    assert not p["patch"] and p["report_only"][0]["code"] == "SHELL_WRAPPER_NO_EXEC"
    # Helm-managed: not patched, the chart value named
    p = plan([step], s, helm={"release": "r", "changes": []})
    assert not p["patch"] and "exec before mlflow server" in p["findings"][0]["message"]


def test_default_grace_period_is_30():
    s = server_settings(dep(["/bin/sh", "-c"], [SERVER]))
    assert s["grace_period"] == 30
    assert "grace period (30 s)" in settings_findings(s, min_workers=1)["findings"][0]["message"]


def test_bad_shell_exec_target_is_named():
    with pytest.raises(Exception, match="targets.shell_exec: expected true, false or null"):
        compliance(dep(["/bin/sh", "-c"], [SERVER]), dict(ONLY_EXEC, shell_exec="yes"))
