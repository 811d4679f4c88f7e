"""Bad variables fail the deploy role in preflight, with a message that names the variable and the expected
form, before any Kubernetes API call (the kubeconfig points at a local socket that records connections)."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

import pytest
import yaml

from helpers.ansible_runner import run_playbook

CASES: dict[str, tuple[dict, list[str]]] = {
    "bad_image": ({"deploy_image": "Not A/valid image"}, ["deploy_image", "valid image reference"]),
    "no_version": ({"deploy_image": "ghcr.io/mlflow/mlflow:latest"}, ["deploy_mlflow_version", "X.Y.Z"]),
    "workers_0": ({"deploy_workers": 0}, ["deploy_workers=0", "integer >= 1"]),
    "timeout_0": ({"deploy_gunicorn_timeout": 0}, ["deploy_gunicorn_timeout=0", "integer >= 1"]),
    "keep_alive_0": ({"deploy_keep_alive": 0}, ["deploy_keep_alive", "integer >= 1"]),
    "port_out_of_range": ({"deploy_container_port": 70000}, ["deploy_container_port=70000", "1-65535"]),
    "service_port_0": ({"deploy_service_port": 0}, ["deploy_service_port=0", "1-65535"]),
    "prefix_no_slash": ({"deploy_static_prefix": "static"}, ["deploy_static_prefix", 'starts with "/"']),
    "prefix_trailing_slash": ({"deploy_static_prefix": "/static/"}, ["deploy_static_prefix", 'does not end with "/"']),
    "secret_and_inline": (
        {"deploy_backend_store_secret": {"name": "pg", "key": "uri"},
         "deploy_backend_store_uri": "postgresql://u:TopSecretPw@pg/db"},
        ["deploy_backend_store_secret.name", "inline credentials", "only one"],
    ),
    "bad_uri_hidden": ({"deploy_backend_store_uri": "postgresql://u:TopSecretPw@pg/db with space"},
                       ["deploy_backend_store_uri", "value hidden"]),
    "host_with_scheme": ({"deploy_allowed_hosts_extra": ["http://mlflow.example.com/"]},
                         ["deploy_allowed_hosts_extra", "without scheme"]),
    "host_with_comma": ({"deploy_allowed_hosts_extra": ["a.example.com,b.example.com"]},
                        ["deploy_allowed_hosts_extra", "comma"]),
    "bad_namespace": ({"deploy_namespace": "Asgard_NS"}, ["deploy_namespace", "DNS-1123 label"]),
    "uvicorn_on_mlflow2": ({"deploy_image": "ghcr.io/mlflow/mlflow:v2.22.5", "deploy_server": "uvicorn"},
                           ["deploy_server", "MLflow >= 3.3 only"]),
    "unknown_server": ({"deploy_server": "waitress"}, ["deploy_server", "uvicorn", "gunicorn"]),
    "sqlite_two_replicas": ({"deploy_replicas": 2}, ["deploy_replicas", "SQLite"]),
    "ingress_without_hosts": ({"deploy_ingress_enabled": True}, ["deploy_ingress_hosts", "non-empty list"]),
    "bad_service_name": ({"deploy_service_name": "1mlflow"}, ["deploy_service_name", "DNS-1035"]),
    "bad_probe": ({"deploy_startup_probe": {"periodSeconds": 0, "timeoutSeconds": 5, "failureThreshold": 3}},
                  ["deploy_startup_probe", "positive"]),
    "workers_not_int": ({"deploy_workers": "many"}, ["deploy_workers"]),
    "ingress_body_size": ({"deploy_ingress_body_size": "1 GB"}, ["deploy_ingress_body_size", "nginx size"]),
    "proxy_timeout": ({"deploy_proxy_timeout": "5m"}, ["deploy_proxy_timeout", "int"]),
    "route_without_hostnames": ({"deploy_route_enabled": "true", "deploy_route_gateway_name": "gw"},
                                ["deploy_route_hostnames", "non-empty"]),
    "auth_short_password": ({"deploy_auth_enabled": "true", "deploy_auth_admin_password": "short-pw"},
                            ["deploy_auth_admin_password", "12 characters", "value hidden"]),
}


class RecordingSocket:
    """A TCP listener standing in for the API server: it counts connections and closes each at once."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self._count = 0
        self._seen = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _addr = self.sock.accept()
            except OSError:
                return
            self._count += 1
            conn.close()

    def connections(self) -> int:
        """Connections since the previous call."""
        new = self._count - self._seen
        self._seen = self._count
        return new

    def kubeconfig(self, path: Path) -> Path:
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "rec",
            "clusters": [{"name": "rec", "cluster": {"server": f"http://127.0.0.1:{self.port}"}}],
            "contexts": [{"name": "rec", "context": {"cluster": "rec", "user": "rec"}}],
            "users": [{"name": "rec", "user": {"token": "t"}}],
        }))
        return path


@pytest.fixture(scope="module")
def api():
    rec = RecordingSocket()
    yield rec
    rec.sock.close()


