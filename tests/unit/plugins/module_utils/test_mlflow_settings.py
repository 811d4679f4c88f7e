"""Unit tests of the MLflow server-settings parser/renderer (plugins/module_utils/_settings.py, _compliance.py).

Every case asserts the exact rendered result. No mocks: the code under test is pure Python and
works on plain Deployment dicts as the Kubernetes API returns them.
"""

from __future__ import annotations

import copy
import itertools
import json
import pathlib
import sys

import pytest

_COLLECTIONS = pathlib.Path(__file__).resolve().parents[4] / ".collections"
if str(_COLLECTIONS) not in sys.path:
    sys.path.insert(0, str(_COLLECTIONS))

from ansible_collections.asgard.mlflow.plugins.module_utils._compliance import compliance  # noqa: E402
from ansible_collections.asgard.mlflow.plugins.module_utils._errors import MlflowSettingsError  # noqa: E402
from ansible_collections.asgard.mlflow.plugins.module_utils._mlflow_rules import (  # noqa: E402
    FLAG_TO_NAME,
    version_from_image,
)
from ansible_collections.asgard.mlflow.plugins.module_utils._settings import server_settings  # noqa: E402
from ansible_collections.asgard.mlflow.plugins.module_utils._shell import split_opts  # noqa: E402

# The seed incident's "Before" and "After" containers' sh -c scripts, exactly as the incident report shows them
# (backslash continuations); shared with tests/integration/test_patch_role.py.
FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures"
SEED_BEFORE = (FIXTURES / "seed-before.txt").read_text()
SEED_AFTER = (FIXTURES / "seed-after.txt").read_text()
HOSTS = [
    "localhost:*",
    "127.0.0.1:*",
    "mlflow-service:5000",
    "mlflow-service.asgard:5000",
    "mlflow-service.asgard.svc:5000",
    "mlflow-service.asgard.svc.cluster.local:5000",
    "10.*",
]
# targets that only touch the command line (no probes, no pod spec)
CMD_ONLY = {"probes": False, "enable_service_links": None}
ALL_OFF = {
    "gunicorn_timeout": None,
    "gunicorn_keep_alive": None,
    "uvicorn_timeout_keep_alive": None,
    "workers": None,
    "static_prefix": None,
    "allowed_hosts": None,
    "port": None,
    "probes": False,
    "enable_service_links": None,
}


def deployment(containers, image=None, **pod):
    if isinstance(containers, dict):
        containers = [containers]
    for c in containers:
        c.setdefault("image", image or "ghcr.io/mlflow/mlflow:v3.17.2")
    spec = {"containers": containers}
    spec.update(pod)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "mlflow-deployment", "namespace": "asgard"},
        "spec": {
            "selector": {"matchLabels": {"app": "mlflow"}},
            "template": {"metadata": {"labels": {"app": "mlflow"}}, "spec": spec},
        },
    }


def seed(**extra):
    c = {
        "name": "mlflow",
        "command": ["/bin/sh", "-c"],
        "args": [SEED_BEFORE],
        "env": [
            {"name": "MLFLOW_BACKEND_STORE_URI", "value": "sqlite:////mlflow/mlflow.db"},
            {"name": "MLFLOW_DEFAULT_ARTIFACT_ROOT", "value": "mlflow-artifacts:/"},
        ],
    }
    c.update(extra)
    return deployment(c)


def json_patch(doc, ops):
    """A small RFC 6902 applier (add/replace/remove/test) to check the patches the filter returns."""
    doc = copy.deepcopy(doc)
    for op in ops:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        parent = doc
        for part in parts[:-1]:
            parent = parent[int(part)] if isinstance(parent, list) else parent[part]
        last = parts[-1]
        if isinstance(parent, list):
            idx = len(parent) if last == "-" else int(last)
            if op["op"] == "add":
                parent.insert(idx, copy.deepcopy(op["value"]))
            elif op["op"] == "replace":
                parent[idx] = copy.deepcopy(op["value"])
            elif op["op"] == "remove":
                del parent[idx]
            elif op["op"] == "test":
                assert parent[idx] == op["value"], op
            continue
        if op["op"] in ("add", "replace"):
            if op["op"] == "replace":
                assert last in parent, op
            parent[last] = copy.deepcopy(op["value"])
        elif op["op"] == "remove":
            del parent[last]
        elif op["op"] == "test":
            assert parent.get(last) == op["value"], op
    return doc


def container_after(dep, targets=None, configmaps=None):
    result = compliance(dep, targets, configmaps)
    patched = json_patch(dep, result["patch"])
    idx = result["container_index"]
    return result, patched, patched["spec"]["template"]["spec"]["containers"][idx]


