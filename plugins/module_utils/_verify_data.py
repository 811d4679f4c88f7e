# Copyright: (c) 2026, asgard.mlflow contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: small readers of Kubernetes objects shared by the verify steps, the plan and the report."""

from __future__ import annotations

from datetime import datetime, timezone


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
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    text = str(value).strip().replace("Z", "+00:00")
    try:
        dt = datetime.fromisoformat(text)
    except ValueError as exc:
        raise VerifyError(f"{field}: expected an ISO 8601 timestamp such as 2025-10-28T12:00:00Z, got {value!r}") from exc
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


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
    """The condition of type ``ctype`` in an object's ``status.conditions`` ({} when absent)."""
    return condition_in((o.get("status") or {}).get("conditions"), ctype)


def condition_in(conditions: list | None, ctype: str) -> dict:
    """The condition of type ``ctype`` in a conditions list (a route's per-parent status has one of its own)."""
    return next((c for c in conditions or [] if c.get("type") == ctype), {})


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


def fmt_ms(v) -> str:
    return f"{v:.0f} ms" if isinstance(v, int | float) and not isinstance(v, bool) else "-"


def helm_release(kube_obj: dict) -> str | None:
    """None when Helm does not manage the object (Helm 3's ``app.kubernetes.io/managed-by: Helm`` label or
    ``meta.helm.sh/`` annotations); else its release: the release-name annotation, the ``app.kubernetes.io/instance``
    label, or ``""`` when neither names it."""
    meta = kube_obj.get("metadata") or {}
    labels, ann = meta.get("labels") or {}, meta.get("annotations") or {}
    if labels.get("app.kubernetes.io/managed-by") != "Helm" and not any(k.startswith("meta.helm.sh/") for k in ann):
        return None
    return ann.get("meta.helm.sh/release-name") or labels.get("app.kubernetes.io/instance") or ""
