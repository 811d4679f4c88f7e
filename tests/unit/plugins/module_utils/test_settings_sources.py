"""Settings that do not live in the mlflow command line (issue 14 item 5): GUNICORN_CMD_ARGS, UVICORN_<OPTION>,
MLflow's MLFLOW_* variables, ConfigMap-sourced env. The effective value is the real one and says where it comes
from; after the patch no source contradicts the fix (a literal is edited, a ConfigMap is reported).

The precedence (command line over GUNICORN_CMD_ARGS / UVICORN_*, mlflow's own -w/--workers over both) is checked
against the real gunicorn and uvicorn in tests/integration/test_settings_real_servers.py."""

from __future__ import annotations

import json

import pytest
from ansible_collections.asgard.mlflow.plugins.module_utils._compliance import compliance
from ansible_collections.asgard.mlflow.plugins.module_utils._settings import configmap_names, server_settings

PW = "S3cr3t-pw"
TARGETS = {"probes": False, "enable_service_links": None}  # only the server's settings


def dep(command, env=None, env_from=None, image="ghcr.io/mlflow/mlflow:v3.17.2"):
    c = {"name": "mlflow", "image": image, "command": command}
    if env is not None:
        c["env"] = env
    if env_from is not None:
        c["envFrom"] = env_from
    return {"kind": "Deployment", "metadata": {"name": "m", "namespace": "ns"},
            "spec": {"template": {"metadata": {}, "spec": {"containers": [c]}}}}


def cm(name, **data):
    return {"kind": "ConfigMap", "metadata": {"name": name}, "data": data}


def ref(name, key):
    return {"valueFrom": {"configMapKeyRef": {"name": name, "key": key}}}


def container(result):
    """The container after applying the result's JSON patch (the replace/add operations on it)."""
    out = {}
    for op in result["patch"]:
        if op["op"] in ("replace", "add") and "/containers/" in op["path"]:
            out[op["path"].rsplit("/", 1)[1]] = op["value"]
    return out


GUNICORN = ["mlflow", "server", "--port=5000", "--workers=4", "--gunicorn-opts=--workers 2"]


# ------------------------------------------------------------------------------------------------ GUNICORN_CMD_ARGS
def test_gunicorn_cmd_args_timeout_is_the_real_value_and_is_edited_where_it_lives():
    d = dep(GUNICORN, env=[{"name": "GUNICORN_CMD_ARGS", "value": "--timeout 60"}])
    s = server_settings(d)
    assert s["gunicorn"]["timeout"] == 60  # the issue: verify reported gunicorn's default 30
    assert s["gunicorn"]["sources"]["timeout"] == {"value": 60, "source": "env", "where": "env[0] GUNICORN_CMD_ARGS"}
    r = compliance(d, TARGETS)
    c = container(r)
    assert c["env"] == [{"name": "GUNICORN_CMD_ARGS", "value": "--timeout 300"}]
    assert c["command"][-1] == "--gunicorn-opts=--workers 4 --keep-alive 5"
    assert "env GUNICORN_CMD_ARGS: '--timeout 60' -> '--timeout 300'" in r["changes"]
    assert r["after_settings"]["gunicorn"]["timeout"] == 300
    assert r["after_settings"]["contradictions"] == []


def test_gunicorn_opts_win_over_gunicorn_cmd_args_and_both_agree_after_the_patch():
    d = dep(GUNICORN[:-1] + ["--gunicorn-opts=--timeout 120"],
            env=[{"name": "GUNICORN_CMD_ARGS", "value": "--timeout 60 --keep-alive 7"}])
    s = server_settings(d)
    src = s["gunicorn"]["sources"]["timeout"]
    assert (src["value"], src["source"], src["where"]) == (120, "flag", "command[4]")
    assert src["overridden"] == [{"value": 60, "source": "env", "where": "env[0] GUNICORN_CMD_ARGS"}]
    assert s["gunicorn"]["keep_alive"] == 7
    assert {(x["setting"], x["value"], x["effective"]) for x in s["contradictions"]} == {("gunicorn.timeout", 60, 120)}
    r = compliance(d, TARGETS)
    c = container(r)
    assert c["command"][-1] == "--gunicorn-opts=--timeout 300"
    # keep-alive lives only in GUNICORN_CMD_ARGS: edited there; the overridden timeout there agrees too
    assert c["env"] == [{"name": "GUNICORN_CMD_ARGS", "value": "--timeout 300 --keep-alive 5"}]
    assert r["after_settings"]["contradictions"] == []
    # idempotent
    after = json.loads(json.dumps(d))
    after["spec"]["template"]["spec"]["containers"][0].update(c)
    assert compliance(after, TARGETS)["compliant"] is True


