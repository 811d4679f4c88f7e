# Copyright: (c) 2026, asgard.mlflow contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: the credentials verify sends to an MLflow started with ``--app-name basic-auth`` (HTTP basic auth).

The user is ``auth_username``; the password comes from ``auth_secret`` - a Secret of the namespace, ``{name, key,
username_key}`` with the keys the deploy role writes (``admin_password``, ``admin_username``), so ``{name:
mlflow-auth}`` alone works with a deployment made by asgard.mlflow.deploy - or from ``auth_password`` (a vaulted
variable). Exactly one Secret is read (GET, the object the shipped RBAC allows). The password is never part of an
error, a result or a repr.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field

from ansible_collections.asgard.mlflow.plugins.module_utils._verify_data import VerifyError

# the keys of the Secret asgard.mlflow.deploy creates (deploy_auth_secret_name, default mlflow-auth)
PASSWORD_KEY = "admin_password"
USERNAME_KEY = "admin_username"
SECRET_FIELDS = ("name", "key", "username_key")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DATA_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")


@dataclass(frozen=True)
class SecretRef:
    name: str
    key: str = PASSWORD_KEY
    username_key: str = USERNAME_KEY


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)
    source: str = ""  # where the password came from (for findings and errors; never the value)

    @property
    def pair(self) -> tuple[str, str]:
        return (self.username, self.password)


def parse_secret(value, field_name: str = "auth_secret") -> SecretRef | None:
    """``auth_secret`` as given: a mapping, its JSON text, ``name=mlflow-auth key=...`` or just the Secret's name
    (what ``-e`` gives from a shell). Empty means no Secret."""
    expected = (f"{field_name}: expected a mapping {{name: <Secret name>, key: <key of the password, default "
                f"{PASSWORD_KEY}>, username_key: <default {USERNAME_KEY}>}} (or just the Secret's name)")
    if value is None or value == "" or value == {}:
        return None
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("{"):
            try:
                value = json.loads(text)
            except ValueError:
                raise VerifyError(f"{expected}, got a string that is not a JSON object") from None
        elif "=" in text:
            parts = [p for p in re.split(r"[\s,]+", text) if p]
            if not all("=" in p for p in parts):
                raise VerifyError(f"{expected}, got a string that is neither key=value pairs nor a name")
            value = dict(p.split("=", 1) for p in parts)
        else:
            value = {"name": text}
    if not isinstance(value, dict):
        raise VerifyError(f"{expected}, got {type(value).__name__}")
    unknown = sorted(set(value) - set(SECRET_FIELDS))
    if unknown:
        raise VerifyError(f"{field_name}: unknown key(s) {', '.join(map(str, unknown))} (expected {', '.join(SECRET_FIELDS)})")
    name = value.get("name")
    if not isinstance(name, str) or not name:
        raise VerifyError(f"{field_name}.name: missing; {expected}")
    if not _DNS_SUBDOMAIN.match(name) or len(name) > 253:
        raise VerifyError(f"{field_name}.name: {name!r} is not a Secret name (a DNS-1123 subdomain)")
    ref = {"name": name}
    for k in ("key", "username_key"):
        v = value.get(k)
        if v in (None, ""):
            continue
        if not isinstance(v, str) or not _DATA_KEY.match(v) or len(v) > 253:
            raise VerifyError(f"{field_name}.{k}: {v!r} is not a Secret key (letters, digits, '-', '_', '.')")
        ref[k] = v
    return SecretRef(**ref)


def option_errors(username: str, password: str, secret, n=lambda s: s) -> list[str]:
    """Every problem of the three options at once (``n`` adds the variable prefix)."""
    e = []
    try:
        ref = parse_secret(secret, n("auth_secret"))
    except VerifyError as exc:
        e.append(str(exc))
        ref = "invalid"
    if username and ":" in username:
        e.append(f"{n('auth_username')}: a basic-auth user name cannot contain ':'")
    if password and ref:
        e.append(f"{n('auth_password')} / {n('auth_secret')}: give one password source, not both")
    if username and not password and not ref:
        e.append(f"{n('auth_username')}: set where its password comes from: {n('auth_secret')} (a Secret in the "
                 f"namespace, e.g. {{name: mlflow-auth}} as asgard.mlflow.deploy writes it) or {n('auth_password')} "
                 "(a vaulted variable)")
    if password and not username:
        e.append(f"{n('auth_password')}: set {n('auth_username')} too (the user of HTTP basic auth)")
    return e


def resolve(get, namespace: str, username: str, password: str, secret, n=lambda s: s) -> Credentials | None:
    """The credentials to send, or None. ``get(what, path)`` reads one API object (None when absent; raises an
    exception with ``status`` on 401/403). Raises VerifyError naming the option; never with the password."""
    ref = parse_secret(secret, n("auth_secret"))
    if password:
        return Credentials(username, password, n("auth_password"))
    if ref is None:
        return None
    where = f"Secret {namespace}/{ref.name}"
    try:
        obj = get(where, f"/api/v1/namespaces/{namespace}/secrets/{ref.name}")
    except Exception as exc:  # noqa: BLE001 - ReadError/KubeError: only their status is used
        status = getattr(exc, "status", None)
        if status in (401, 403):
            raise VerifyError(f"{n('auth_secret')}: reading {where} was refused ({status}): verify needs `get` on that "
                              "one Secret (deploy/rbac/ grants it for mlflow-auth); grant it or use "
                              f"{n('auth_password')}. Nothing was changed.") from None
        raise VerifyError(f"{n('auth_secret')}: reading {where} failed (HTTP {status}). Nothing was changed.") from None
    if obj is None:
        raise VerifyError(f"{n('auth_secret')}.name: {where} does not exist; expected the Secret with the MLflow "
                          f"admin credentials in {n('namespace')} (asgard.mlflow.deploy writes it as "
                          "deploy_auth_secret_name, default mlflow-auth). Nothing was changed.")
    data = obj.get("data") or {}
    pw = _decoded(data, ref.key, where, n("auth_secret") + ".key")
    user = username
    if not user:
        if ref.username_key not in data:
            raise VerifyError(f"{n('auth_username')}: empty, and {where} has no key {ref.username_key!r} "
                              f"({n('auth_secret')}.username_key) to read it from; set {n('auth_username')}. "
                              "Nothing was changed.")
        user = _decoded(data, ref.username_key, where, n("auth_secret") + ".username_key")
    return Credentials(user, pw, f"{n('auth_secret')} ({where}, key {ref.key})")


def _decoded(data: dict, key: str, where: str, field_name: str) -> str:
    if key not in data:
        raise VerifyError(f"{field_name}: {where} has no key {key!r} (its keys: {', '.join(sorted(data)) or 'none'}). "
                          "Nothing was changed.")
    try:
        value = base64.b64decode(data[key], validate=True).decode("utf-8")
    except (binascii.Error, ValueError, TypeError):
        raise VerifyError(f"{field_name}: the value of {key!r} in {where} is not base64 UTF-8 text") from None
    if not value:
        raise VerifyError(f"{field_name}: the value of {key!r} in {where} is empty")
    return value
