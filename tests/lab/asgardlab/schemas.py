"""The real Kubernetes schemas (from the ``kubernetes_validate`` package) and what the lab does with them.

- ``definition_for(rt)``: the schema of a resource type (resolved lazily through ``$ref``).
- ``validate(rt, obj) -> list[FieldError]``: strict validation (unknown fields, wrong types, missing required).
- ``child(schema, key)`` / ``items(schema)``: walk a schema (used by strategic merge patch for merge keys).
- ``openapi_v2()`` / ``openapi_v3_root()`` / ``openapi_v3_gv(gv)``: documents for kubectl, built once, cached.
"""

from __future__ import annotations

import functools
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from . import resources as R
from .resources import ResourceType

# kubernetes-validate is installed apart from .venv's site-packages, in <repo>/.venv/kubernetes-validate
# (requirements-schemas.txt says why); the lab and the tests that validate manifests import it from here.
KUBERNETES_VALIDATE_DIR = Path(__file__).resolve().parents[3] / ".venv" / "kubernetes-validate"
try:
    import kubernetes_validate
except ImportError:
    sys.path.append(str(KUBERNETES_VALIDATE_DIR))
    import kubernetes_validate

_PREFERRED = ("v1.37.0-local-strict", "v1.36.0-local-strict", "v1.35.0-local-strict")
K8S_VERSION = "v1.32.4"


def _schema_dir() -> Path:
    base = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    for name in _PREFERRED:
        if (base / name / "_definitions.json").exists():
            return base / name
    strict = sorted(p for p in base.iterdir() if p.name.endswith("-local-strict"))
    if not strict:
        raise RuntimeError(f"no *-local-strict schemas under {base}")
    return strict[-1]


@functools.cache
def definitions() -> dict[str, dict]:
    with open(_schema_dir() / "_definitions.json", encoding="utf-8") as f:
        defs = json.load(f)["$defs"]
    from .ingress import gwschema  # Gateway API (CRDs in a real cluster): not in kubernetes-validate

    defs.update(gwschema.definitions())
    return defs


@functools.cache
def _gvk_index() -> dict[tuple[str, str, str], str]:
    idx = {}
    for name, d in definitions().items():
        for gvk in d.get("x-kubernetes-group-version-kind") or []:
            idx[(gvk["group"], gvk["version"], gvk["kind"])] = name
    return idx


def def_name(group: str, version: str, kind: str) -> str | None:
    return _gvk_index().get((group, version, kind))


def definition_for(rt: ResourceType) -> dict | None:
    name = def_name(rt.group, rt.version, rt.kind)
    return definitions()[name] if name else None


