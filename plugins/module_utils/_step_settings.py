# Copyright: (c) 2026, asgard.mlflow contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: step 1b of the verify role, the server settings judged against the role's minimums.

``settings`` is the one settings shape of ``_settings.server_settings()`` (effective values with their sources):
``server``, ``workers`` (effective), ``static_prefix`` (None for none), ``port``, ``gunicorn`` / ``uvicorn``
(the parsed options, with defaults), ``mlflow_version``, ``container``, ``backend_store_uri`` (redacted), ...
The accessors below are the only place that reads it.
"""

from __future__ import annotations

import re

from ansible_collections.asgard.mlflow.plugins.module_utils._findings import finding, step_result
from ansible_collections.asgard.mlflow.plugins.module_utils._verify_data import VerifyError, as_int

_PREFIX_RX = re.compile(r"^(/[A-Za-z0-9._~-]+)+$")


def server(s: dict | None) -> str | None:
    return (s or {}).get("server")


def workers(s: dict | None) -> int | None:
    w = (s or {}).get("workers")
    return w if isinstance(w, int) and not isinstance(w, bool) else None


def workers_in_opts(s: dict | None) -> int | None:
    """The worker count --gunicorn-opts / --uvicorn-opts ask for (mlflow's own --workers overrides it)."""
    opts = (s or {}).get(server(s) or "") if server(s) in ("gunicorn", "uvicorn") else None
    w = (opts or {}).get("workers")
    return w if isinstance(w, int) and not isinstance(w, bool) else None


def gunicorn_timeout(s: dict | None) -> int | None:
    t = ((s or {}).get("gunicorn") or {}).get("timeout")
    return t if isinstance(t, int) and not isinstance(t, bool) else None


def keep_alive(s: dict | None) -> int | None:
    if server(s) == "gunicorn":
        k = ((s or {}).get("gunicorn") or {}).get("keep_alive")
    else:
        k = ((s or {}).get("uvicorn") or {}).get("timeout_keep_alive")
    return k if isinstance(k, int) and not isinstance(k, bool) else None


def static_prefix(s: dict | None) -> str:
    return ((s or {}).get("static_prefix") or "").rstrip("/")


def port(s: dict | None) -> int | None:
    p = (s or {}).get("port")
    return p if isinstance(p, int) and not isinstance(p, bool) else None


def shell_wrapper(s: dict | None) -> dict | None:
    """The shell-wrapper rule's verdict (``_server_command.shell_wrapper``), None when no shell stays PID 1."""
    sw = (s or {}).get("shell_wrapper")
    return sw if isinstance(sw, dict) else None


def grace_period(s: dict | None) -> int:
    g = (s or {}).get("grace_period")
    return g if isinstance(g, int) and not isinstance(g, bool) else 30


def expected_prefix(value) -> str:
    """verify_expected_static_prefix: None or '' (no prefix expected) or a path like /mlflow (no trailing slash)."""
    if value is None or value == "":
        return ""
    if not isinstance(value, str) or not _PREFIX_RX.match(value.rstrip("/") or "/x"):
        raise VerifyError(f"verify_expected_static_prefix: expected '' (no prefix) or a path such as /mlflow "
                          f"(letters, digits, . _ ~ -, starting with /), got {value!r}")
    return value.rstrip("/")


def settings_findings(settings, *, min_workers: int = 4, min_gunicorn_timeout: int = 300,
                      expected_static_prefix=None, error: dict | None = None) -> dict:
    """Step 1b: too few workers, workers said twice, a short gunicorn timeout, a static prefix not expected.

    ``error``: why the settings could not be read (``{code, message, evidence}``, e.g. the one container rule's
    NO_MLFLOW_CONTAINER); it is the step's finding.
    """
    min_workers = as_int(min_workers, "verify_min_workers", 0)
    min_timeout = as_int(min_gunicorn_timeout, "verify_min_gunicorn_timeout", 0)
    expected = expected_prefix(expected_static_prefix)
    if error:
        return step_result("settings", [finding(error["code"], error["message"], error.get("evidence") or {},
                                                step="settings")], "settings not read", {})
    if not settings:
        return step_result("settings", [], "settings not read", {}, status="skipped")
    s = settings
    findings = []
    w, wo = workers(s), workers_in_opts(s)
    if w is not None and min_workers and w < min_workers:
        findings.append(finding("TOO_FEW_WORKERS", f"the server runs {w} worker(s), fewer than {min_workers}",
                                {"workers": w, "minimum": min_workers}))
    if w is not None and wo is not None and wo != w:
        findings.append(finding("WORKERS_INCONSISTENT",
                                f"--{server(s) or 'server'}-opts asks for {wo} worker(s) but mlflow's own --workers "
                                f"({w}) overrides it: the configuration says something it does not do",
                                {"workers": w, "workers_in_opts": wo}))
    t = gunicorn_timeout(s)
    if server(s) == "gunicorn" and t is not None and min_timeout and t < min_timeout:
        findings.append(finding("SHORT_WORKER_TIMEOUT",
                                f"gunicorn --timeout {t}s is below {min_timeout}s: long requests get WORKER TIMEOUT",
                                {"timeout": t, "minimum": min_timeout}))
    actual = static_prefix(s)
    if actual != expected:
        findings.append(finding("STATIC_PREFIX_MISMATCH",
                                f"the server runs with {('--static-prefix=' + actual) if actual else 'no static prefix'}"
                                f" but {('the prefix ' + expected) if expected else 'no prefix'} is expected "
                                f"(verify_expected_static_prefix): the dashboard is under {actual or ''}/",
                                {"static_prefix": actual, "expected": expected}))
    elif actual:
        findings.append(finding("STATIC_PREFIX_SET", f"the server runs with --static-prefix={actual} as expected: the "
                                f"dashboard is under {actual}/, not /", {"static_prefix": actual, "expected": expected}))
    sw = shell_wrapper(s)
    if sw:
        grace = grace_period(s)
        findings.append(finding(
            "SHELL_WRAPPER_NO_EXEC",
            f"`{sw.get('shell') or 'sh -c'}` runs mlflow server without exec ({sw.get('where')}): the shell is PID 1 and "
            f"drops SIGTERM, so every rollout, restart and heal waits the whole grace period ({grace} s) for each old "
            "pod" + ("" if sw.get("fixable") else f"; {sw.get('reason')}"),
            {"where": sw.get("where"), "shell": sw.get("shell"), "grace_period": grace, "fixable": bool(sw.get("fixable")),
             **({} if sw.get("fixable") else {"next_step": sw.get("reason")})}))
    return step_result("settings", findings, summary(s), _details(s))


def summary(s: dict) -> str:
    parts = [f"server {server(s) or '?'}", f"workers {workers(s) if workers(s) is not None else '?'}"]
    if server(s) == "gunicorn":
        parts.append(f"timeout {gunicorn_timeout(s) or 'default'}")
    parts.append(f"static prefix {static_prefix(s) or 'none'}")
    return ", ".join(parts)


def _details(s: dict) -> dict:
    return {"server": server(s), "workers": workers(s), "workers_in_opts": workers_in_opts(s),
            "gunicorn_timeout": gunicorn_timeout(s), "keep_alive": keep_alive(s), "static_prefix": static_prefix(s),
            "port": port(s), "mlflow_version": s.get("mlflow_version"), "container": s.get("container")}