@pytest.mark.parametrize("how", ["configMapKeyRef", "envFrom"])
def test_gunicorn_cmd_args_from_a_configmap_is_overridden_on_the_command_line_and_reported(how):
    if how == "envFrom":
        d = dep(GUNICORN, env_from=[{"configMapRef": {"name": "gcfg"}}])
        where = "envFrom[0] configmap gcfg"
    else:
        d = dep(GUNICORN, env=[{"name": "GUNICORN_CMD_ARGS", **ref("gcfg", "args")}])
        where = "env[0] GUNICORN_CMD_ARGS (configmap gcfg/args)"
    cms = [cm("gcfg", GUNICORN_CMD_ARGS="--timeout 60", args="--timeout 60")]
    s = server_settings(d, cms)
    assert s["gunicorn"]["sources"]["timeout"] == {"value": 60, "source": "configmap", "where": where}
    r = compliance(d, TARGETS, cms)
    assert container(r)["command"][-1] == "--gunicorn-opts=--workers 4 --timeout 300 --keep-alive 5"
    assert "env" not in container(r)  # a ConfigMap cannot be edited through the Deployment
    assert r["after_settings"]["gunicorn"]["timeout"] == 300
    left = r["after_settings"]["contradictions"]
    assert [(x["setting"], x["value"], x["where"], x["effective"]) for x in left] == [("gunicorn.timeout", 60, where, 300)]
    assert any("GUNICORN_CMD_ARGS" in w and "--timeout 60" in w and "cannot be edited here" in w for w in r["warnings"])


def test_gunicorn_cmd_args_from_a_secret_cannot_be_read_so_every_target_is_written_out():
    d = dep(GUNICORN, env=[{"name": "GUNICORN_CMD_ARGS", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}])
    s = server_settings(d)
    assert any("GUNICORN_CMD_ARGS comes from env[0] GUNICORN_CMD_ARGS (secret s/k)" in w for w in s["warnings"])
    r = compliance(d, dict(TARGETS, gunicorn_keep_alive=2))
    # keep-alive 2 is gunicorn's default, but the Secret might say otherwise: the command line says it explicitly
    assert container(r)["command"][-1] == "--gunicorn-opts=--workers 4 --timeout 300 --keep-alive 2"


def test_workers_in_gunicorn_cmd_args_are_overridden_by_mlflow_and_aligned():
    d = dep(GUNICORN[:-1] + ["--gunicorn-opts=--log-level info"],
            env=[{"name": "GUNICORN_CMD_ARGS", "value": "--workers 3 --timeout 300 --keep-alive 5"}])
    s = server_settings(d)
    assert s["gunicorn"]["workers"] == 3 and s["gunicorn"]["effective_workers"] == 4
    assert [(x["setting"], x["value"], x["effective"]) for x in s["contradictions"]] == [("gunicorn.workers", 3, 4)]
    r = compliance(d, TARGETS)
    assert container(r)["env"] == [{"name": "GUNICORN_CMD_ARGS", "value": "--workers 4 --timeout 300 --keep-alive 5"}]
    assert r["after_settings"]["contradictions"] == []


def test_gunicorn_cmd_args_is_ignored_when_uvicorn_runs():
    d = dep(["mlflow", "server", "--port=5000", "--workers=4"], env=[{"name": "GUNICORN_CMD_ARGS", "value": "--timeout 1"}])
    s = server_settings(d)
    assert s["server"] == "uvicorn" and s["gunicorn"] is None and s["contradictions"] == []
    assert compliance(d, TARGETS)["compliant"] is True


def test_gunicorn_cmd_args_credentials_are_redacted():
    d = dep(GUNICORN, env=[{"name": "GUNICORN_CMD_ARGS", "value": f"--timeout 60 --env DB_PASSWORD={PW}"}])
    s = server_settings(d)
    assert PW not in json.dumps(s)
    r = compliance(d, TARGETS)
    assert PW not in json.dumps({k: v for k, v in r.items() if k not in ("patch", "rollback_patch")})
    assert r["sensitive"] is True