def resolve(schema: dict | None) -> dict:
    if not schema:
        return {}
    while "$ref" in schema:
        schema = definitions()[schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def child(schema: dict | None, key: str) -> dict:
    s = resolve(schema)
    props = s.get("properties")
    if props and key in props:
        return props[key]
    ap = s.get("additionalProperties")
    if isinstance(ap, dict):
        return ap
    return {}


def items(schema: dict | None) -> dict:
    return resolve(schema).get("items") or {}


# --------------------------------------------------------------------------- validation
@dataclass
class FieldError:
    path: str
    kind: str  # "Required value" | "Invalid value" | "Unsupported value" | "Forbidden"
    detail: str = ""
    value: object = None

    def __str__(self) -> str:
        if self.kind == "Required value":
            return f"{self.path}: Required value" + (f": {self.detail}" if self.detail else "")
        if self.kind == "Invalid value":
            return f"{self.path}: Invalid value: {go_repr(self.value)}: {self.detail}"
        return f"{self.path}: {self.kind}: {self.detail}"


class GoLiteral(str):
    """A value printed verbatim in error messages (Go %#v style), not JSON-quoted."""


def go_repr(v) -> str:
    if isinstance(v, GoLiteral):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if v is None:
        return "null"
    if isinstance(v, dict):
        return '"object"'
    if isinstance(v, list):
        return '"array"'
    return json.dumps(str(v))


def _types(schema: dict) -> list[str]:
    t = schema.get("type")
    if t is None:
        return []
    return [x for x in (t if isinstance(t, list) else [t]) if x != "null"]


def _type_ok(value, t: str) -> bool:
    if t == "object":
        return isinstance(value, dict)
    if t == "array":
        return isinstance(value, list)
    if t == "string":
        return isinstance(value, str)
    if t == "integer":
        return isinstance(value, int) and not isinstance(value, bool) or (isinstance(value, float) and value.is_integer())
    if t == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if t == "boolean":
        return isinstance(value, bool)
    return True


def _json_type(value) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def validate_value(value, schema: dict, path: str, errors: list[FieldError], depth: int = 0) -> None:
    if value is None or depth > 60:
        return
    schema = resolve(schema)
    if "oneOf" in schema:
        alts = [resolve(a) for a in schema["oneOf"]]
        if not any(any(_type_ok(value, t) for t in _types(a)) for a in alts):
            want = " or ".join(t for a in alts for t in _types(a))
            errors.append(FieldError(path, "Invalid value", f"{path} in body must be of type {want}: {json.dumps(_json_type(value))}", value))
        return
    types = _types(schema)
    if types and not any(_type_ok(value, t) for t in types):
        errors.append(FieldError(path, "Invalid value", f"{path} in body must be of type {types[0]}: {json.dumps(_json_type(value))}", value))
        return
    if "enum" in schema and isinstance(value, str) and value not in schema["enum"] and path not in ("apiVersion", "kind"):
        errors.append(FieldError(path, "Unsupported value", f"{json.dumps(value)}: supported values: {', '.join(json.dumps(e) for e in schema['enum'])}"))
    if isinstance(value, dict):
        props = schema.get("properties")
        ap = schema.get("additionalProperties")
        for req in schema.get("required") or []:
            if value.get(req) is None:
                errors.append(FieldError(_join(path, req), "Required value"))
        for k, v in value.items():
            if props is not None and k in props:
                validate_value(v, props[k], _join(path, k), errors, depth + 1)
            elif isinstance(ap, dict):
                validate_value(v, ap, f"{path}[{k}]", errors, depth + 1)
            elif props is not None and ap is False:
                errors.append(FieldError(_join(path, k), "Forbidden", f'unknown field "{_join(path, k)}"'))
    elif isinstance(value, list):
        item = schema.get("items")
        if item:
            for i, v in enumerate(value):
                validate_value(v, item, f"{path}[{i}]", errors, depth + 1)


def validate(rt: ResourceType, obj: dict) -> list[FieldError]:
    schema = definition_for(rt)
    errors: list[FieldError] = []
    if schema:
        validate_value(obj, schema, "", errors)
    return errors


# --------------------------------------------------------------------------- OpenAPI documents
_REF_RE = re.compile(r'"#/\$defs/')


def _fix_types(node, v3: bool):
    """JSON-schema 2020 (type lists, oneOf) -> OpenAPI (single type)."""
    if isinstance(node, list):
        return [_fix_types(x, v3) for x in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for k, v in node.items():
        if k == "type" and isinstance(v, list):
            real = [x for x in v if x != "null"]
            if real:
                out["type"] = real[0]
            continue
        if k == "additionalProperties" and v is False:
            continue
        if k == "properties" and isinstance(v, dict):
            out[k] = {pk: _fix_types(pv, v3) for pk, pv in v.items()}
            continue
        if k == "$ref":
            name = v.rsplit("/", 1)[-1]
            out[k] = ("#/components/schemas/" if v3 else "#/definitions/") + name
            continue
        out[k] = _fix_types(v, v3)
    if "oneOf" in out:
        alts = out.pop("oneOf")
        kinds = {a.get("type") for a in alts}
        out["type"] = "string"
        out["format"] = "int-or-string" if "integer" in kinds else "quantity" if "number" in kinds else out.get("format")
        if out["format"] is None:
            out.pop("format")
        if v3 and "integer" in kinds:
            out.pop("type")
            out["x-kubernetes-int-or-string"] = True
            out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if v3 and "$ref" in out and len(out) > 1:
        ref = out.pop("$ref")
        out["allOf"] = [{"$ref": ref}]
    return out


@functools.cache
def _converted(v3: bool) -> dict[str, dict]:
    return {name: _fix_types(d, v3) for name, d in definitions().items()}


def _ops(rt: ResourceType, def_ref: str, list_ref: str, v3: bool) -> dict[str, dict]:
    gvk = {"group": rt.group, "version": rt.version, "kind": rt.kind}
    base = "/api/v1" if not rt.group else f"/apis/{rt.group}/{rt.version}"
    coll = f"{base}/namespaces/{{namespace}}/{rt.plural}" if rt.namespaced else f"{base}/{rt.plural}"
    item = coll + "/{name}"

    def param(name, where="query", required=False):
        p = {"name": name, "in": where, "required": required, "type": "string"}
        if v3:
            p.pop("type")
            p["schema"] = {"type": "string", "uniqueItems": True}
        return p

    def resp(ref):
        if v3:
            return {"200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": ref}}}}}
        return {"200": {"description": "OK", "schema": {"$ref": ref}}}

    def op(action, ref, params=()):
        o = {
            "operationId": f"{action}{rt.kind}",
            "x-kubernetes-action": action,
            "x-kubernetes-group-version-kind": gvk,
            "parameters": [param(p) for p in params],
            "responses": resp(ref),
        }
        return o

    common = [param("name", "path", True)] + ([param("namespace", "path", True)] if rt.namespaced else [])
    write = ("dryRun", "fieldManager", "fieldValidation")
    return {
        coll: {"get": op("list", list_ref, ("labelSelector", "fieldSelector", "limit", "continue", "watch")),
               "post": op("post", def_ref, write),
               "parameters": common[1:]},
        item: {"get": op("get", def_ref), "put": op("put", def_ref, write),
               "patch": op("patch", def_ref, (*write, "force")),
               "delete": op("delete", def_ref, ("dryRun", "gracePeriodSeconds", "propagationPolicy")),
               "parameters": common},
    }


