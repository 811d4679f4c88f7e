"""kubernetes.core (real ansible-playbook) against the lab."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PLAYBOOKS = Path(__file__).parent / "playbooks"
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"


def run_playbook(lab, name: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(ANSIBLE_PLAYBOOK), "-i", "localhost,", str(PLAYBOOKS / name), *extra],
        env=lab.env(), capture_output=True, text=True, timeout=240,
    )


def test_k8s_module_create_idempotent_change_check_diff_absent(lab, lab_namespace):
    mark = lab.log_mark()
    res = run_playbook(lab, "k8s_module.yml", "-e", f"ns={lab_namespace}")
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert "failed=0" in res.stdout
    sent = [r for r in lab.requests_since(mark) if lab_namespace in r["path"]]
    # what kubernetes.core sent, as a real cluster would have seen it
    patches = [r for r in sent if r["method"] == "PATCH" and r["path"].endswith("/deployments/web")]
    assert any(r["content_type"] == "application/strategic-merge-patch+json" and r["status"] == 200 for r in patches)
    assert any(r["content_type"] == "application/json-patch+json" and r["status"] == 200 for r in patches)
    assert any(r["content_type"] == "application/json-patch+json" and r["status"] == 422 for r in patches)
    dry = [r for r in sent if "dryRun=All" in r["query"]]
    assert dry, "check mode must use server-side dry run"
    posts = [r for r in sent if r["method"] == "POST" and r["path"].endswith("/deployments")]
    assert [r["status"] for r in posts if "dryRun" not in r["query"]] == [201]
    deletes = [r for r in sent if r["method"] == "DELETE" and r["path"].endswith("/deployments/web")]
    assert [r["status"] for r in deletes] == [200]
    assert all(r["user"] == "asgard-lab-admin" for r in sent)