# ------------------------------------------------------------------------------------------------
# The seed incident
# ------------------------------------------------------------------------------------------------
def test_seed_before_settings_are_read_with_their_locations():
    s = server_settings(seed())
    assert s["container"] == "mlflow"
    assert s["form"] == "script"
    assert s["script_location"] == "args[0]"
    assert s["mlflow_version"] == "3.17.2"
    assert s["server"] == "gunicorn"
    assert s["sources"]["gunicorn_opts"] == {
        "value": "--timeout 120 --workers 2 --worker-class sync",
        "source": "flag",
        "where": "args[0] script line 7 chars 187-250",
    }
    assert s["sources"]["static_prefix"]["value"] == "/static"
    assert s["sources"]["backend_store_uri"]["resolved"] == "sqlite:////mlflow/mlflow.db"
    assert s["sources"]["backend_store_uri"]["shell_expansion"] is True
    opts = "args[0] script line 7 chars 187-250"
    assert s["gunicorn"] == {
        "timeout": 120,
        "workers": 2,
        "worker_class": "sync",
        "keep_alive": 2,
        "effective_workers": 4,
        "sources": {
            "timeout": {"value": 120, "source": "flag", "where": opts},
            "workers": {"value": 2, "source": "flag", "where": opts},
            "worker_class": {"value": "sync", "source": "flag", "where": opts},
            "keep_alive": {"value": 2, "source": "default", "where": "gunicorn's default"},
        },
    }
    # mlflow's own --workers (default 4) overrides the 2 of --gunicorn-opts: the configuration contradicts itself
    assert s["contradictions"] == [{"setting": "gunicorn.workers", "value": 2, "source": "flag", "where": opts,
                                    "effective": 4, "effective_where": "mlflow server --workers (its default)"}]
    assert s["health_path"] == "/static/health"
    assert s["root_path"] == "/static/"
    assert s["allowed_hosts"] == "default"


def test_seed_before_is_patched_to_the_seed_after_exactly():
    dep = seed()
    result, patched, c = container_after(dep, {"allowed_hosts": HOSTS})
    assert not result["compliant"]
    assert c["command"] == ["/bin/sh", "-c"]
    assert c["args"] == [SEED_AFTER]
    assert c["env"][:2] == dep["spec"]["template"]["spec"]["containers"][0]["env"]
    assert c["env"][2] == {"name": "MLFLOW_SERVER_ALLOWED_HOSTS", "value": ",".join(HOSTS)}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"] == {"path": "/health", "port": 5000, "scheme": "HTTP"}
    # startup window 180 s (MLflow starts in 5-14 s; migrations can take longer), lenient liveness
    assert c["startupProbe"]["failureThreshold"] * c["startupProbe"]["periodSeconds"] == 180
    assert c["livenessProbe"]["failureThreshold"] * c["livenessProbe"]["periodSeconds"] == 120
    assert c["livenessProbe"]["timeoutSeconds"] == 10
    pod = patched["spec"]["template"]
    assert pod["spec"]["enableServiceLinks"] is False
    assert pod["metadata"]["annotations"]["asgard.mlflow/patch"].startswith(
        "timeout=300;workers=4;prefix=none;port=5000;sha="
    )
    assert pod["metadata"]["labels"] == {"app": "mlflow"}
    assert result["changes"][:3] == [
        "--workers: unset -> 4 (flag added)",
        "--static-prefix: /static -> removed (args[0] script line 8 chars 255-278)",
        "--gunicorn-opts: '--timeout 120 --workers 2 --worker-class sync' -> "
        "'--timeout 300 --workers 4 --worker-class sync --keep-alive 5' (args[0] script line 7 chars 187-250)",
    ]
    after = result["after_settings"]
    assert after["gunicorn"]["timeout"] == 300
    assert after["gunicorn"]["keep_alive"] == 5
    assert after["workers"] == 4
    assert after["static_prefix"] is None
    assert result["health_path"] == "/health"


def test_seed_after_rerun_is_compliant_and_has_no_patch():
    _result, patched, _c = container_after(seed(), {"allowed_hosts": HOSTS})
    again = compliance(patched, {"allowed_hosts": HOSTS})
    assert again["compliant"] is True
    assert again["changes"] == []
    assert again["patch"] == []
    assert again["before"] == again["after"]


@pytest.mark.parametrize("annotations", [None, {}, {"keep": "me"}, {"asgard.mlflow/patch": "older"}])
def test_rollback_patch_restores_the_exact_previous_template(annotations):
    dep = seed()
    if annotations is not None:
        dep["spec"]["template"]["metadata"]["annotations"] = annotations
    dep["spec"]["template"]["spec"]["containers"][0]["readinessProbe"] = {"tcpSocket": {"port": 5000}}
    result = compliance(dep, {"allowed_hosts": HOSTS})
    patched = json_patch(dep, result["patch"])
    assert patched != dep
    assert json_patch(patched, result["rollback_patch"]) == dep


def test_patch_ops_are_guarded_and_address_the_container():
    result = compliance(seed(), CMD_ONLY)
    ops = result["patch"]
    assert ops[0] == {"op": "test", "path": "/spec/template/spec/containers/0/name", "value": "mlflow"}
    # the script is edited in place: only that one element of args is tested and replaced
    assert {"op": "test", "path": "/spec/template/spec/containers/0/args/0", "value": SEED_BEFORE} in ops
    assert {"op": "replace", "path": "/spec/template/spec/containers/0/args/0", "value": SEED_AFTER} in ops
    assert not [op for op in ops if op["path"].endswith("/args")]
    # command was not touched, so it is not in the patch
    assert not [op for op in ops if op["path"].endswith("/command")]