# ------------------------------------------------------------------------------------------------ uvicorn
@pytest.mark.parametrize(("env", "env_from", "cms", "edited"), [
    ([{"name": "UVICORN_TIMEOUT_KEEP_ALIVE", "value": "2"}], None, [], True),
    (None, [{"configMapRef": {"name": "u"}}], [cm("u", UVICORN_TIMEOUT_KEEP_ALIVE="2")], False),
])
def test_uvicorn_reads_uvicorn_env_options(env, env_from, cms, edited):
    d = dep(["mlflow", "server", "--port=5000", "--workers=4"], env=env, env_from=env_from)
    s = server_settings(d, cms)
    assert s["server"] == "uvicorn" and s["uvicorn"]["timeout_keep_alive"] == 2
    assert s["uvicorn"]["sources"]["timeout_keep_alive"]["source"] == ("env" if edited else "configmap")
    r = compliance(d, TARGETS, cms)
    c = container(r)
    if edited:
        assert c["env"] == [{"name": "UVICORN_TIMEOUT_KEEP_ALIVE", "value": "5"}] and "command" not in c
    else:  # 5 is uvicorn's default, but the ConfigMap says 2: the command line says 5 and wins
        assert c["command"] == ["mlflow", "server", "--port=5000", "--workers=4", "--uvicorn-opts=--timeout-keep-alive 5"]
        assert any("UVICORN_TIMEOUT_KEEP_ALIVE" in w for w in r["warnings"])
    assert r["after_settings"]["uvicorn"]["timeout_keep_alive"] == 5


# ------------------------------------------------------------------------------------------------ MLFLOW_* and envFrom
@pytest.mark.parametrize(("env", "env_from", "workers", "where"), [
    ([{"name": "MLFLOW_WORKERS", "value": "2"}], None, 2, "env[0] MLFLOW_WORKERS"),
    (None, [{"configMapRef": {"name": "a"}}, {"configMapRef": {"name": "b"}}], 3, "envFrom[1] configmap b"),
    (None, [{"configMapRef": {"name": "a"}}, {"prefix": "X_", "configMapRef": {"name": "b"}}], 1,
     "envFrom[0] configmap a"),
    ([{"name": "MLFLOW_WORKERS", "value": "5"}], [{"configMapRef": {"name": "b"}}], 5, "env[0] MLFLOW_WORKERS"),
    ([{"name": "MLFLOW_WORKERS", **ref("a", "MLFLOW_WORKERS")}], None, 1,
     "env[0] MLFLOW_WORKERS (configmap a/MLFLOW_WORKERS)"),
])
def test_mlflow_env_and_configmap_precedence(env, env_from, workers, where):
    """Kubernetes: env wins over envFrom, the last envFrom source holding a key wins (a prefix renames keys)."""
    d = dep(["mlflow", "server", "--port=5000"], env=env, env_from=env_from)
    cms = [cm("a", MLFLOW_WORKERS="1"), cm("b", MLFLOW_WORKERS="3")]
    s = server_settings(d, cms)
    assert (s["workers"], s["sources"]["workers"]["where"]) == (workers, where)


def test_mlflow_static_prefix_env_is_removed_by_the_seed_fix():
    d = dep(["mlflow", "server", "--port=5000", "--workers=4"],
            env=[{"name": "MLFLOW_STATIC_PREFIX", "value": "/static"}, {"name": "HOME", "value": "/h"}])
    s = server_settings(d)
    assert s["static_prefix"] == "/static" and s["sources"]["static_prefix"]["source"] == "env"
    r = compliance(d, TARGETS)
    assert container(r)["env"] == [{"name": "HOME", "value": "/h"}]
    assert r["after_settings"]["static_prefix"] is None


def test_configmap_names_in_order_once_from_env_refs_and_env_from():
    """The one list of ConfigMaps a container's env comes from (verify reads them, the patch role edits them)."""
    containers = [
        {"name": "mlflow", "env": [{"name": "A", "valueFrom": {"configMapKeyRef": {"name": "server-env", "key": "a"}}},
                                   {"name": "B", "value": "literal"},
                                   {"name": "C", "valueFrom": {"secretKeyRef": {"name": "s", "key": "c"}}}],
         "envFrom": [{"configMapRef": {"name": "gunicorn"}}, {"secretRef": {"name": "s"}},
                     {"configMapRef": {"name": "server-env"}}]},
        {"name": "init", "envFrom": [{"configMapRef": {"name": "init-env"}}]},
    ]
    assert configmap_names(containers) == ["server-env", "gunicorn", "init-env"]
    assert configmap_names(containers[:1]) == ["server-env", "gunicorn"]
    assert configmap_names([]) == [] and configmap_names(None) == []
