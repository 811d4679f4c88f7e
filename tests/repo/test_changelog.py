# Copyright: (c) 2025, asgard.mlflow contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Release hygiene: galaxy.yml's version is a release in changelogs/changelog.yaml and CHANGELOG.rst, fragments
are kept after a release (keep_fragments, so fragments written while a release is prepared are never deleted),
every fragment lints, and every released fragment still exists or was folded in on purpose.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _yaml(path: str):
    return yaml.safe_load((ROOT / path).read_text())


def test_galaxy_version_is_released_in_the_changelog():
    version = _yaml("galaxy.yml")["version"]
    releases = _yaml("changelogs/changelog.yaml")["releases"]
    assert version in releases, f"galaxy.yml version {version} has no entry in changelogs/changelog.yaml: {list(releases)}"
    assert releases[version].get("release_date"), releases[version]
    assert releases[version]["changes"].get("release_summary"), "no release_summary fragment for " + version
    text = (ROOT / "CHANGELOG.rst").read_text()
    assert f"\nv{version}\n" in text, f"CHANGELOG.rst has no v{version} section; run antsibull-changelog generate"


def test_releases_keep_fragments():
    """A release must not delete fragment files other people are writing at the same time."""
    assert _yaml("changelogs/config.yaml")["keep_fragments"] is True


def test_changelog_fragments_lint():
    env = dict(os.environ, PATH=f"{BIN}:{os.environ.get('PATH', '')}", ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"))
    proc = subprocess.run([str(BIN / "antsibull-changelog"), "lint"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0 and proc.stdout.strip() == "", proc.stdout + proc.stderr


def test_released_fragments_exist():
    """Fragments listed under a release are still on disk (they are the source of --refresh-fragments)."""
    releases = _yaml("changelogs/changelog.yaml")["releases"]
    listed = {f for rel in releases.values() for f in rel.get("fragments", [])}
    assert listed, "no fragments recorded in changelogs/changelog.yaml"
    missing = sorted(f for f in listed if not (ROOT / "changelogs" / "fragments" / f).is_file())
    assert missing == [], f"released fragments deleted: {missing}"