# ------------------------------------------------------------------------------------------------
# Corpus of real-world forms, exact rendered results
# ------------------------------------------------------------------------------------------------
CORPUS = [
    pytest.param(
        {"command": ["mlflow", "server"], "args": ["--host=0.0.0.0", "--gunicorn-opts=--timeout 120 --workers 2"]},
        {"command": ["mlflow", "server"], "args": ["--host=0.0.0.0", "--gunicorn-opts=--timeout 300 --workers 4 --keep-alive 5", "--port=5000", "--workers=4"]},
        id="list-eq-form",
    ),
    pytest.param(
        {"command": ["mlflow"], "args": ["server", "--host", "0.0.0.0", "--gunicorn-opts", "--timeout 120 -k gthread --threads 4", "--static-prefix", "/static"]},
        {"command": ["mlflow"], "args": ["server", "--host", "0.0.0.0", "--gunicorn-opts", "--timeout 300 -k gthread --threads 4 --keep-alive 5", "--port", "5000", "--workers", "4"]},
        id="list-split-form",
    ),
    pytest.param(
        {"command": ["python", "-m", "mlflow", "server", "--port", "5000", "--workers", "2"]},
        {"command": ["python", "-m", "mlflow", "server", "--port", "5000", "--workers", "4"]},
        id="python-m-mlflow-uvicorn",
    ),
    pytest.param(
        {"command": ["/opt/venv/bin/mlflow", "server", "-h", "0.0.0.0", "-p", "5000", "-w", "2"]},
        {"command": ["/opt/venv/bin/mlflow", "server", "-h", "0.0.0.0", "-p", "5000", "-w", "4"]},
        id="venv-path-short-flags",
    ),
    pytest.param(
        {"command": ["tini", "--", "mlflow", "server", "--port=8080"]},
        {"command": ["tini", "--", "mlflow", "server", "--port=5000", "--workers=4"]},
        id="tini-wrapper",
    ),
    pytest.param(
        {"command": ["/bin/sh", "-c", "mlflow server --host 0.0.0.0 --gunicorn-opts '--timeout 120 --workers 2'"]},
        {"command": ["/bin/sh", "-c", "mlflow server --host 0.0.0.0 --gunicorn-opts '--timeout 300 --workers 4 --keep-alive 5' --port 5000 --workers 4"]},
        id="sh-c-single-quoted-split",
    ),
    pytest.param(
        {"command": ["bash", "-c"], "args": ["exec mlflow server --gunicorn-opts='--timeout=120' --port=5000"]},
        {"command": ["bash", "-c"], "args": ["exec mlflow server --gunicorn-opts='--timeout=300 --keep-alive 5' --port=5000 --workers=4"]},
        id="bash-c-single-quoted-eq-inside",
    ),
    pytest.param(
        {"command": ["sh", "-ec"], "args": ['set -x\nmlflow db upgrade "$MLFLOW_BACKEND_STORE_URI" && \\\n  exec mlflow server --port=5000 --workers=2 --gunicorn-opts="--timeout 600 --keep-alive 5" 2>&1 | tee /tmp/log\n']},
        {"command": ["sh", "-ec"], "args": ['set -x\nmlflow db upgrade "$MLFLOW_BACKEND_STORE_URI" && \\\n  exec mlflow server --port=5000 --workers=4 --gunicorn-opts="--timeout 300 --keep-alive 5" 2>&1 | tee /tmp/log\n']},
        id="sh-ec-db-upgrade-and-redirect",
    ),
    pytest.param(
        {"command": ["/bin/bash", "-o", "pipefail", "-c", "echo starting;\n    mlflow server \\\n      --static-prefix=/mlflow \\\n      --port=5000\n"]},
        {"command": ["/bin/bash", "-o", "pipefail", "-c", "echo starting;\n    mlflow server \\\n      --port=5000 \\\n      --workers=4\n"]},
        id="bash-pipefail-multiline-uvicorn",
    ),
    pytest.param(
        {"command": ["sh", "-c", 'mlflow server --gunicorn-opts "--timeout=120 --worker-class \'sync\'" --port=5000 --workers=4'], "env": []},
        {"command": ["sh", "-c", 'mlflow server --gunicorn-opts "--timeout=300 --worker-class \'sync\' --keep-alive 5" --port=5000 --workers=4'], "env": []},
        id="double-quoted-split-nested-single",
    ),
]


@pytest.mark.parametrize(("before", "after"), CORPUS)
def test_corpus_renders_exactly(before, after):
    dep = deployment(dict(before, name="mlflow"))
    result, _patched, c = container_after(dep, CMD_ONLY)
    assert {k: c.get(k) for k in after} == after
    assert not result["compliant"]
    # and the result is compliant on a second pass
    again = compliance(_patched, CMD_ONLY)
    assert again["compliant"], again["changes"]


def test_unchanged_bytes_around_edits_are_identical():
    script = "  set -e  # keep me\n\tmlflow   server  --port=5000\t--gunicorn-opts=\"--timeout  120\"   --workers=4 ; echo done  \n"
    dep = deployment({"name": "m", "command": ["sh", "-c", script]})
    _r, _p, c = container_after(dep, dict(CMD_ONLY, gunicorn_keep_alive=None))
    assert c["command"][2] == script.replace("--timeout  120", "--timeout  300")


