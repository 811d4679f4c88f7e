"""The one finding catalogue (plugins/module_utils/_findings.py): complete, consistent, used everywhere, and the
table in docs/verify.md is generated from it (scripts/gen-docs.py)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[4]
if str(REPO / ".collections") not in sys.path:
    sys.path.insert(0, str(REPO / ".collections"))

from ansible_collections.asgard.mlflow.plugins.module_utils import _findings as C  # noqa: E402
from ansible_collections.asgard.mlflow.plugins.module_utils._step_logs import DEFAULT_LOG_PATTERNS  # noqa: E402

# calls that emit a finding code as their first argument, anywhere under plugins/
EMITTERS = re.compile(r"\b(?:finding|_finding|_catalogued|TargetError|ContainerError)\(\s*\n?\s*\"([A-Z][A-Z0-9_]+)\"")


def emitted_codes() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for path in sorted((REPO / "plugins").rglob("*.py")):
        for code in EMITTERS.findall(path.read_text(encoding="utf-8")):
            out.setdefault(code, []).append(str(path.relative_to(REPO)))
    return out


def test_every_code_emitted_by_the_collection_is_in_the_catalogue():
    emitted = emitted_codes()
    assert len(emitted) > 40, emitted  # the scan really finds the emitters
    unknown = {c: where for c, where in emitted.items() if c not in C.CATALOGUE}
    assert unknown == {}, f"codes emitted but not catalogued (add them to _findings.py): {unknown}"


def test_old_codes_are_aliases_and_never_emitted():
    emitted = emitted_codes()
    for old, new in C.ALIASES.items():
        assert old not in C.CATALOGUE and new in C.CATALOGUE
        assert old not in emitted, f"{old} is an alias of {new}: emit {new}"
        assert C.lookup(old) is C.CATALOGUE[new] and C.finding(old, "m")["code"] == new


@pytest.mark.parametrize("entry", list(C.CATALOGUE.values()), ids=list(C.CATALOGUE))
def test_each_entry_is_complete(entry):
    assert entry.severity in C.SEVERITIES
    assert entry.action in C.ACTIONS
    assert entry.steps and all(s in C.STEP_TITLES for s in entry.steps)
    assert entry.meaning and entry.next_step
    assert bool(entry.targets) == (entry.action == "patch"), entry
    assert set(entry.targets) <= set(C.PATCH_TARGETS)
    assert not (entry.restart_blocker and entry.action == "restart")


def test_one_severity_vocabulary_for_probe_and_verify():
    from ansible_collections.asgard.mlflow.plugins.module_utils._probe import finding as probe_finding

    assert probe_finding("INVALID_HOST", "m")["severity"] == "critical"
    assert probe_finding("VERSION_FAILED", "m")["severity"] == "warning"
    assert {e.severity for e in C.CATALOGUE.values()} == set(C.SEVERITIES)


def test_the_built_in_log_patterns_are_catalogued():
    for p in DEFAULT_LOG_PATTERNS:
        e = C.CATALOGUE[p["code"]]
        assert "logs" in e.steps and p["severity"] == e.severity


def test_finding_rejects_an_unknown_severity():
    with pytest.raises(ValueError, match="severity must be one of critical, warning, info"):
        C.finding("CRASH_LOOP", "m", severity="error")


def test_docs_verify_md_finding_table_is_generated_from_the_catalogue():
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "gen-docs.py"), "--check"], cwd=REPO,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, f"docs/verify.md differs from the catalogue: run `make docs`\n{proc.stderr}"
    page = (REPO / "docs" / "verify.md").read_text(encoding="utf-8")
    for code in C.CATALOGUE:
        assert f"| `{code}` |" in page
