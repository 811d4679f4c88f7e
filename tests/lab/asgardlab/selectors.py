"""Label and field selectors as the API server parses them."""

from __future__ import annotations

import re

_SET_RE = re.compile(r"^\s*([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")


def _split_terms(selector: str) -> list[str]:
    terms, depth, cur = [], 0, ""
    for ch in selector:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            terms.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        terms.append(cur)
    return [t.strip() for t in terms if t.strip()]


def parse_label_selector(selector: str) -> list[tuple[str, str, list[str]]]:
    """Return requirements (key, op, values). Raises ValueError on a malformed selector."""
    reqs = []
    for term in _split_terms(selector):
        m = _SET_RE.match(term)
        if m:
            reqs.append((m.group(1), m.group(2), [v.strip() for v in m.group(3).split(",") if v.strip()]))
        elif "!=" in term:
            k, v = term.split("!=", 1)
            reqs.append((k.strip(), "!=", [v.strip()]))
        elif "==" in term:
            k, v = term.split("==", 1)
            reqs.append((k.strip(), "=", [v.strip()]))
        elif "=" in term:
            k, v = term.split("=", 1)
            reqs.append((k.strip(), "=", [v.strip()]))
        elif term.startswith("!"):
            reqs.append((term[1:].strip(), "!", []))
        else:
            if not re.match(r"^[\w./-]+$", term):
                raise ValueError(f"unable to parse requirement: {term!r}")
            reqs.append((term, "exists", []))
    return reqs


def match_labels(selector: str, labels: dict) -> bool:
    for key, op, values in parse_label_selector(selector):
        if op == "=" and labels.get(key) != values[0]:
            return False
        if op == "!=" and labels.get(key) == values[0]:
            return False
        if op == "in" and labels.get(key) not in values:
            return False
        if op == "notin" and key in labels and labels.get(key) in values:
            return False
        if op == "exists" and key not in labels:
            return False
        if op == "!" and key in labels:
            return False
    return True


def match_selector_dict(selector: dict | None, labels: dict) -> bool:
    """A LabelSelector object (matchLabels/matchExpressions). An empty selector matches everything."""
    if not selector:
        return True
    labels = labels or {}
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or []:
        k, op, vals = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(k) not in vals:
            return False
        if op == "NotIn" and k in labels and labels[k] in vals:
            return False
        if op == "Exists" and k not in labels:
            return False
        if op == "DoesNotExist" and k in labels:
            return False
    return True


def selector_dict_to_string(selector: dict | None) -> str:
    parts = [f"{k}={v}" for k, v in sorted((selector or {}).get("matchLabels", {}).items())]
    for expr in (selector or {}).get("matchExpressions") or []:
        op = expr["operator"]
        if op in ("In", "NotIn"):
            parts.append(f"{expr['key']} {op.lower()} ({','.join(expr.get('values') or [])})")
        elif op == "Exists":
            parts.append(expr["key"])
        else:
            parts.append("!" + expr["key"])
    return ",".join(parts)


_FIELD_PATHS = {
    "metadata.name": ("metadata", "name"),
    "metadata.namespace": ("metadata", "namespace"),
    "status.phase": ("status", "phase"),
    "spec.nodeName": ("spec", "nodeName"),
    "involvedObject.name": ("involvedObject", "name"),
    "involvedObject.kind": ("involvedObject", "kind"),
    "involvedObject.namespace": ("involvedObject", "namespace"),
    "involvedObject.uid": ("involvedObject", "uid"),
    "type": ("type",),
    "reason": ("reason",),
}


def _field(obj: dict, path: tuple[str, ...]) -> str:
    cur = obj
    for p in path:
        if not isinstance(cur, dict):
            return ""
        cur = cur.get(p)
    return "" if cur is None else str(cur)


def parse_field_selector(selector: str) -> list[tuple[str, str, str]]:
    reqs = []
    for term in _split_terms(selector):
        if "!=" in term:
            k, v = term.split("!=", 1)
            op = "!="
        elif "==" in term:
            k, v = term.split("==", 1)
            op = "="
        elif "=" in term:
            k, v = term.split("=", 1)
            op = "="
        else:
            raise ValueError(f"invalid selector: '{selector}'; can't understand '{term}'")
        k = k.strip()
        if k not in _FIELD_PATHS:
            raise ValueError(f'field label not supported: {k}')
        reqs.append((k, op, v.strip()))
    return reqs


def match_fields(selector: str, obj: dict) -> bool:
    for k, op, v in parse_field_selector(selector):
        actual = _field(obj, _FIELD_PATHS[k])
        if (op == "=" and actual != v) or (op == "!=" and actual == v):
            return False
    return True
