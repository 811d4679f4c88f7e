"""Shared pytest fixtures: the local Kubernetes lab and clients for it.

- ``lab`` (session): starts ``python -m asgardlab up --state-dir <repo>/.lab`` unless the lab is already
  running, and stops it at the end if a test run started it and no other user (pytest-xdist worker, pytest
  session, molecule) still uses it (``asgardlab.users``). Attributes: ``kubeconfig`` (Path), ``api`` (URL),
  ``token``, ``ca`` (Path of the CA certificate), ``requests_log`` (Path), ``state_dir``, ``started_at``;
  helpers ``faults.add(**spec)`` / ``faults.clear()`` / ``faults.list()`` (this process's faults only),
  ``request(method, path, **kw)`` (an authenticated ``requests`` call), ``log_mark()`` and
  ``requests_since(mark, namespace=None)`` to read what clients sent, ``env(tmp_path)`` (environment for
  ansible-playbook/kubectl with a TMPDIR unique to this lab start, as kubernetes.core caches discovery in $TMPDIR).
- ``second_lab`` (session): a second lab (state dir ``<state>-b`` or ``ASGARD_LAB_B_STATE_DIR``) in the same network
  namespace, with its own API server and pod network: another "cluster" for the multi-cluster (fleet) tests; same
  handle and sharing rules as ``lab``.
- ``k8s_client``: a ``kubernetes.client.ApiClient`` built from the lab kubeconfig.
- ``lab_namespace``: a fresh namespace per test (name), deleted afterwards.

Tests run in parallel (pytest-xdist) against one lab: keep to your own namespace, scope faults' ``path_regex``
to it, filter the request log by namespace or user, take free ports; a test that cannot carries
``@pytest.mark.xdist_group("lab_global")`` (see docs/HACKING.md, "Parallel tests").
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import resource
import shutil
import sys
import tempfile
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
from helpers.ansible_runner import MODULE_PYTHON  # noqa: E402

VENV_BIN = Path(sys.executable).parent


class _Faults:
    """Lab-wide API faults (``/lab/faults``), owned by this test process: ``clear()`` and ``list()`` see only the
    faults this process added, so parallel workers never remove or count each other's. A fault still hits every
    request its ``path_regex`` matches: scope it to the test's namespace (``/namespaces/{ns}/...``)."""

    def __init__(self, lab: LabHandle) -> None:
        self._lab = lab
        self.owner = f"pytest-{os.getpid()}"

    def add(self, **spec) -> dict:
        r = self._lab.request("POST", "/lab/faults", json={"owner": self.owner, **spec})
        r.raise_for_status()
        return r.json()

    def clear(self) -> None:
        self._lab.request("DELETE", "/lab/faults", params={"owner": self.owner}).raise_for_status()

    def list(self) -> list[dict]:
        return self._lab.request("GET", "/lab/faults", params={"owner": self.owner}).json()["faults"]

    def list_all(self) -> list[dict]:
        """Every fault in the lab, whoever added it."""
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

    def requests_since(self, mark: int, namespace: str | None = None) -> list[dict]:
        """Entries of requests.log written after ``mark``; with ``namespace``, only requests to that namespace
        (its objects, or the namespace itself). Other tests run at the same time: filter by namespace or user."""
        with open(self.requests_log, encoding="utf-8") as f:
            f.seek(mark)
            entries = [json.loads(line) for line in f if line.strip()]
        if namespace is not None:
            entries = [e for e in entries if f"/namespaces/{namespace}/" in e["path"] or e["path"].endswith(f"/namespaces/{namespace}")]
        return entries

    def env(self, **extra) -> dict:
        """Environment for ansible-playbook / kubectl against the lab (fresh TMPDIR per lab start)."""
        env = dict(os.environ)
        env.update({
            "KUBECONFIG": str(self.kubeconfig),
            "ANSIBLE_PYTHON_INTERPRETER": MODULE_PYTHON,
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


@pytest.fixture(scope="session")
def lab():
    """The running lab; started if needed. Several pytest processes (pytest-xdist workers, other sessions,
    molecule) may share it: each registers in <state>/users/<pid> under a lock (asgardlab.users), and the last
    one out stops it if a test run started it."""
    t0 = time.monotonic()
    try:
        started = lab_users.acquire(STATE_DIR, os.getpid(), timeout=120)
    except lab_users.LabStartError as e:
        pytest.fail(str(e))
    if started:
        print(f"\nlab started in {time.monotonic() - t0:.2f}s")
    handle = LabHandle(STATE_DIR)
    yield handle
    lab_users.release(STATE_DIR, os.getpid())


# ASGARD_LAB_B_STATE_DIR: the second lab ("another cluster") of the multi-cluster tests (default: <state>-b)
STATE_DIR_B = Path(os.environ.get("ASGARD_LAB_B_STATE_DIR") or f"{STATE_DIR}-b").resolve()


@pytest.fixture(scope="session")
def second_lab(lab):
    """A second lab with its own state dir, API server and pod network in the same network namespace (another
    "cluster" for the fleet tests), started, shared and stopped like ``lab``."""
    if STATE_DIR_B == STATE_DIR:
        yield lab  # ASGARD_LAB_B_STATE_DIR pointed at the first lab: one cluster seen through two connections
        return
    t0 = time.monotonic()
    try:
        started = lab_users.acquire(STATE_DIR_B, os.getpid(), timeout=120)
    except lab_users.LabStartError as e:
        pytest.fail(str(e))
    if started:
        print(f"\nsecond lab started in {time.monotonic() - t0:.2f}s")
    handle = LabHandle(STATE_DIR_B)
    yield handle
    lab_users.release(STATE_DIR_B, os.getpid())


# ---------------------------------------------------------------------------------------------------- lab_global
# Tests run in parallel (pytest-xdist, `-n N --dist loadgroup`) against one lab. A test that cannot keep to its own
# namespace (lab-wide faults without a namespace in path_regex, request-log counts it cannot filter by namespace or
# user) carries @pytest.mark.xdist_group("lab_global"): such tests run on one worker, one after another, and each
# one's call runs alone (an exclusive lock; every other lab test holds the lock shared from setup to teardown).
LAB_GLOBAL = "lab_global"


def _is_lab_global(item) -> bool:
    return any((m.args[0] if m.args else m.kwargs.get("name")) == LAB_GLOBAL for m in item.iter_markers("xdist_group"))


@contextlib.contextmanager
def _lab_share(exclusive: bool):
    """Readers-writer lock over lab tests across processes; a turnstile keeps a waiting writer from starving."""
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    with open(STATE_DIR / "tests.turnstile", "a") as turn, open(STATE_DIR / "tests.lock", "a") as lock:
        fcntl.flock(turn, fcntl.LOCK_EX)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        finally:
            fcntl.flock(turn, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


# Session reports that pytest-xdist workers hand to the controller (config.workeroutput), written there once.
_HANDED_OVER: dict[str, list[dict]] = {}


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    for key, part in getattr(node, "workeroutput", {}).items():
        if key == "fault_matrix":
            _HANDED_OVER.setdefault(key, []).append(part)


def pytest_sessionfinish(session, exitstatus):
    if _MEASURED and not hasattr(session.config, "workerinput"):
        try:
            seen = json.loads(DURATIONS_OUT.read_text())
        except (OSError, ValueError):
            seen = {}
        seen.update({k: round(v, 1) for k, v in _MEASURED.items()})
        DURATIONS_OUT.parent.mkdir(parents=True, exist_ok=True)
        DURATIONS_OUT.write_text(json.dumps(dict(sorted(seen.items())), indent=0) + "\n")
        CPU_OUT.write_text(json.dumps({k: round(v, 1) for k, v in sorted(_CPU.items())}, indent=0) + "\n")
    parts = _HANDED_OVER.pop("fault_matrix", None)
    if not parts:
        return
    sys.path.insert(0, str(REPO / "tests" / "integration"))
    import fault_matrix_report as report

    cases = report.take_over(parts)
    how = report.write(cases)
    tr = session.config.pluginmanager.get_plugin("terminalreporter")
    if tr is not None:
        tr.write_line(f"fault matrix: {report.REPORT} {how or 'not rewritten'} (rows of this session {sorted(report.ROWS)})")


# Grouping for `--dist loadgroup`. pytest-xdist 3.8 marks a test's group by rewriting its node id, which pytest 9.2
# ignores (structured node ids; pytest-dev/pytest-xdist#1386): the groups would silently be lost. So the groups
# travel beside the ids: each worker writes {node id: group} to $ASGARD_XDIST_GROUPS/<worker>.json at collection,
# and the controller's scheduler (_GroupScheduling, a loadscope scheduler) reads it. A test's group is
# - "lab_global" if it carries xdist_group("lab_global") (whatever else it carries);
# - else its xdist_group name(s), joined with "_" as xdist does;
# - else its module's path if it uses a module-scoped fixture of its own module (one deployed MLflow, say), so that
#   fixture is set up once (autouse module fixtures, named _like_this by convention, do not tie tests together);
# - else none: the test is scheduled on its own.
def _group_of(item) -> str | None:
    names = {str(m.args[0] if m.args else m.kwargs.get("name", "default")) for m in item.iter_markers("xdist_group")}
    if LAB_GLOBAL in names:
        return LAB_GLOBAL
    if names:
        return "_".join(sorted(names))
    info = getattr(item, "_fixtureinfo", None)
    mod = getattr(item, "module", None)
    if info is None or mod is None:
        return None
    for name, defs in info.name2fixturedefs.items():
        d = defs[-1] if defs else None
        if (d is not None and d.scope == "module" and not name.startswith("_") and not getattr(d, "_autouse", False)
                and getattr(d.func, "__module__", None) == mod.__name__):
            return item.nodeid.split("::", 1)[0]
    return None


# Longest first: units (groups, or single tests) are handed out in order of their expected time, from
# tests/durations.json (seconds per node id, setup + call + teardown, from an earlier run; a test not in it counts
# DEFAULT_SECONDS for its directory: playbook runs against deployed MLflows take about a minute, lab conformance
# checks seconds), so a long test does not start last and keep one worker busy after the others are done. Each
# run writes what it measured to .build/test-logs/durations.json; copy it over tests/durations.json to refresh.
DURATIONS = REPO / "tests" / "durations.json"
DURATIONS_OUT = REPO / ".build" / "test-logs" / "durations.json"
DEFAULT_SECONDS = {"tests/integration/": 60.0, "tests/lab_tests/": 10.0}


def _default_seconds(nodeid: str) -> float:
    return next((v for k, v in DEFAULT_SECONDS.items() if nodeid.startswith(k)), 5.0)
_MEASURED: dict[str, float] = {}


def pytest_configure(config):
    if getattr(config.option, "dist", "no") == "loadgroup" and not hasattr(config, "workerinput"):
        # the controller, before it starts the workers (they inherit the environment); the workers order the
        # collection (longest unit first) and the scheduler keeps that order
        os.environ["ASGARD_XDIST_GROUPS"] = tempfile.mkdtemp(prefix="asgard-xdist-groups-")
        config.option.loadscopereorder = False


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    where = os.environ.get("ASGARD_XDIST_GROUPS")
    worker = getattr(config, "workerinput", {}).get("workerid")
    if not where or not worker:
        return
    groups = {item.nodeid: g for item in items if (g := _group_of(item))}
    try:
        known = json.loads(DURATIONS.read_text())
    except (OSError, ValueError):
        known = {}
    cost: dict[str, float] = {}
    for item in items:
        unit = groups.get(item.nodeid, item.nodeid)
        cost[unit] = cost.get(unit, 0.0) + float(known.get(item.nodeid) or _default_seconds(item.nodeid))
    first = {}
    for i, item in enumerate(items):
        first.setdefault(groups.get(item.nodeid, item.nodeid), i)
    order = {id(item): i for i, item in enumerate(items)}
    items.sort(key=lambda it: (-cost[u := groups.get(it.nodeid, it.nodeid)], first[u], order[id(it)]))
    tmp = Path(where) / f".{worker}.json"
    tmp.write_text(json.dumps(groups))
    tmp.rename(Path(where) / f"{worker}.json")


def pytest_runtest_logreport(report):
    if "lab" in getattr(report, "keywords", {}) or report.nodeid.startswith(("tests/lab_tests/", "tests/integration/")):
        _MEASURED[report.nodeid] = _MEASURED.get(report.nodeid, 0.0) + report.duration
        for key, value in report.user_properties:
            if key == "cpu_children":
                _CPU[report.nodeid] = _CPU.get(report.nodeid, 0.0) + value


# CPU seconds of what a test ran (ansible-playbook with its forks and modules, kubectl, ...: the worker's waited-for
# children, getrusage), setup to teardown; written with the durations to .build/test-logs/cpu.json. The lab's pods
# (MLflow) are the lab's children, not counted here. Where the suite's CPU goes, per test (docs/HACKING.md).
CPU_OUT = DURATIONS_OUT.with_name("cpu.json")
_CPU: dict[str, float] = {}
_CPU_START = pytest.StashKey[float]()


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    item.stash[_CPU_START] = _children_cpu()
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):
    try:
        return (yield)
    finally:
        if _CPU_START in item.stash:
            item.user_properties.append(("cpu_children", round(_children_cpu() - item.stash[_CPU_START], 2)))


def pytest_unconfigure(config):
    where = os.environ.get("ASGARD_XDIST_GROUPS")
    if where and not hasattr(config, "workerinput"):
        shutil.rmtree(where, ignore_errors=True)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    if getattr(config.option, "dist", "no") != "loadgroup" or not os.environ.get("ASGARD_XDIST_GROUPS"):
        return None
    from xdist.scheduler import LoadScopeScheduling

    class _GroupScheduling(LoadScopeScheduling):
        """loadscope with the groups the workers wrote (a test without a group is a unit of its own)."""

        _groups: dict[str, str] | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self._groups is None:
                files = sorted(Path(os.environ["ASGARD_XDIST_GROUPS"]).glob("gw*.json"))
                self._groups = json.loads(files[0].read_text()) if files else {}
            return self._groups.get(nodeid, nodeid)

    return _GroupScheduling(config, log)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    if "lab" not in getattr(item, "fixturenames", ()) or _is_lab_global(item):
        return (yield)
    with _lab_share(exclusive=False):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    if "lab" not in getattr(item, "fixturenames", ()) or not _is_lab_global(item):
        return (yield)
    with _lab_share(exclusive=True):
        return (yield)


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