# ------------------------------------------------------------------------------------------------
# Env vars, ConfigMaps, Secrets
# ------------------------------------------------------------------------------------------------
def test_env_only_settings_are_edited_in_place():
    env = [
        {"name": "MLFLOW_GUNICORN_OPTS", "value": "--timeout 120 --workers 2"},
        {"name": "MLFLOW_WORKERS", "value": "2"},
        {"name": "MLFLOW_STATIC_PREFIX", "value": "/static"},
        {"name": "OTHER", "value": "x"},
    ]
    dep = deployment({"name": "mlflow", "command": ["mlflow", "server", "--port", "5000"], "env": copy.deepcopy(env)})
    s = server_settings(dep)
    assert s["server"] == "gunicorn"
    assert s["sources"]["workers"] == {"value": "2", "source": "env", "where": "env[1] MLFLOW_WORKERS"}
    assert s["static_prefix"] == "/static"
    result, _p, c = container_after(dep, CMD_ONLY)
    assert c["command"] == ["mlflow", "server", "--port", "5000"]
    assert c["env"] == [
        {"name": "MLFLOW_GUNICORN_OPTS", "value": "--timeout 300 --workers 4 --keep-alive 5"},
        {"name": "MLFLOW_WORKERS", "value": "4"},
        {"name": "OTHER", "value": "x"},
    ]
    assert "env MLFLOW_WORKERS: 2 -> 4" in result["changes"]


def test_flags_win_over_env():
    dep = deployment(
        {
            "name": "mlflow",
            "command": ["mlflow", "server", "--workers=3", "--port=5000"],
            "env": [{"name": "MLFLOW_WORKERS", "value": "8"}, {"name": "MLFLOW_PORT", "value": "tcp://10.0.0.1:5000"}],
        }
    )
    s = server_settings(dep)
    assert s["workers"] == 3
    assert s["port"] == 5000
    assert [(x["setting"], x["value"], x["where"], x["effective"]) for x in s["contradictions"]] == [
        ("workers", "8", "env[0] MLFLOW_WORKERS", "3"),
        ("port", "tcp://10.0.0.1:5000", "env[1] MLFLOW_PORT", "5000"),
    ]
    result, _p, c = container_after(dep, CMD_ONLY)
    assert c["command"] == ["mlflow", "server", "--workers=4", "--port=5000"]
    # issue 14 item 5: after the patch no source contradicts the fix, so the overridden env values agree too
    assert c["env"] == [{"name": "MLFLOW_WORKERS", "value": "4"}, {"name": "MLFLOW_PORT", "value": "5000"}]
    assert result["after_settings"]["contradictions"] == []


def test_empty_env_counts_as_unset_for_the_server_choice():
    dep = deployment({"name": "m", "command": ["mlflow", "server"], "env": [{"name": "MLFLOW_GUNICORN_OPTS", "value": ""}]})
    assert server_settings(dep)["server"] == "uvicorn"


def test_empty_gunicorn_opts_flag_selects_gunicorn():
    dep = deployment({"name": "m", "command": ["mlflow", "server", "--gunicorn-opts="]})
    assert server_settings(dep)["server"] == "gunicorn"
    _r, _p, c = container_after(dep, CMD_ONLY)
    assert c["command"] == ["mlflow", "server", "--gunicorn-opts=--timeout 300 --keep-alive 5", "--port=5000", "--workers=4"]


def test_configmap_env_is_resolved_and_overridden_by_a_flag():
    env = [{"name": "MLFLOW_GUNICORN_OPTS", "valueFrom": {"configMapKeyRef": {"name": "mlflow-cfg", "key": "gopts"}}}]
    cm = {"metadata": {"name": "mlflow-cfg"}, "data": {"gopts": "--timeout 120"}}
    dep = deployment({"name": "mlflow", "command": ["mlflow", "server", "--port=5000", "--workers=4"], "env": env})
    s = server_settings(dep, [cm])
    assert s["sources"]["gunicorn_opts"] == {
        "value": "--timeout 120",
        "source": "configmap",
        "where": "env[0] MLFLOW_GUNICORN_OPTS (configmap mlflow-cfg/gopts)",
    }
    result, _p, c = container_after(dep, CMD_ONLY, [cm])
    assert c["command"] == ["mlflow", "server", "--port=5000", "--workers=4", "--gunicorn-opts=--timeout 300 --keep-alive 5"]
    assert c["env"] == env
    # without the ConfigMap: reported, not guessed
    s = server_settings(dep)
    assert s["sources"]["gunicorn_opts"]["value"] == "<from configmap, not read>"
    r2 = compliance(dep, CMD_ONLY)
    assert any("cannot be read" in w for w in r2["warnings"])
    assert result["after_settings"]["gunicorn"]["timeout"] == 300


def test_envfrom_configmap_is_read():
    dep = deployment(
        {"name": "m", "command": ["mlflow", "server", "--port=5000"], "envFrom": [{"configMapRef": {"name": "cfg"}}]}
    )
    cm = {"metadata": {"name": "cfg"}, "data": {"MLFLOW_STATIC_PREFIX": "/static", "MLFLOW_WORKERS": "4"}}
    s = server_settings(dep, [cm])
    assert s["static_prefix"] == "/static"
    assert s["sources"]["workers"]["where"] == "envFrom[0] configmap cfg"
    _r, _p, c = container_after(dep, CMD_ONLY, [cm])
    # workers=4 from the ConfigMap already complies; the prefix is cancelled with an empty env value
    # (explicit env wins over envFrom, and click treats an empty value as unset)
    assert c["env"] == [{"name": "MLFLOW_STATIC_PREFIX", "value": ""}]
    assert c["command"] == ["mlflow", "server", "--port=5000"]


