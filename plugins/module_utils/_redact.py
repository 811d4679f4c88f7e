# Copyright: (c) 2026, asgard.mlflow contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: THE redaction of everything the collection shows that comes from the cluster.

- :func:`redact` masks credentials in a string: URI userinfo (``scheme://user:PASSWORD@host``),
  ``password=``/``token:``/``"api_key": "..."``-style pairs (also ``DB_PASSWORD=...``), ``Bearer``/``Basic``
  credentials; with ``name`` (an env var or field name) that looks secret, the whole value; ``limit`` caps the length.
- :func:`redact_deep` walks an object (a Kubernetes object, a finding's evidence, a diff): strings through
  :func:`redact`, env entries ``{name, value}`` whose name looks secret masked, fields whose name looks secret
  masked, a Secret's ``data``/``stringData`` masked, and kubectl's ``last-applied-configuration`` annotation (which
  repeats the literal env values) dropped.
- :func:`container_view` is the redacted view of a container used for ``--diff``; :func:`contains_credentials`
  says whether a container holds a literal credential (the tasks that send it are then ``no_log``).

The mask is ``***``. Pure Python.
"""

from __future__ import annotations

import re

MASK = "***"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"

_SECRET_NAME = re.compile(r"(PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY|ACCESS_?KEY|PRIVATE|CREDENTIAL)", re.I)
# names that look secret but name a reference, a file or a path, not the credential itself
_SECRET_NAME_EXCEPT = re.compile(r"(NAME|REF|FILE|PATH|DIR)$", re.I)
_USERINFO = re.compile(r"(?P<p>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@'\"]*:)[^@\s'\"]+@")
_PAIR = re.compile(
    r"(?i)(?P<p>\b[\w.-]*(?:password|passwd|pwd|secret|secret[_-]?key|token|api[_-]?key|access[_-]?key|private[_-]?key|credentials?)\b['\"]?\s*[=:]\s*)"
    r"(?P<q>['\"]?)(?!\*\*\*)[^\s'\",;&}]+"
)
_AUTH = re.compile(r"(?i)(?P<p>\b(?:bearer|basic)\s+)[A-Za-z0-9._~+/=-]{8,}")


def looks_secret(name) -> bool:
    """True for an env var or field name that holds a credential (``DB_PASSWORD``, ``api_key``, ``TOKEN``)."""
    name = str(name or "")
    return bool(_SECRET_NAME.search(name)) and not _SECRET_NAME_EXCEPT.search(name)


def redact(text, name="", limit=0):
    """``text`` with credentials masked (None stays None). ``name``: the variable or field it came from."""
    if text is None:
        return None
    if name and looks_secret(name):
        return MASK
    out = str(text)
    out = _USERINFO.sub(rf"\g<p>{MASK}@", out)
    out = _PAIR.sub(rf"\g<p>\g<q>{MASK}", out)
    out = _AUTH.sub(rf"\g<p>{MASK}", out)
    if limit and len(out) > limit:
        out = out[: limit - 3] + "..."
    return out


def redact_deep(value, limit=0):
    """A copy of ``value`` (dicts, lists, strings) with every credential masked; see the module docstring."""
    if isinstance(value, str):
        return redact(value, limit=limit)
    if isinstance(value, (list, tuple)):
        return [redact_deep(v, limit) for v in value]
    if not isinstance(value, dict):
        return value
    secret_obj = value.get("kind") == "Secret"
    out = {}
    for k, v in value.items():
        if k == LAST_APPLIED:
            out[k] = MASK
        elif secret_obj and k in ("data", "stringData") and isinstance(v, dict):
            out[k] = {key: MASK for key in v}
        elif k == "value" and isinstance(v, str) and looks_secret(value.get("name")):
            out[k] = MASK
        elif isinstance(v, str) and looks_secret(k):
            out[k] = MASK
        else:
            out[k] = redact_deep(v, limit)
    return out


def container_view(c):
    """The container's name, command, args, env and probes with credentials masked (what ``--diff`` shows)."""
    view = {"name": c.get("name")}
    for field in ("command", "args"):
        if field in c:
            view[field] = [redact(a) for a in c.get(field) or []]
    if "env" in c:
        view["env"] = redact_deep(list(c.get("env") or []))
    for field in ("startupProbe", "readinessProbe", "livenessProbe"):
        if field in c:
            view[field] = c[field]
    return view


def contains_credentials(c):
    """True when the container holds a literal credential in its command, args or env values."""
    texts = [str(a) for a in (c.get("command") or []) + (c.get("args") or [])]
    for e in c.get("env") or []:
        if "value" in e:
            if looks_secret(e.get("name", "")) and e.get("value"):
                return True
            texts.append(str(e.get("value")))
    return any(redact(t) != t for t in texts)
