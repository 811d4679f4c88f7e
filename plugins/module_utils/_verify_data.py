# Copyright: (c) 2026, asgard.mlflow contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: small readers of Kubernetes objects shared by the verify steps, the plan and the report."""

from __future__ import annotations

from datetime import UTC, datetime

try:  # the one redact() (settings split, phase 1)
    from ansible_collections.asgard.mlflow.plugins.module_utils._redact import redact
except ImportError:  # pragma: no cover - TEMPORARY until the settings split is merged
    import re as _re

    _USERINFO = _re.compile(r"(?P<p>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@'\"]*:)[^@\s'\"]+@")
    _PAIR = _re.compile(
        r"(?i)(?P<p>\b[\w.-]*(?:password|passwd|pwd|secret|secret[_-]?key|token|api[_-]?key|access[_-]?key|"
        r"private[_-]?key|credentials?)\b['\"]?\s*[=:]\s*)(?P<q>['\"]?)(?!\*\*\*)[^\s'\",;&}]+")
    _AUTH = _re.compile(r"(?i)(?P<p>\b(?:bearer|basic)\s+)[A-Za-z0-9._~+/=-]{8,}")

    def redact(text, name="", limit=0):
        if text is None:
            return None
        out = _USERINFO.sub(r"\g<p>***@", str(text))
        out = _PAIR.sub(r"\g<p>\g<q>***", out)
        out = _AUTH.sub(r"\g<p>***", out)
        if limit and len(out) > limit:
            out = out[: limit - 3] + "..."
        return out


class VerifyError(ValueError):
    """Bad input to the analysis; the message names the field and the expected form."""


def obj(value, field: str) -> dict:
    """One API object (or None/'' -> {})."""
    if value is None or value == "":
        return {}
    if not isinstance(value, dict):
        raise VerifyError(f"{field}: expected a Kubernetes object (mapping), got {type(value).__name__}")
    return value


def objs(value, field: str) -> list[dict]:
    """A list of API objects (or a List object with ``items``)."""
    if value is None or value == "":
        return []
    if isinstance(value, dict):
        value = value.get("items") or [] if "items" in value else [value]
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise VerifyError(f"{field}: expected a list of Kubernetes objects")
    return value


def parse_time(value, field: str = "now") -> datetime | None:
    if not value:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    text = str(value).strip().replace("Z", "+00:00")
    try:
        dt = datetime.fromisoformat(text)
    except ValueError as exc:
        raise VerifyError(f"{field}: expected an ISO 8601 timestamp such as 2025-10-28T12:00:00Z, got {value!r}") from exc
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def as_int(value, field: str, minimum: int | None = None) -> int:
    if isinstance(value, bool):
        raise VerifyError(f"{field}: expected an integer, got {value!r}")
    try:
        out = int(value)
    except (TypeError, ValueError) as exc:
        raise VerifyError(f"{field}: expected an integer, got {value!r}") from exc
    if minimum is not None and out < minimum:
        raise VerifyError(f"{field}: expected an integer >= {minimum}, got {out}")
    return out


def condition(o: dict, ctype: str) -> dict:
    for cond in (o.get("status") or {}).get("conditions") or []:
        if cond.get("type") == ctype:
            return cond
    return {}


def selector_matches(selector: dict, labels: dict) -> bool:
    """A Service-style equality selector (or a Deployment matchLabels) against labels. Empty matches nothing."""
    if not selector:
        return False
    labels = labels or {}
    return all(labels.get(k) == v for k, v in selector.items())


def live(pods: list[dict]) -> list[dict]:
    """The pods that are not being deleted."""
    return [p for p in pods if not (p.get("metadata") or {}).get("deletionTimestamp")]


def fmt_labels(labels: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted((labels or {}).items())) or "{}"


def redact_deep(value, limit: int = 400):
    """Redact every string in a nested value (lists capped at 20 items)."""
    if isinstance(value, str):
        return redact(value, limit=limit)
    if isinstance(value, list):
        return [redact_deep(v, limit) for v in value[:20]]
    if isinstance(value, dict):
        return {k: redact_deep(v, limit) for k, v in value.items()}
    return value


def fmt_ms(v) -> str:
    return f"{v:.0f} ms" if isinstance(v, int | float) and not isinstance(v, bool) else "-"


try:  # the one container rule (settings split, phase 1)
    from ansible_collections.asgard.mlflow.plugins.module_utils._errors import ContainerError
    from ansible_collections.asgard.mlflow.plugins.module_utils._server_command import mlflow_container
    from ansible_collections.asgard.mlflow.plugins.module_utils._settings import server_settings
except ImportError:  # pragma: no cover - TEMPORARY until the settings split is merged
    from ansible_collections.asgard.mlflow.plugins.module_utils import mlflow_settings as _ms

    server_settings = _ms.server_settings

    class ContainerError(_ms.MlflowSettingsError):
        def __init__(self, code, message, evidence=None):
            super().__init__(message)
            self.code = code
            self.evidence = evidence or {}

    def mlflow_container(pod_spec, name=None):
        spec = pod_spec.get("spec", pod_spec) if "containers" not in pod_spec else pod_spec
        spec = (spec.get("template") or {}).get("spec", spec) if "containers" not in spec else spec
        containers = spec.get("containers") or []
        if name:
            for i, c in enumerate(containers):
                if c.get("name") == name:
                    return i, c
            raise ContainerError("CONTAINER_NOT_FOUND", f"container {name!r} is not in the pod spec",
                                 {"container": name})
        try:
            idx, c, _how = _ms._find_container({"spec": {"template": {"spec": spec}}}, None)
        except _ms.MlflowSettingsError as exc:
            code = "SEVERAL_MLFLOW_CONTAINERS" if "several" in str(exc) else "NO_MLFLOW_CONTAINER"
            raise ContainerError(code, str(exc), {"containers": [c.get("name") for c in containers]}) from exc
        return idx, c
