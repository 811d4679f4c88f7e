# Copyright: (c) 2026, asgard.mlflow contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: where the verify role runs: a person at a terminal, or AWX/Tower or CI (no dashboard forward there)."""

from __future__ import annotations

import os


def unattended(environ=None, hostvars=None) -> bool:
    """True under AWX/Tower (``AWX_*``/``TOWER_*`` env, ``tower_job_id``/``awx_job_id`` vars) or CI (env ``CI``)."""
    env = os.environ if environ is None else environ
    hv = hostvars or {}
    if any(k.startswith(("AWX_", "TOWER_")) for k in env):
        return True
    if str(env.get("CI", "")).lower() not in ("", "0", "false", "no"):
        return True
    return any(hv.get(k) not in (None, "") for k in ("tower_job_id", "awx_job_id"))
