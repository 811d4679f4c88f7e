"""PATCH flavours the apiserver accepts: strategic merge, JSON merge (RFC 7386), JSON patch (RFC 6902).

Strategic merge takes its merge keys and strategies from the real schemas
(``x-kubernetes-patch-merge-key`` / ``x-kubernetes-patch-strategy``) and understands the directives
``$patch: replace|delete|merge``, ``$retainKeys``, ``$setElementOrder/<field>`` and
``$deleteFromPrimitiveList/<field>``.
"""

from __future__ import annotations

import copy

from . import schemas


class PatchError(Exception):
    """Bad patch document (400) or failed ``test`` operation (422, ``code``)."""

    def __init__(self, message: str, code: int = 400):
        super().__init__(message)
        self.code = code


_DELETE = object()


# --------------------------------------------------------------------------- JSON merge patch
def json_merge(target, patch):
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            result.pop(k, None)
        else:
            result[k] = json_merge(result.get(k), v)
    return result


# --------------------------------------------------------------------------- strategic merge patch
def _strategy(schema: dict) -> tuple[str, str | None]:
    s = schema or {}
    return s.get("x-kubernetes-patch-strategy", ""), s.get("x-kubernetes-patch-merge-key")


def strategic_merge(original: dict, patch: dict, schema: dict | None) -> dict:
    if not isinstance(patch, dict):
        raise PatchError("strategic merge patch must be a JSON object")
    out = _merge_map(copy.deepcopy(original) if isinstance(original, dict) else {}, patch, schema)
    if out is _DELETE:
        return {}
    return out


def _merge_map(orig: dict, patch: dict, schema: dict | None):
    directive = patch.get("$patch")
    if directive == "delete":
        return _DELETE
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch" and not k.startswith("$")}
    if directive not in (None, "merge"):
        raise PatchError(f"Unknown patch type: {directive} in map: {patch}")
    retain = patch.get("$retainKeys")
    orders: dict[str, list] = {}
    for k, v in patch.items():
        if k in ("$patch", "$retainKeys"):
            continue
        if k.startswith("$setElementOrder/"):
            orders[k.split("/", 1)[1]] = v
            continue
        if k.startswith("$deleteFromPrimitiveList/"):
            field = k.split("/", 1)[1]
            if isinstance(orig.get(field), list) and isinstance(v, list):
                orig[field] = [x for x in orig[field] if x not in v]
            continue
        sub = schemas.child(schema, k)
        if v is None:
            orig.pop(k, None)
        elif isinstance(v, dict):
            base = orig.get(k) if isinstance(orig.get(k), dict) else {}
            merged = _merge_map(base, v, sub)
            if merged is _DELETE:
                orig.pop(k, None)
            else:
                orig[k] = merged
        elif isinstance(v, list):
            orig[k] = _merge_list(orig.get(k) if isinstance(orig.get(k), list) else [], v, sub)
        else:
            orig[k] = copy.deepcopy(v)
    for field, order in orders.items():
        if isinstance(orig.get(field), list):
            orig[field] = _apply_order(orig[field], order, _strategy(schemas.resolve(sub_or(schema, field)))[1])
    if isinstance(retain, list):
        for k in list(orig):
            if k not in retain:
                del orig[k]
    return orig


def sub_or(schema, field):
    return schemas.child(schema, field)


def _apply_order(lst: list, order: list, key: str | None) -> list:
    def ident(x):
        return x.get(key) if key and isinstance(x, dict) else x

    pos = {}
    for i, o in enumerate(order):
        pos[repr(ident(o) if isinstance(o, dict) else o)] = i
    ranked = sorted(enumerate(lst), key=lambda t: (pos.get(repr(ident(t[1])), len(order) + t[0])))
    return [x for _, x in ranked]


def _merge_list(orig: list, patch: list, schema: dict | None) -> list:
    strategy, key = _strategy(schema)
    item_schema = schemas.items(schema)
    if "merge" not in strategy.split(","):
        if any(isinstance(p, dict) and p.get("$patch") == "replace" for p in patch):
            return [copy.deepcopy(p) for p in patch if not (isinstance(p, dict) and "$patch" in p)]
        return [_strip_directives(copy.deepcopy(p)) for p in patch]
    if any(isinstance(p, dict) and p.get("$patch") == "replace" and len(p) == 1 for p in patch):
        return [copy.deepcopy(p) for p in patch if not (isinstance(p, dict) and p.get("$patch") == "replace" and len(p) == 1)]
    result = [copy.deepcopy(x) for x in orig]
    if not key:  # primitive list, merge = union
        for p in patch:
            if isinstance(p, dict) and p.get("$patch") == "delete":
                continue
            if p not in result:
                result.append(copy.deepcopy(p))
        return result
    for p in patch:
        if not isinstance(p, dict):
            raise PatchError(f"strategic merge patch: expected a map in a list merged by {key!r}, got {p!r}")
        if key not in p:
            raise PatchError(f"map: {p} does not contain declared merge key: {key}")
        idx = next((i for i, o in enumerate(result) if isinstance(o, dict) and o.get(key) == p[key]), None)
        if p.get("$patch") == "delete":
            result = [o for o in result if not (isinstance(o, dict) and o.get(key) == p[key])]
            continue
        if idx is None:
            merged = _merge_map({}, p, item_schema)
            if merged is not _DELETE:
                result.append(merged)
        else:
            merged = _merge_map(result[idx], p, item_schema)
            if merged is _DELETE:
                del result[idx]
            else:
                result[idx] = merged
    return result