def _gv_paths(group: str, version: str, v3: bool) -> dict:
    prefix = "#/components/schemas/" if v3 else "#/definitions/"
    paths: dict = {}
    for rt in R.ALL_TYPES:
        if rt.group != group or rt.version != version:
            continue
        name = def_name(rt.group, rt.version, rt.kind)
        lname = def_name(rt.group, rt.version, rt.list_kind)
        if not name:
            continue
        paths.update(_ops(rt, prefix + name, prefix + (lname or name), v3))
    return paths


@functools.cache
def openapi_v2_bytes() -> bytes:
    paths: dict = {}
    for g, v in {(rt.group, rt.version) for rt in R.ALL_TYPES}:
        paths.update(_gv_paths(g, v, False))
    doc = {
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": K8S_VERSION},
        "paths": paths,
        "definitions": _converted(False),
        "securityDefinitions": {"BearerToken": {"type": "apiKey", "name": "authorization", "in": "header"}},
        "security": [{"BearerToken": []}],
    }
    return json.dumps(doc).encode()


def _pb_field(num: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field."""
    n, out = len(payload), bytearray([(num << 3) | 2])
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            break
    return bytes(out) + payload


@functools.cache
def openapi_v2_protobuf() -> bytes:
    """A minimal gnostic ``openapi_v2.Document`` (swagger, info, empty paths), protobuf-encoded.

    kubectl only reads /openapi/v2 (protobuf only) to validate kinds the OpenAPI v3 documents do not cover
    (for served kinds it uses server-side field validation, announced in v3); with no definitions here such
    kinds pass client-side validation and kubectl reports them the way a real cluster does ("no matches for kind").
    """
    info = _pb_field(1, b"Kubernetes") + _pb_field(2, K8S_VERSION.encode())
    return _pb_field(1, b"2.0") + _pb_field(2, info) + _pb_field(8, b"")


def gv_path(group: str, version: str) -> str:
    return f"api/{version}" if not group else f"apis/{group}/{version}"


def openapi_v3_root() -> dict:
    gvs = sorted({(rt.group, rt.version) for rt in R.ALL_TYPES})
    return {
        "paths": {
            gv_path(g, v): {"serverRelativeURL": f"/openapi/v3/{gv_path(g, v)}?hash={_v3_hash(g, v)}"}
            for g, v in gvs
        }
    }


@functools.cache
def _v3_hash(group: str, version: str) -> str:
    import hashlib

    return hashlib.sha512(openapi_v3_bytes(group, version)).hexdigest()[:128].upper()


@functools.cache
def openapi_v3_bytes(group: str, version: str) -> bytes:
    doc = {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": K8S_VERSION},
        "paths": _gv_paths(group, version, True),
        "components": {
            "schemas": _converted(True),
            "securitySchemes": {"BearerToken": {"type": "apiKey", "name": "authorization", "in": "header"}},
        },
    }
    return json.dumps(doc).encode()
