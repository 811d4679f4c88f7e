"""Run real ansible-playbook from tests and read its results (JSON callback).

Usage:
    from helpers.ansible_runner import run_playbook
    res = run_playbook("playbooks/deploy.yml", kubeconfig=lab.kubeconfig, extra_vars={...}, check=True)
    assert res.rc == 0, res.output
    assert res.changed == 0
    res.task("Deploy MLflow")  # list of per-host results of tasks with that name

    # the way an operator types it: every -e name=value arrives as a string
    res = run_playbook("playbooks/verify.yml", argv=["-e", "verify_remediate=false", "-vvv"], env=lab.env())
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
# The Python that runs the modules: .venv/ee (requirements.txt only, on Debian's Python: scripts/setup.sh says why),
# as an execution environment would; the controller's own Python where there is none (a compat venv).
EE_PYTHON = VENV_BIN.parent / "ee" / "bin" / "python"
MODULE_PYTHON = str(EE_PYTHON) if EE_PYTHON.exists() else sys.executable


@dataclass
class PlaybookResult:
    rc: int
    stdout: str
    stderr: str
    data: dict = field(default_factory=dict)

    @property
    def output(self) -> str:
        """Everything printed, for assertion messages."""
        return f"rc={self.rc}\n--- stdout\n{self.stdout[-20000:]}\n--- stderr\n{self.stderr[-5000:]}"

    @property
    def stats(self) -> dict:
        return (self.data.get("stats") or {}).get("localhost", {})

    @property
    def changed(self) -> int:
        return self.stats.get("changed", 0)

    @property
    def failed(self) -> int:
        return self.stats.get("failures", 0) + self.stats.get("unreachable", 0)

    def tasks(self) -> list[dict]:
        out = []
        for play in self.data.get("plays", []):
            for task in play.get("tasks", []):
                out.append(task)
        return out

    def task(self, name: str) -> list[dict]:
        """Host results of every task whose name ends with ``name`` (role prefixes are ignored)."""
        found = []
        for task in self.tasks():
            tname = task.get("task", {}).get("name", "")
            if tname == name or tname.endswith(" : " + name):
                found.extend(task.get("hosts", {}).values())
        return found

    def changed_tasks(self) -> list[str]:
        return [t["task"]["name"] for t in self.tasks() if any(h.get("changed") for h in t.get("hosts", {}).values())]


def ansible_env(kubeconfig: str | os.PathLike | None = None, tmpdir: str | None = None, **extra: str) -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}:{env.get('PATH', '')}"
    env["ANSIBLE_CONFIG"] = str(REPO / "ansible.cfg")
    env["ANSIBLE_PYTHON_INTERPRETER"] = MODULE_PYTHON
    env["ANSIBLE_NOCOLOR"] = "1"
    env["ANSIBLE_FORCE_COLOR"] = "0"
    env.pop("K8S_AUTH_KUBECONFIG", None)
    if kubeconfig:
        env["KUBECONFIG"] = str(kubeconfig)
    if tmpdir:
        # kubernetes.core caches discovery in $TMPDIR/k8srcp-*.json: one cache per lab instance.
        env["TMPDIR"] = tmpdir
    env.update(extra)
    return env


class RunningPlaybook:
    """An ansible-playbook process started by ``start_playbook``; ``wait()`` gives its PlaybookResult."""

    def __init__(self, proc: subprocess.Popen, json_output: bool, cleanup: list[str]):
        self.proc = proc
        self.pid = proc.pid
        self._json = json_output
        self._cleanup = cleanup

    def wait(self, timeout: float | None = 900) -> PlaybookResult:
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
            raise AssertionError(f"ansible-playbook did not finish within {timeout}s:\n{out[-5000:]}\n{err[-3000:]}") from None
        finally:
            for path in self._cleanup:
                if os.path.exists(path):
                    os.unlink(path)
        data = {}
        if self._json:
            start = out.find("{")
            if start >= 0:
                try:
                    data = json.loads(out[start:])
                except json.JSONDecodeError:
                    data = {}
        return PlaybookResult(self.proc.returncode, out, err, data)


def start_playbook(
    playbook: str | os.PathLike,
    *,
    kubeconfig: str | os.PathLike | None = None,
    extra_vars: dict | None = None,
    check: bool = False,
    diff: bool = False,
    verbosity: int = 0,
    tags: str | None = None,
    skip_tags: str | None = None,
    json_output: bool = True,
    tmpdir: str | None = None,
    env: dict | None = None,
    argv: list[str] | None = None,
) -> RunningPlaybook:
    """Start ansible-playbook and return at once (run_playbook's arguments)."""
    playbook = Path(playbook)
    if not playbook.is_absolute():
        playbook = REPO / playbook
    cmd = [str(VENV_BIN / "ansible-playbook"), str(playbook)]
    cleanup = []
    if extra_vars:
        vars_file = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
        json.dump(extra_vars, vars_file)
        vars_file.close()
        cleanup.append(vars_file.name)
        cmd += ["-e", f"@{vars_file.name}"]
    if check:
        cmd.append("--check")
    if diff:
        cmd.append("--diff")
    if verbosity:
        cmd.append("-" + "v" * verbosity)
    if skip_tags:
        cmd += ["--skip-tags", skip_tags]
    if tags:
        cmd += ["--tags", tags]
    cmd += list(argv or [])
    run_env = ansible_env(kubeconfig, tmpdir=tmpdir)
    if json_output:
        run_env["ANSIBLE_STDOUT_CALLBACK"] = "ansible.posix.json"
    if env:
        run_env.update(env)
    proc = subprocess.Popen(cmd, cwd=REPO, env=run_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return RunningPlaybook(proc, json_output, cleanup)


def run_playbook(
    playbook: str | os.PathLike,
    *,
    kubeconfig: str | os.PathLike | None = None,
    extra_vars: dict | None = None,
    check: bool = False,
    diff: bool = False,
    verbosity: int = 0,
    tags: str | None = None,
    skip_tags: str | None = None,
    json_output: bool = True,
    timeout: int = 900,
    tmpdir: str | None = None,
    env: dict | None = None,
    argv: list[str] | None = None,
    cli_vars: list[str] | None = None,
    inventory: str | os.PathLike | None = None,
    extra_args: list[str] | tuple[str, ...] = (),
) -> PlaybookResult:
    """``extra_vars`` go in as a JSON file (typed); ``cli_vars`` as ``-e name=value`` each, strings as an operator
    types them; ``argv``/``extra_args``: more command-line arguments exactly as typed (``["-e",
    "verify_remediate=false", "--forks", "3"]``); ``inventory``: ``-i`` (an inventory source)."""
    argv = list(argv or []) + list(extra_args)
    if inventory:
        argv += ["-i", str(inventory)]
    for item in cli_vars or []:
        argv += ["-e", item]
    return start_playbook(playbook, kubeconfig=kubeconfig, extra_vars=extra_vars, check=check, diff=diff,
                          verbosity=verbosity, tags=tags, skip_tags=skip_tags, json_output=json_output, tmpdir=tmpdir,
                          env=env, argv=argv).wait(timeout)