def _strip_directives(v):
    if isinstance(v, dict):
        return {k: _strip_directives(x) for k, x in v.items() if not k.startswith("$")}
    if isinstance(v, list):
        return [_strip_directives(x) for x in v]
    return v


# --------------------------------------------------------------------------- JSON patch
def _unescape(tok: str) -> str:
    return tok.replace("~1", "/").replace("~0", "~")


def _split(pointer: str) -> list[str]:
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise PatchError(f"invalid JSON pointer {pointer!r}: must start with '/'")
    return [_unescape(t) for t in pointer[1:].split("/")]


def _parent(doc, tokens: list[str], path: str):
    cur = doc
    for t in tokens[:-1]:
        if isinstance(cur, dict):
            if t not in cur:
                raise PatchError(f"doc is missing path: {path!r}")
            cur = cur[t]
        elif isinstance(cur, list):
            try:
                cur = cur[int(t)]
            except (ValueError, IndexError):
                raise PatchError(f"doc is missing path: {path!r}") from None
        else:
            raise PatchError(f"doc is missing path: {path!r}")
    return cur


def _get(doc, path: str):
    tokens = _split(path)
    if not tokens:
        return doc
    parent = _parent(doc, tokens, path)
    last = tokens[-1]
    try:
        return parent[last] if isinstance(parent, dict) else parent[int(last)]
    except (KeyError, ValueError, IndexError, TypeError):
        raise PatchError(f"doc is missing path: {path!r}") from None


def _remove(doc, path: str):
    tokens = _split(path)
    parent = _parent(doc, tokens, path)
    last = tokens[-1]
    try:
        if isinstance(parent, dict):
            return parent.pop(last)
        return parent.pop(int(last))
    except (KeyError, ValueError, IndexError):
        raise PatchError(f"Unable to remove nonexistent key: {last}: missing value") from None


def _add(doc, path: str, value):
    tokens = _split(path)
    if not tokens:
        return value
    parent = _parent(doc, tokens, path)
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        if last == "-":
            parent.append(value)
        else:
            try:
                i = int(last)
            except ValueError:
                raise PatchError(f"invalid array index {last!r} in {path!r}") from None
            if i > len(parent) or i < 0:
                raise PatchError(f"Unable to access invalid index: {i}: invalid index referenced")
            parent.insert(i, value)
    else:
        raise PatchError(f"doc is missing path: {path!r}")
    return doc


def json_patch(doc, ops) -> dict:
    if not isinstance(ops, list):
        raise PatchError("json patch must be a JSON array of operations")
    doc = copy.deepcopy(doc)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op:
            raise PatchError(f"invalid JSON patch operation: {op!r}")
        kind, path = op["op"], op.get("path")
        if path is None:
            raise PatchError(f"operation {kind!r} is missing 'path'")
        if kind == "add":
            doc = _add(doc, path, copy.deepcopy(op.get("value")))
        elif kind == "remove":
            _remove(doc, path)
        elif kind == "replace":
            _get(doc, path)
            tokens = _split(path)
            if not tokens:
                doc = copy.deepcopy(op.get("value"))
            else:
                parent = _parent(doc, tokens, path)
                if isinstance(parent, dict):
                    parent[tokens[-1]] = copy.deepcopy(op.get("value"))
                else:
                    parent[int(tokens[-1])] = copy.deepcopy(op.get("value"))
        elif kind == "move":
            value = _remove(doc, op["from"])
            doc = _add(doc, path, value)
        elif kind == "copy":
            doc = _add(doc, path, copy.deepcopy(_get(doc, op["from"])))
        elif kind == "test":
            actual = _get(doc, path)
            if actual != op.get("value"):
                raise PatchError(f"testing value {path} failed: test failed", code=422)
        else:
            raise PatchError(f"Unexpected kind: {kind}")
    return doc
