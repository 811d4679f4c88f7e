"""``fieldValidation``: what the apiserver does with unknown and duplicate fields in a request body.

Sources: kubernetes/website ``content/en/docs/reference/using-api/api-concepts.md`` (Field validation);
apiserver ``pkg/endpoints/handlers/rest.go`` (``fieldValidation``: absent means ``Warn``), ``create.go`` /
``update.go`` (``transformDecodeError``), ``patch.go`` (``applyPatchToObject``, ``jsonPatcher``);
apimachinery ``pkg/util/net/http.go`` (``NewWarningHeader``); ``kubernetes-sigs/json`` (error texts).

- ``Strict``: an unknown or duplicate field fails the request: create/update 400 ``<Kind> in version "<v>" cannot
  be handled as a <Kind>: strict decoding error: unknown field "spec.foo"``, patches 422 ``patch: Invalid value``.
- ``Warn`` (the default): the field is dropped and each problem comes back as a ``Warning: 299 - "..."`` header.
- ``Ignore``: dropped silently.

Server-side apply is different: an unknown field in the applied configuration always fails with the
apiserver's 500 ``failed to create typed patch object (...): .spec.foo: field not declared in schema``.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from . import fieldpath, schemas
from .resources import ResourceType
from .store import ApiError

STRICT, WARN, IGNORE = "Strict", "Warn", "Ignore"


def directive(value: str | None, options_kind: str) -> str:
    """The request's directive; an unsupported value is the apiserver's 422 on ``<options_kind>``."""
    if value in (None, ""):
        return WARN
    if value not in (STRICT, WARN, IGNORE):
        raise ApiError(422, "Invalid", f'{options_kind}.meta.k8s.io "" is invalid: fieldValidation: Unsupported value: '
                       f'{json.dumps(value)}: supported values: "", "Ignore", "Strict", "Warn"',
                       {"group": "meta.k8s.io", "kind": options_kind, "causes": [
                           {"reason": "FieldValueNotSupported", "field": "fieldValidation",
                            "message": f'Unsupported value: {json.dumps(value)}: supported values: "", "Ignore", "Strict", "Warn"'}]})
    return value


# --------------------------------------------------------------------------- duplicates (JSON bodies)
class _Obj(dict):
    duplicates: list[str]


def _pairs(pairs):
    out = _Obj()
    out.duplicates = []
    for k, v in pairs:
        if k in out:
            out.duplicates.append(k)
        out[k] = v
    return out


def loads(raw: bytes) -> tuple[object, list[str]]:
    """JSON with the problems a strict decoder reports for duplicate keys (``duplicate field "a.b"``)."""
    doc = json.loads(raw, object_pairs_hook=_pairs)
    problems: list[str] = []

    def walk(v, path: str) -> None:
        if isinstance(v, _Obj):
            problems.extend(f'duplicate field "{_join(path, k)}"' for k in v.duplicates)
            for k, x in v.items():
                walk(x, _join(path, k))
        elif isinstance(v, list):
            for i, x in enumerate(v):
                walk(x, f"{path}[{i}]")

    walk(doc, "")
    return _plain(doc), problems


def _plain(v):
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_plain(x) for x in v]
    return v


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


# --------------------------------------------------------------------------- unknown fields
def unknown_fields(rt: ResourceType, obj: dict) -> list[tuple[str, str, tuple]]:
    """Fields the schema of ``rt`` does not declare: (decoder path ``spec.foo``, smd path ``.spec.foo``, the keys
    and indexes leading to it)."""
    out: list[tuple[str, str, tuple]] = []
    _walk(obj, schemas.definition_for(rt), "", (), (), out)
    return out


def _walk(v, schema, path: str, smd: tuple, keys: tuple, out: list) -> None:
    n = fieldpath.node(schema, v)
    if isinstance(v, dict) and n.kind == "struct":
        for k, x in v.items():
            if k not in n.fields:
                out.append((_join(path, k), fieldpath.path_string(smd + ("f:" + k,)), keys + (k,)))
            else:
                _walk(x, n.fields[k], _join(path, k), smd + ("f:" + k,), keys + (k,), out)
    elif isinstance(v, dict) and n.elem is not None:
        for k, x in v.items():
            _walk(x, n.elem, _join(path, k), smd + ("f:" + k,), keys + (k,), out)
    elif isinstance(v, list) and n.elem:
        for i, x in enumerate(v):
            pe = fieldpath.item_element(n, x) if n.list_type in ("map", "set") else f"i:{i}"
            _walk(x, n.elem, f"{path}[{i}]", smd + (pe,), keys + (i,), out)


def drop(obj: dict, unknown: list[tuple[str, str, tuple]]) -> dict:
    """``obj`` without the fields ``unknown_fields`` found (what decoding into Go types does)."""
    for _, _, keys in unknown:
        cur = obj
        for k in keys[:-1]:
            cur = cur[k]
        cur.pop(keys[-1], None)
    return obj


# --------------------------------------------------------------------------- the decision
def check(rt: ResourceType, obj: dict, mode: str, duplicates: list[str] = (), *,
          patch_value: Callable[[], str] | None = None) -> list[str]:
    """Apply ``mode`` to ``obj`` in place (unknown fields dropped unless the request fails). Returns the warnings.

    ``patch_value`` (a PATCH request) gives what the 422 quotes: the patch map (strategic merge) or the patched JSON."""
    unknown = unknown_fields(rt, obj)
    problems = list(duplicates) + [f'unknown field "{p}"' for p, _, _ in unknown]
    drop(obj, unknown)
    if not problems or mode == IGNORE:
        return []
    if mode == WARN:
        return problems
    detail = "strict decoding error: " + ", ".join(problems)
    if patch_value is None:
        version = rt.version
        raise ApiError(400, "BadRequest", f'{rt.kind} in version "{version}" cannot be handled as a {rt.kind}: {detail}')
    quoted = json.dumps(patch_value(), ensure_ascii=False)
    raise ApiError(422, "Invalid", f' "" is invalid: patch: Invalid value: {quoted}: {detail}',
                   {"causes": [{"reason": "FieldValueInvalid", "message": f"Invalid value: {quoted}: {detail}", "field": "patch"}]})


def check_apply(rt: ResourceType, config: dict) -> None:
    """Server-side apply converts the configuration to a typed value first; unknown fields fail it (HTTP 500)."""
    unknown = unknown_fields(rt, config)
    if not unknown:
        return
    md = config.get("metadata") or {}
    errors = [f"{smd}: field not declared in schema" for _, smd, _ in unknown]
    text = errors[0] if len(errors) == 1 else "errors:\n" + "\n".join("  " + e for e in errors)
    gvk = f"{rt.group}/{rt.version}, Kind={rt.kind}"
    raise ApiError(500, "", f"failed to create typed patch object ({md.get('namespace', '')}/{md.get('name', '')}; {gvk}): {text}")


def go_map(v) -> str:
    """Go's ``%+v`` of a decoded JSON value (how the apiserver quotes a strategic merge patch in errors)."""
    if isinstance(v, dict):
        return "map[" + " ".join(f"{k}:{go_map(x)}" for k, x in sorted(v.items())) + "]"
    if isinstance(v, list):
        return "[" + " ".join(go_map(x) for x in v) + "]"
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "<nil>"
    return str(v)


def warning_header(text: str) -> str:
    """``Warning: 299 - "<text>"`` with ``"`` and ``\\`` escaped (``NewWarningHeader``)."""
    return '299 - "' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
