"""Shared pytest fixtures: the local Kubernetes lab and clients for it.

- ``lab`` (session): starts ``python -m asgardlab up --state-dir <repo>/.lab`` unless the lab is already
  running, and stops it at session end only if this session started it. Attributes: ``kubeconfig`` (Path),
  ``api`` (URL), ``token``, ``ca`` (Path of the CA certificate), ``requests_log`` (Path), ``state_dir``,
  ``started_at``; helpers ``faults.add(**spec)`` / ``faults.clear()`` / ``faults.list()``,
  ``request(method, path, **kw)`` (an authenticated ``requests`` call), ``requests_since(mark)`` and
  ``log_mark()`` to read what clients sent, ``env(tmp_path)`` (environment for ansible-playbook/kubectl with
  a TMPDIR unique to this lab start, as kubernetes.core caches discovery in $TMPDIR).
- ``second_lab`` (session): a second lab (state dir ``<state>-b`` or ``ASGARD_LAB_B_STATE_DIR``) in the same network
  namespace, another "cluster" for the multi-cluster (fleet) tests; same handle and sharing rules as ``lab``.
- ``k8s_client``: a ``kubernetes.client.ApiClient`` built from the lab kubeconfig.
- ``lab_namespace``: a fresh namespace per test (name), deleted afterwards.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LAB_PKG = REPO / "tests" / "lab"
for p in (LAB_PKG, REPO / ".collections"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from asgardlab import users as lab_users  # noqa: E402

VENV_BIN = Path(sys.executable).parent


class _Faults:
    def __init__(self, lab: LabHandle) -> None:
        self._lab = lab

    def add(self, **spec) -> dict:
        r = self._lab.request("POST", "/lab/faults", json=spec)
        r.raise_for_status()
        return r.json()

    def clear(self) -> None:
        self._lab.request("DELETE", "/lab/faults").raise_for_status()

    def list(self) -> list[dict]:
        return self._lab.request("GET", "/lab/faults").json()["faults"]


class LabHandle:
    def __init__(self, state_dir: Path) -> None:
        import yaml

        self.state_dir = state_dir
        self.kubeconfig = state_dir / "kubeconfig"
        cfg = yaml.safe_load(self.kubeconfig.read_text())
        self.api = cfg["clusters"][0]["cluster"]["server"]
        self.token = cfg["users"][0]["user"]["token"]
        self.ca = state_dir / "pki" / "ca.crt"
        self.requests_log = state_dir / "requests.log"
        self.started_at = (state_dir / "lab.pid").stat().st_mtime
        self.faults = _Faults(self)
        self._tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"asgard-lab-tmp-{int(self.started_at)}-{self.api.rsplit(':', 1)[-1]}"
        self._tmp.mkdir(parents=True, exist_ok=True)

    def request(self, method: str, path: str, token: str | None = "default", **kw):
        import requests

        headers = kw.pop("headers", {})
        if token == "default":
            token = self.token
        if token:
            headers.setdefault("Authorization", f"Bearer {token}")
        return requests.request(method, self.api + path, headers=headers, verify=str(self.ca), timeout=kw.pop("timeout", 30), **kw)

    def log_mark(self) -> int:
        return self.requests_log.stat().st_size if self.requests_log.exists() else 0

    def requests_since(self, mark: int) -> list[dict]:
        with open(self.requests_log, encoding="utf-8") as f:
            f.seek(mark)
            return [json.loads(line) for line in f if line.strip()]

    def env(self, **extra) -> dict:
        """Environment for ansible-playbook / kubectl against the lab (fresh TMPDIR per lab start)."""
        env = dict(os.environ)
        env.update({
            "KUBECONFIG": str(self.kubeconfig),
            "ANSIBLE_PYTHON_INTERPRETER": str(VENV_BIN / "python"),
            "TMPDIR": str(self._tmp),
            "PYTHONPATH": str(LAB_PKG),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_HOST_KEY_CHECKING": "0",
            "ANSIBLE_LOCALHOST_WARNING": "0",
            "ANSIBLE_INVENTORY_UNPARSED_WARNING": "0",
        })
        env.update(extra)
        return env


# ASGARD_LAB_STATE_DIR points a test session at another lab (default: <repo>/.lab)
STATE_DIR = Path(os.environ.get("ASGARD_LAB_STATE_DIR") or REPO / ".lab").resolve()


def _shared_lab(state_dir: Path):
    """Start the lab of ``state_dir`` unless it runs, register this session, yield its handle; stop it at the end
    only if no other session still uses it (and this one, or a gone one, started it)."""
    status = lab_users.lab_cmd(state_dir, "status", timeout=120)
    started = False
    if status.returncode != 0:
        t0 = time.monotonic()
        up = lab_users.lab_cmd(state_dir, "up", timeout=120)
        if up.returncode != 0:
            pytest.fail(f"could not start the lab in {state_dir}:\n{up.stdout}\n{up.stderr}")
        started = True
        (state_dir / "started-by").write_text(str(os.getpid()))
        print(f"\nlab started in {time.monotonic() - t0:.2f}s: {up.stdout.strip()}")
    lab_users.register(state_dir, os.getpid())
    handle = LabHandle(state_dir)
    yield handle
    lab_users.unregister(state_dir, os.getpid())
    starter = lab_users.starter(state_dir)
    owner = started or (starter is not None and not lab_users.alive(starter))
    if owner and not lab_users.others(state_dir, os.getpid()):
        lab_users.lab_cmd(state_dir, "down", timeout=120)


@pytest.fixture(scope="session")
def lab():
    """The running lab; started if needed. Several pytest sessions may share it: each registers in
    <state>/users/<pid>, and the lab is stopped by the session that started it (or, if that one is gone, by the
    last one) only when no other session still uses it."""
    yield from _shared_lab(STATE_DIR)


# ASGARD_LAB_B_STATE_DIR: the second lab ("another cluster") of the multi-cluster tests (default: <state>-b)
STATE_DIR_B = Path(os.environ.get("ASGARD_LAB_B_STATE_DIR") or f"{STATE_DIR}-b").resolve()


@pytest.fixture(scope="session")
def second_lab(lab):
    """A second lab with its own state dir, API server and pod network in the same network namespace (another
    "cluster" for the fleet tests), shared and stopped like ``lab``."""
    yield from _shared_lab(STATE_DIR_B)


@pytest.fixture
def k8s_client(lab):
    from kubernetes import client, config

    cfg = client.Configuration()
    config.load_kube_config(config_file=str(lab.kubeconfig), client_configuration=cfg)
    api = client.ApiClient(cfg)
    yield api
    api.close()


@pytest.fixture
def lab_namespace(lab):
    name = f"t-{uuid.uuid4().hex[:10]}"
    r = lab.request("POST", "/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    assert r.status_code == 201, r.text
    yield name
    lab.request("DELETE", f"/api/v1/namespaces/{name}")