def test_secret_values_are_never_resolved_nor_shown():
    env = [
        {"name": "MLFLOW_SERVER_ALLOWED_HOSTS", "valueFrom": {"secretKeyRef": {"name": "s", "key": "hosts"}}},
        {"name": "DB_PASSWORD", "value": "hunter2"},
        {"name": "MLFLOW_BACKEND_STORE_URI", "value": "postgresql://mlflow:hunter2@db:5432/mlflow"},
    ]
    dep = deployment({"name": "m", "command": ["mlflow", "server", "--port=5000", "--workers=4"], "env": env})
    s = server_settings(dep)
    assert s["sources"]["allowed_hosts"]["value"] == "<from secret>"
    assert s["sources"]["allowed_hosts"]["source"] == "secret"
    result = compliance(dep, {"allowed_hosts": HOSTS})
    # patch/rollback_patch carry the container as it is (sent with no_log when sensitive); nothing else shows it
    text = json.dumps({k: v for k, v in result.items() if k not in ("patch", "rollback_patch")})
    assert "hunter2" not in text
    assert result["sensitive"] is True
    assert result["before"]["env"][2]["value"] == "postgresql://mlflow:***@db:5432/mlflow"


# ------------------------------------------------------------------------------------------------
# Sidecars, server kinds, versions, targets
# ------------------------------------------------------------------------------------------------
def test_sidecar_is_left_alone_and_patch_addresses_the_mlflow_container():
    sidecar = {"name": "proxy", "image": "nginx:1.27", "args": ["nginx", "-g", "daemon off;"]}
    dep = deployment([sidecar, {"name": "mlflow", "command": ["mlflow", "server", "--port=5000"]}])
    result, patched, c = container_after(dep, CMD_ONLY)
    assert result["container_index"] == 1
    assert all("/containers/1/" in op["path"] for op in result["patch"] if "containers" in op["path"])
    assert patched["spec"]["template"]["spec"]["containers"][0] == sidecar
    assert c["command"] == ["mlflow", "server", "--port=5000", "--workers=4"]


def test_several_mlflow_containers_need_a_name():
    dep = deployment([{"name": "a", "command": ["mlflow", "server"]}, {"name": "b", "command": ["mlflow", "server"]}])
    with pytest.raises(MlflowSettingsError, match="several containers run `mlflow server`: 'a', 'b'"):
        compliance(dep)
    assert compliance(dep, {"container": "b"})["container_index"] == 1


def test_uvicorn_gets_no_gunicorn_flags_and_keep_alive_in_uvicorn_opts():
    dep = deployment({"name": "m", "command": ["mlflow", "server", "--port=5000"]})
    _r, _p, c = container_after(dep, dict(CMD_ONLY, uvicorn_timeout_keep_alive=30))
    assert c["command"] == ["mlflow", "server", "--port=5000", "--workers=4", "--uvicorn-opts=--timeout-keep-alive 30"]
    # the default keep-alive (5) equals uvicorn's own default: nothing invented
    _r, _p, c = container_after(dep, CMD_ONLY)
    assert c["command"] == ["mlflow", "server", "--port=5000", "--workers=4"]


def test_uvicorn_opts_workers_kept_consistent():
    dep = deployment({"name": "m", "command": ["mlflow", "server", "--port=5000", '--uvicorn-opts=--workers 2 --timeout-keep-alive 2']})
    _r, _p, c = container_after(dep, CMD_ONLY)
    assert c["command"] == ["mlflow", "server", "--port=5000", "--uvicorn-opts=--workers 4 --timeout-keep-alive 5", "--workers=4"]


def test_old_mlflow_always_gunicorn_and_no_allowed_hosts():
    dep = deployment({"name": "m", "command": ["mlflow", "server", "--port", "5000"]}, image="burakince/mlflow:2.22.5")
    s = server_settings(dep)
    assert s["server"] == "gunicorn"
    assert s["host_check"] is False
    result, _p, c = container_after(dep, dict(CMD_ONLY, allowed_hosts=HOSTS))
    assert c["command"] == ["mlflow", "server", "--port", "5000", "--workers", "4", "--gunicorn-opts", "--timeout 300 --keep-alive 5"]
    assert "env" not in c
    assert result["server"] == "gunicorn"


@pytest.mark.parametrize(
    ("image", "version"),
    [
        ("ghcr.io/mlflow/mlflow:v3.17.2", "3.17.2"),
        ("burakince/mlflow:2.22.5", "2.22.5"),
        ("ghcr.io/mlflow/mlflow:v3.3", "3.3.0"),
        ("registry:5000/mlflow/mlflow:3.18.0-full", "3.18.0"),
        ("ghcr.io/mlflow/mlflow:latest", None),
        ("ghcr.io/mlflow/mlflow@sha256:" + "a" * 64, None),
        ("registry:5000/mlflow", None),
        ("ghcr.io/mlflow/mlflow:v3.17.2@sha256:" + "b" * 64, "3.17.2"),
    ],
)
def test_version_from_image(image, version):
    assert version_from_image(image) == version


def test_version_override_and_unknown_version():
    dep = deployment({"name": "m", "command": ["mlflow", "server"]}, image="ghcr.io/mlflow/mlflow:latest")
    s = server_settings(dep)
    assert (s["mlflow_version"], s["version_source"], s["server"]) == (None, "unknown", "uvicorn")
    s = server_settings(dep, mlflow_version="3.2.1")
    assert (s["mlflow_version"], s["version_source"], s["server"]) == ("3.2.1", "override", "gunicorn")
    with pytest.raises(MlflowSettingsError, match="mlflow_version 'abc' is not a version"):
        server_settings(dep, mlflow_version="abc")


