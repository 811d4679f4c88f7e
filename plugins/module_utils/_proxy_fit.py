# Copyright: (c) 2026, asgard.mlflow contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: what a proxy in front of the MLflow server (an Ingress or a Gateway API HTTPRoute) must fit, the rules
the verify role's ingress step applies to both: how long it must wait for the server, which request paths reach
the server's routes, and which of its hosts the server refuses (MLflow >= 3.5's Host check)."""

from __future__ import annotations

from ansible_collections.asgard.mlflow.plugins.module_utils import _mlflow_rules as R
from ansible_collections.asgard.mlflow.plugins.module_utils import _step_settings as S


def needed_timeout(settings: dict | None, min_gunicorn_timeout: int) -> int:
    """Seconds a proxy must wait for the server: gunicorn's --timeout (at least verify_min_gunicorn_timeout,
    which verify enforces); on uvicorn, which has no request timeout, verify_min_gunicorn_timeout."""
    t = S.gunicorn_timeout(settings) if S.server(settings) == "gunicorn" else None
    return max(int(min_gunicorn_timeout), t or 0)


def path_fits(path: str, prefix: str) -> bool:
    """A proxy path reaches the server's routes: ``/`` always; with a prefix, the prefix, a path under it or a
    path above it; without one, only ``/``."""
    p = path.rstrip("/")
    if not p:
        return True
    return bool(prefix) and (p == prefix or p.startswith(prefix + "/") or prefix.startswith(p + "/"))


def refused_hosts(settings: dict | None, hosts) -> list[str]:
    """The hosts the server answers 403 Invalid Host header for (MLflow >= 3.5 with the Host check on; else
    none): those its allowed hosts do not match."""
    s = settings or {}
    if not s.get("host_check") or s.get("allowed_hosts") is None:
        return []
    patterns = R.effective_allowed_hosts(s.get("allowed_hosts"))
    return [h for h in hosts if not R.host_allowed(h, patterns)]
