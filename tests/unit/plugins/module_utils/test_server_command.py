"""The one container rule (plugins/module_utils/_server_command.py): THE container that runs ``mlflow server`` as
parsed, or the named one; sidecars that only mention MLflow are skipped wherever they are listed."""

from __future__ import annotations

import pytest
from ansible_collections.asgard.mlflow.plugins.module_utils._errors import ContainerError, MlflowSettingsError
from ansible_collections.asgard.mlflow.plugins.module_utils._server_command import (
    mlflow_container,
    parse_command,
    runs_mlflow_server,
    server_container,
)

MLFLOW = {"name": "mlflow", "image": "ghcr.io/mlflow/mlflow:v3.17.2", "command": ["mlflow", "server"],
          "args": ["--port=5000"]}
# sidecars seen in the field next to MLflow: they mention mlflow and server, none runs `mlflow server`
SIDECARS = [
    {"name": "log-tail", "image": "busybox", "command": ["tail", "-F", "/mlflow/logs/server.log"]},
    {"name": "fluent-bit", "image": "fluent/fluent-bit", "command": ["fluent-bit", "-c", "/etc/mlflow/server.conf"]},
    {"name": "sh-tail", "image": "busybox", "command": ["sh", "-c", "tail -F /mlflow/logs/server.log | grep mlflow"]},
    {"name": "echo", "image": "busybox", "command": ["sh", "-c", "echo mlflow server; sleep infinity"]},
    {"name": "proxy", "image": "nginx", "args": ["nginx", "-g", "daemon off;"]},
    {"name": "entrypoint-only", "image": "ghcr.io/mlflow/mlflow:v3.17.2"},
    {"name": "mlflow-ui-gc", "image": "ghcr.io/mlflow/mlflow:v3.17.2", "command": ["mlflow", "gc"]},
]


def pod(*containers):
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": list(containers)}}


def deployment(*containers):
    return {"kind": "Deployment", "spec": {"template": {"spec": {"containers": list(containers)}}}}


@pytest.mark.parametrize("sidecar", SIDECARS, ids=[s["name"] for s in SIDECARS])
@pytest.mark.parametrize("sidecar_first", [True, False], ids=["sidecar-first", "sidecar-last"])
@pytest.mark.parametrize("wrap", [pod, deployment, lambda *c: {"containers": list(c)}], ids=["pod", "deployment", "spec"])
def test_sidecar_is_never_the_mlflow_container(sidecar, sidecar_first, wrap):
    containers = [sidecar, MLFLOW] if sidecar_first else [MLFLOW, sidecar]
    idx, c = mlflow_container(wrap(*containers))
    assert c["name"] == "mlflow"
    assert idx == (1 if sidecar_first else 0)


@pytest.mark.parametrize(("command", "args"), [
    (["mlflow", "server"], ["--port=5000"]),
    (["python", "-m", "mlflow", "server"], []),
    (["/opt/venv/bin/python3.12", "-u", "-m", "mlflow", "server"], []),
    (["tini", "--", "mlflow", "server"], ["--host=0.0.0.0"]),
    (["/bin/sh", "-c"], ["exec mlflow server \\\n  --port=5000"]),
    (["bash", "-ec", "pip list >/dev/null && MLFLOW_X=1 exec /usr/local/bin/mlflow server --port 5000 2>&1 | tee x"], []),
    (["env", "A=b", "mlflow", "server"], []),
])
def test_command_forms_that_run_mlflow_server(command, args):
    c = {"name": "m", "command": command, "args": args}
    how, why = runs_mlflow_server(c)
    assert how is not None and why is None
    assert mlflow_container(pod(SIDECARS[0], c))[1] is c


@pytest.mark.parametrize(("containers", "code", "needles"), [
    ([SIDECARS[0], SIDECARS[1]], "NO_MLFLOW_CONTAINER",
     ["no container runs `mlflow server`", "'log-tail' (image 'busybox'): command 'tail -F /mlflow/logs/server.log'"]),
    ([SIDECARS[5]], "NO_MLFLOW_CONTAINER", ["no command/args (runs the image's entrypoint"]),
    ([MLFLOW, dict(MLFLOW, name="mlflow-2")], "SEVERAL_MLFLOW_CONTAINERS",
     ["several containers run `mlflow server`: 'mlflow', 'mlflow-2'", "set the container variable"]),
    ([], "NO_MLFLOW_CONTAINER", ["no containers"]),
])
def test_no_or_several_mlflow_containers_is_a_finding(containers, code, needles):
    with pytest.raises(ContainerError) as exc:
        mlflow_container(pod(*containers))
    assert exc.value.code == code
    for needle in needles:
        assert needle in str(exc.value)
    assert isinstance(exc.value, MlflowSettingsError)  # callers catching the settings error see it too


def test_a_named_container_is_taken_by_name_whatever_it_runs():
    spec = pod(SIDECARS[5], MLFLOW, dict(MLFLOW, name="mlflow-2"))
    assert mlflow_container(spec, "mlflow-2")[0] == 2
    # the named container need not have a readable command (logs, ports) ...
    assert mlflow_container(spec, "entrypoint-only")[0] == 0
    # ... but reading its settings needs `mlflow server` in its command
    with pytest.raises(ContainerError) as exc:
        server_container(spec, "entrypoint-only")
    assert exc.value.code == "NO_MLFLOW_CONTAINER"
    assert "container 'entrypoint-only' does not run `mlflow server`" in str(exc.value)
    with pytest.raises(ContainerError) as exc:
        mlflow_container(spec, "nope")
    assert exc.value.code == "CONTAINER_NOT_FOUND"
    assert "container 'nope' is not in the pod spec (containers: ['entrypoint-only', 'mlflow', 'mlflow-2'])" in str(
        exc.value)


def test_bad_input_names_the_expected_form():
    with pytest.raises(MlflowSettingsError, match="expected a pod spec, a Pod or a Deployment"):
        mlflow_container(["not", "a", "pod"])


@pytest.mark.parametrize(("container", "flags", "where"), [
    ({"command": ["mlflow", "server", "--port", "5000", "-w4", "--static-prefix=/x"]},
     {"port": "5000", "workers": "4", "static_prefix": "/x"}, {"port": "command[2]"}),
    ({"command": ["sh", "-c"], "args": ["mlflow server \\\n  --port=5000 \\\n  --workers 2"]},
     {"port": "5000", "workers": "2"}, {"workers": "args[0] script line 3 chars 34-45"}),
])
def test_flags_are_read_with_where_they_are(container, flags, where):
    container = dict(container, name="m")
    how, _why = runs_mlflow_server(container)
    cmd = parse_command(container, how)
    assert {name: cmd.flag_value(name) for name in flags} == flags
    for name, loc in where.items():
        assert cmd.where(cmd.occurrences[name][-1]) == loc