def test_timeout_at_least_keeps_a_larger_value():
    dep = deployment({"name": "m", "command": ["mlflow", "server", "--port=5000", "--workers=4", "--gunicorn-opts=--timeout 600 --keep-alive 5"]})
    assert compliance(dep, dict(CMD_ONLY, gunicorn_timeout_mode="at_least"))["compliant"] is True
    _r, _p, c = container_after(dep, CMD_ONLY)
    assert c["command"][-1] == "--gunicorn-opts=--timeout 300 --keep-alive 5"


def test_workers_at_least_keeps_more_workers():
    dep = deployment({"name": "m", "command": ["mlflow", "server", "--port=5000", "--workers=8"]})
    assert compliance(dep, dict(CMD_ONLY, workers_mode="at_least"))["compliant"] is True


def test_keep_a_static_prefix_probes_follow_it():
    dep = deployment({"name": "m", "command": ["mlflow", "server", "--port=5000", "--workers=4", "--static-prefix=/static"]})
    result, _p, c = container_after(dep, {"static_prefix": "/mlflow"})
    assert c["command"] == ["mlflow", "server", "--port=5000", "--workers=4", "--static-prefix=/mlflow"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/mlflow/health"
    assert result["health_path"] == "/mlflow/health"
    old = deployment({"name": "m", "command": ["mlflow", "server", "--static-prefix=/mlflow"]}, image="burakince/mlflow:2.22.5")
    assert compliance(old, {"static_prefix": "/mlflow"})["health_path"] == "/health"


def test_allowed_hosts_flag_with_gunicorn_moves_to_env():
    script = "mlflow server --port=5000 --workers=4 --allowed-hosts='a.example:5000' --gunicorn-opts='--timeout 300 --keep-alive 5'"
    dep = deployment({"name": "m", "command": ["sh", "-c", script]})
    result, _p, c = container_after(dep, dict(CMD_ONLY, allowed_hosts=["localhost:*"]))
    assert c["command"][2] == "mlflow server --port=5000 --workers=4 --gunicorn-opts='--timeout 300 --keep-alive 5'"
    assert c["env"] == [{"name": "MLFLOW_SERVER_ALLOWED_HOSTS", "value": "a.example:5000,localhost:*"}]
    assert result["after_settings"]["allowed_hosts"] == ["a.example:5000", "localhost:*"]


def test_allowed_hosts_flag_with_uvicorn_is_edited_in_place_with_quoting():
    dep = deployment({"name": "m", "command": ["sh", "-c", "mlflow server --port=5000 --workers=4 --allowed-hosts=a.example:5000"]})
    _r, _p, c = container_after(dep, dict(CMD_ONLY, allowed_hosts=["localhost:*", "a.example:*"]))
    # a.example:* is broader than a.example:5000, so it is added; `*` needs quoting in the script
    assert c["command"][2] == 'mlflow server --port=5000 --workers=4 --allowed-hosts="a.example:5000,localhost:*,a.example:*"'


def test_allowed_hosts_include_mode_respects_wildcards_and_exact_mode_replaces():
    env = [{"name": "MLFLOW_SERVER_ALLOWED_HOSTS", "value": "localhost:*,10.*"}]
    dep = deployment({"name": "m", "command": ["mlflow", "server", "--port=5000", "--workers=4"], "env": env})
    assert compliance(dep, dict(CMD_ONLY, allowed_hosts=["localhost:*", "10.1.2.3:5000"]))["compliant"]
    _r, _p, c = container_after(dep, dict(CMD_ONLY, allowed_hosts=["x:1"], allowed_hosts_mode="exact"))
    assert c["env"] == [{"name": "MLFLOW_SERVER_ALLOWED_HOSTS", "value": "x:1"}]


def test_duplicate_flags_last_wins_and_duplicates_are_removed():
    dep = deployment({"name": "m", "command": ["mlflow", "server", "--workers", "2", "--port=5000", "--workers=3"]})
    assert server_settings(dep)["workers"] == 3
    _r, _p, c = container_after(dep, CMD_ONLY)
    assert c["command"] == ["mlflow", "server", "--port=5000", "--workers=4"]


def test_port_from_env_only_gets_an_explicit_flag():
    dep = deployment({"name": "m", "command": ["mlflow", "server", "--workers=4"], "env": [{"name": "MLFLOW_PORT", "value": "5000"}]})
    _r, _p, c = container_after(dep, CMD_ONLY)
    assert c["command"] == ["mlflow", "server", "--workers=4", "--port=5000"]


def test_port_expansion_resolved_from_env_is_compliant():
    dep = deployment(
        {"name": "m", "command": ["sh", "-c", "mlflow server --port=${PORT} --workers=4"], "env": [{"name": "PORT", "value": "5000"}]}
    )
    assert compliance(dep, CMD_ONLY)["compliant"]


def test_probes_equal_after_api_defaulting_are_compliant():
    probe = {"httpGet": {"path": "/health", "port": 5000}, "periodSeconds": 10, "timeoutSeconds": 5}
    c = {
        "name": "m",
        "command": ["mlflow", "server", "--port=5000", "--workers=4"],
        "startupProbe": {"httpGet": {"path": "/health", "port": 5000, "scheme": "HTTP"}, "periodSeconds": 5, "timeoutSeconds": 5, "failureThreshold": 36, "successThreshold": 1},
        "readinessProbe": probe,
        # more tolerant than the target: kept
        "livenessProbe": {"httpGet": {"path": "/health", "port": 5000}, "periodSeconds": 30, "timeoutSeconds": 10, "failureThreshold": 10},
    }
    dep = deployment(c, enableServiceLinks=False)
    assert compliance(dep)["compliant"]
    dep["spec"]["template"]["spec"]["containers"][0]["livenessProbe"] = {"tcpSocket": {"port": 5000}}
    result = compliance(dep)
    assert result["changes"] == [
        "livenessProbe: tcpSocket -> GET /health :5000 initialDelaySeconds=0 periodSeconds=20 timeoutSeconds=10 "
        "successThreshold=1 failureThreshold=6"
    ]
    # a stricter probe (kills a busy server sooner) is replaced
    dep["spec"]["template"]["spec"]["containers"][0]["livenessProbe"] = {
        "httpGet": {"path": "/health", "port": 5000},
        "periodSeconds": 10,
        "timeoutSeconds": 1,
    }
    assert compliance(dep)["changes"][0].startswith("livenessProbe: GET /health :5000 periodSeconds=10 timeoutSeconds=1 ->")
    # a probe on the static prefix path after the prefix is removed is replaced
    dep["spec"]["template"]["spec"]["containers"][0]["livenessProbe"] = dict(
        c["livenessProbe"], httpGet={"path": "/static/health", "port": 5000}
    )
    assert compliance(dep)["changes"][0].startswith("livenessProbe: GET /static/health :5000")


def test_annotation_is_stable_and_added_to_existing_annotations():
    dep = seed()
    dep["spec"]["template"]["metadata"]["annotations"] = {"keep": "me"}
    r1 = compliance(dep, CMD_ONLY)
    r2 = compliance(copy.deepcopy(dep), CMD_ONLY)
    assert r1["annotation"] == r2["annotation"]
    assert r1["patch"][-1] == {
        "op": "add",
        "path": "/spec/template/metadata/annotations/asgard.mlflow~1patch",
        "value": r1["annotation"]["asgard.mlflow/patch"],
    }
    patched = json_patch(dep, r1["patch"])
    assert patched["spec"]["template"]["metadata"]["annotations"]["keep"] == "me"
    assert r1["annotation"] != compliance(dep, dict(CMD_ONLY, workers=6))["annotation"]


# ------------------------------------------------------------------------------------------------
# Bad input: clear errors
# ------------------------------------------------------------------------------------------------
def test_no_container_runs_mlflow_says_what_was_found():
    dep = deployment([{"name": "web", "image": "nginx", "command": ["nginx"]}, {"name": "x", "image": "ghcr.io/mlflow/mlflow:v3.17.2"}])
    with pytest.raises(MlflowSettingsError) as exc:
        compliance(dep)
    msg = str(exc.value)
    assert "no container runs `mlflow server`" in msg
    assert "'web' (image 'nginx'): command 'nginx'" in msg
    assert "'x' (image 'ghcr.io/mlflow/mlflow:v3.17.2'): no command/args" in msg
    assert "command: [mlflow, server]" in msg


def test_echo_mlflow_server_is_not_mistaken_for_the_server():
    dep = deployment({"name": "m", "command": ["sh", "-c", "echo mlflow server; sleep infinity"]})
    with pytest.raises(MlflowSettingsError, match="no container runs"):
        server_settings(dep)


@pytest.mark.parametrize(
    ("script", "message"),
    [
        ('mlflow server --gunicorn-opts="--timeout 120', "unterminated double quote"),
        ("mlflow server --gunicorn-opts='--timeout 120", "unterminated single quote"),
        ("if [ -f x ]; then mlflow server --port 1; else mlflow server --port 2; fi", "runs `mlflow server` 2 times"),
        ("cat <<EOF > /tmp/x\nhi\nEOF\nmlflow server", "here-documents"),
        ("$(which mlflow) server --port 5000", "no container runs"),
        ("mlflow server --port", "--port has no value"),
    ],
)
def test_unparseable_scripts_give_clear_errors(script, message):
    dep = deployment({"name": "m", "command": ["/bin/sh", "-c", script]})
    with pytest.raises(MlflowSettingsError, match=message.replace("[", r"\[").replace("$", r"\$").replace("(", r"\(").replace(")", r"\)")):
        compliance(dep)


def test_rewriting_a_value_made_of_expansions_is_refused_clearly():
    dep = deployment({"name": "m", "command": ["sh", "-c", 'mlflow server --port=5000 --workers=4 --gunicorn-opts="$GOPTS --timeout 120"']})
    # the timeout is inside a double-quoted word with an expansion: edited in place, expansion kept
    _r, _p, c = container_after(dep, CMD_ONLY)
    assert c["command"][2] == 'mlflow server --port=5000 --workers=4 --gunicorn-opts="$GOPTS --timeout 300 --keep-alive 5"'
    dep = deployment({"name": "m", "command": ["sh", "-c", "mlflow server --port=5000 --workers=4 --gunicorn-opts=$GOPTS"]})
    s = server_settings(dep)
    assert s["sources"]["gunicorn_opts"]["shell_expansion"] is True
    with pytest.raises(MlflowSettingsError, match="uses shell expansions"):
        compliance(dep, CMD_ONLY)


@pytest.mark.parametrize(
    ("targets", "message"),
    [
        ({"workers": 0}, "targets.workers: expected a positive integer or null"),
        ({"port": 70000}, "targets.port: expected an integer 1-65535"),
        ({"static_prefix": "static"}, "targets.static_prefix: expected '' .*starts with '/'"),
        ({"gunicorn_timeout_mode": "more"}, "targets.gunicorn_timeout_mode: expected 'exact' or 'at_least'"),
        ({"nope": 1}, r"targets: unknown keys \['nope'\]"),
        ({"allowed_hosts": [1]}, "targets.allowed_hosts: expected a list of host patterns"),
    ],
)
def test_bad_targets_name_the_field(targets, message):
    with pytest.raises(MlflowSettingsError, match=message):
        compliance(seed(), targets)


def test_not_a_deployment():
    with pytest.raises(MlflowSettingsError, match="expected a Deployment object"):
        server_settings([])
    with pytest.raises(MlflowSettingsError, match="expected kind Deployment, got 'Service'"):
        server_settings({"kind": "Service"})


# ------------------------------------------------------------------------------------------------
# Property-style round trips over a deterministic generator of forms
# ------------------------------------------------------------------------------------------------
FLAG_SETS = [
    [("--host", "0.0.0.0"), ("--port", "5000")],
    [("--port", "8080"), ("--workers", "2"), ("--gunicorn-opts", "--timeout 120 --workers 2 --worker-class sync")],
    [("--static-prefix", "/static"), ("--serve-artifacts", None), ("--gunicorn-opts", "--timeout 60")],
    [("--backend-store-uri", "sqlite:////data/m.db"), ("--uvicorn-opts", "--timeout-keep-alive 2"), ("-w", "3")],
    [("--gunicorn-opts", ""), ("--allowed-hosts", "localhost:*")],
]
STYLES = ["list-eq", "list-split", "sh-oneline-dq", "sh-oneline-sq", "sh-continued-dq", "sh-continued-sq-split"]


def _quote(value, q):
    return f"{q}{value}{q}" if q else value


def build(flags, style):
    if style.startswith("list"):
        args = []
        for f, v in flags:
            if v is None:
                args.append(f)
            elif style == "list-eq" and f.startswith("--"):
                args.append(f"{f}={v}")
            else:
                args.extend([f, v])
        return {"command": ["mlflow", "server"], "args": args}
    q = '"' if style.endswith("dq") else "'"
    words = []
    for f, v in flags:
        if v is None:
            words.append(f)
        elif style.endswith("split") or not f.startswith("--"):
            words.append(f"{f} {_quote(v, q)}")
        else:
            words.append(f"{f}={_quote(v, q)}")
    sep = " \\\n    " if "continued" in style else " "
    script = "exec mlflow server" + sep + sep.join(words) + ("\n" if "continued" in style else "")
    return {"command": ["/bin/sh", "-c"], "args": [script]}


CASES = [
    pytest.param(flags, style, id=f"set{i}-{style}")
    for (i, flags), style in itertools.product(enumerate(FLAG_SETS), STYLES)
]


@pytest.mark.parametrize(("flags", "style"), CASES)
def test_round_trip_parse_then_render_unchanged(flags, style):
    c = dict(build(flags, style), name="mlflow")
    dep = deployment(copy.deepcopy(c))
    s = server_settings(dep)
    names = {f: FLAG_TO_NAME[f] for f, _v in flags}
    for f, v in flags:
        got = s["sources"][names[f]]
        assert got["source"] == "flag"
        assert got["value"] == (f if v is None else v)
    result = compliance(dep, ALL_OFF)
    assert result["compliant"] is True
    assert result["patch"] == []
    assert result["before"] == result["after"]
    assert dep["spec"]["template"]["spec"]["containers"][0] == dict(c, image="ghcr.io/mlflow/mlflow:v3.17.2")


@pytest.mark.parametrize(("flags", "style"), CASES)
def test_round_trip_edit_is_idempotent_and_keeps_other_flags(flags, style):
    dep = deployment(dict(build(flags, style), name="mlflow"))
    before = server_settings(dep)
    targets = dict(CMD_ONLY, allowed_hosts=["localhost:*", "127.0.0.1:*"])
    result, patched, _c = container_after(dep, targets)
    after = server_settings(patched)
    again = compliance(patched, targets)
    assert again["compliant"], again["changes"]
    assert again["patch"] == []
    untouched = {"host", "backend_store_uri", "serve_artifacts"}
    for name in untouched & set(before["sources"]):
        assert after["sources"][name]["value"] == before["sources"][name]["value"]
    assert after["workers"] == 4
    assert after["port"] == 5000
    assert after["static_prefix"] is None
    assert after["server"] == before["server"]
    if after["server"] == "gunicorn":
        assert after["gunicorn"]["timeout"] == 300
        assert after["gunicorn"]["keep_alive"] == 5
        assert "allowed_hosts" not in after["sources"] or after["sources"]["allowed_hosts"]["source"] == "env"
    else:
        assert after["uvicorn"]["timeout_keep_alive"] == 5
    assert set(after["allowed_hosts"]) >= {"localhost:*", "127.0.0.1:*"}


def test_split_opts_matches_shlex():
    import shlex

    for opts in ["--timeout 120 --workers 2", "--a='b c' -k \"x y\"", "a\\ b 'c\\d' \"e\\\"f\"", "", "  x  "]:
        assert [w.value for w in split_opts(opts)] == shlex.split(opts)