@pytest.fixture(scope="module")
def failures(tmp_path_factory, api) -> dict[str, str]:
    """One ansible-playbook run, one play per bad variable set; each play records the role's failure message."""
    tmp = tmp_path_factory.mktemp("deploy-preflight")
    plays = []
    for name, (variables, _expected) in CASES.items():
        plays.append({
            "name": f"preflight {name}",
            "hosts": "localhost",
            "gather_facts": False,
            "vars": variables,
            "tasks": [{
                "block": [
                    {"ansible.builtin.include_role": {"name": "asgard.mlflow.deploy"}},
                    {"ansible.builtin.copy": {"content": "NOT FAILED", "dest": str(tmp / f"{name}.txt"), "mode": "0600"}},
                ],
                "rescue": [
                    {"ansible.builtin.copy": {"content": "{{ ansible_failed_result | to_json }}", "dest": str(tmp / f"{name}.txt"), "mode": "0600"}},
                ],
            }],
        })
    playbook = tmp / "preflight.yml"
    playbook.write_text(yaml.safe_dump(plays, sort_keys=False))
    res = run_playbook(playbook, kubeconfig=api.kubeconfig(tmp / "kubeconfig"), json_output=False, timeout=300)
    assert res.rc == 0, res.output
    assert api.connections() == 0, "preflight failures must come before any API call"
    out = {}
    for name in CASES:
        text = (tmp / f"{name}.txt").read_text()
        assert text != "NOT FAILED", f"{name}: the role did not fail"
        out[name] = text
    return out


@pytest.mark.parametrize("case", CASES)
def test_preflight_message_names_the_variable(failures, case):
    result = json.loads(failures[case])
    msg = result.get("msg") or ""
    if isinstance(msg, list):
        msg = " ".join(msg)
    for part in CASES[case][1]:
        assert part in msg, f"{part!r} not in {msg!r}"
    assert "TopSecretPw" not in failures[case]


def test_real_playbook_fails_before_any_api_call(tmp_path, api):
    res = run_playbook("playbooks/deploy.yml", kubeconfig=api.kubeconfig(tmp_path / "kubeconfig"),
                       extra_vars={"deploy_workers": 0}, json_output=False, timeout=300)
    assert res.rc != 0
    assert "deploy_workers=0 is invalid; expected an integer >= 1" in res.stdout, res.output
    assert api.connections() == 0


@pytest.mark.parametrize("mode", [[], ["--check", "--diff"]], ids=["apply", "check-diff"])
def test_typed_on_the_command_line_at_vvv_every_error_at_once_no_password(tmp_path, api, mode):
    """As an operator types it: -e name=value strings, -vvv, with and without --check --diff. Every bad variable is
    named in one failure, the two passwords given are printed 0 times, and nothing reaches the API."""
    uri_pw, admin_pw = "Uri-Fixture-Pw-7q", "Short-Fx-7"
    argv = ["-e", "deploy_workers=0", "-e", "deploy_replicas=-1", "-e", "deploy_namespace=Asgard",
            "-e", f"deploy_backend_store_uri=postgresql://mlflow:{uri_pw}@pg:5432/mlflow",
            "-e", "deploy_pvc_enabled=no", "-e", "deploy_auth_enabled=true", "-e", f"deploy_auth_admin_password={admin_pw}"]
    res = run_playbook("playbooks/deploy.yml", kubeconfig=api.kubeconfig(tmp_path / "kubeconfig"), argv=argv + mode,
                       verbosity=3, json_output=False, timeout=300)
    assert res.rc != 0
    out = res.stdout + res.stderr
    for expected in ('deploy_workers="0" is invalid', 'deploy_replicas="-1" is invalid',
                     'deploy_namespace="Asgard" is not a valid namespace name', "deploy_auth_admin_password"):
        assert expected in out, res.output
    assert out.count(uri_pw) == 0 and out.count(admin_pw) == 0
    assert api.connections() == 0


def test_patch_role_typed_on_the_command_line_every_error_at_once(tmp_path, api):
    argv = ["-e", "patch_workers=four", "-e", "patch_port=70000", "-e", "patch_static_prefix=static",
            "-e", "patch_gunicorn_timeout=null"]
    res = run_playbook("playbooks/patch.yml", kubeconfig=api.kubeconfig(tmp_path / "kubeconfig"), argv=argv,
                       verbosity=3, check=True, diff=True, json_output=False, timeout=300)
    assert res.rc != 0
    for expected in ('patch_workers="four" is invalid', 'patch_port="70000" / patch_service_port=5000 is invalid',
                     'patch_static_prefix="static" is invalid'):
        assert expected in res.stdout, res.output
    assert "patch_gunicorn_timeout" not in res.stdout.split("FAILED!", 1)[1].split("PLAY RECAP", 1)[0], res.output
    assert api.connections() == 0


def test_valid_input_reaches_the_api(tmp_path, api):
    """Control for the two tests above: with good input the role does call the API (and fails there)."""
    res = run_playbook("playbooks/deploy.yml", kubeconfig=api.kubeconfig(tmp_path / "kubeconfig"),
                       json_output=False, timeout=300)
    assert res.rc != 0
    # the first API call is the cluster-access preflight (asgard.mlflow.cluster_access), which names the source
    assert "Preflight | cluster access" in res.stdout, res.output
    assert "with the kubeconfig KUBECONFIG=" in res.stdout and "Nothing was changed" in res.stdout, res.output
    assert api.connections() >= 1
