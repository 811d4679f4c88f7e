"""Field sets over plain JSON objects, typed by the real schemas: what structured-merge-diff (smd) does for the
apiserver's field management, in the small.

A path is a tuple of path elements, each already in the FieldsV1 spelling (smd ``fieldpath/serialize-pe.go``):
``"f:<field>"`` (struct field or map key), ``'k:{"name":"web"}'`` (item of an associative list, its key fields
sorted), ``'v:"a"'`` (item of a set list). Lists of other kinds are atomic (one leaf).

- ``to_set(obj, schema)``: the fields an object sets (smd ``typed/tofieldset.go``): leaves, list items, map entries.
- ``compare(lhs, rhs, schema)``: added / modified / removed paths (smd ``typed/compare.go`` + ``Compare``).
- ``merge(lhs, rhs, schema)``: lhs with rhs laid over it, lists merged by key in smd's order (``typed/merge.go``).
- ``remove(obj, paths, schema)``: the object without the given subtrees (``typed/remove.go``).
- ``encode(paths)`` / ``decode(fields_v1)``: FieldsV1 JSON (``"."`` marks a node that is itself a member).
- ``path_string(path)``: ``.spec.template.spec.containers[name="web"].image`` (smd ``fieldpath/element.go``).
"""

from __future__ import annotations

import copy
import functools
import json
from dataclasses import dataclass, field

from . import schemas

MISSING = object()
Path = tuple[str, ...]
# keys of associative lists that the apiserver's OpenAPI gives a default (smd uses it when an item omits the key)
_KEY_DEFAULTS = {"protocol": "TCP"}


@dataclass(frozen=True)
class Node:
    """How smd sees a schema node: ``struct`` (named fields), ``map`` (any keys), ``list``, ``scalar``."""

    kind: str
    atomic: bool = False
    fields: dict = field(default_factory=dict)
    elem: dict | None = None
    list_type: str = "atomic"  # atomic | set | map
    keys: tuple[str, ...] = ()


_UNTYPED_MAP = Node("map", elem=None)
_ATOMIC_LIST = Node("list", list_type="atomic")
_SCALAR = Node("scalar")


@functools.cache
def _node_of(schema_id: int) -> Node:
    s = _SCHEMAS[schema_id]
    if "oneOf" in s:
        return _SCALAR
    types = s.get("type")
    types = [t for t in (types if isinstance(types, list) else [types]) if t and t != "null"]
    if "object" in types:
        atomic = s.get("x-kubernetes-map-type") == "atomic"
        if s.get("properties"):
            return Node("struct", atomic=atomic, fields=s["properties"])
        ap = s.get("additionalProperties")
        return Node("map", atomic=atomic, elem=ap if isinstance(ap, dict) else None)
    if "array" in types:
        items = s.get("items") or {}
        list_type = s.get("x-kubernetes-list-type")
        keys = tuple(s.get("x-kubernetes-list-map-keys") or ())
        strategy = s.get("x-kubernetes-patch-strategy") or ""
        merge_key = s.get("x-kubernetes-patch-merge-key")
        if list_type is None:  # schemaconv: patch strategy "merge" means associative (with a key) or set
            if "merge" in strategy.split(","):
                list_type = "map" if merge_key else "set"
            else:
                list_type = "atomic"
        if list_type == "map" and not keys:
            keys = (merge_key,) if merge_key else ()
        return Node("list", list_type=list_type, keys=keys, elem=items)
    return _SCALAR


_SCHEMAS: dict[int, dict] = {}


def node(schema: dict | None, value) -> Node:
    """The smd view of ``schema``; without a schema, deduced from the value (maps granular, lists atomic)."""
    s = schemas.resolve(schema) if schema else None
    if not s or not (s.get("type") or s.get("oneOf")):
        if isinstance(value, dict):
            return _UNTYPED_MAP
        return _ATOMIC_LIST if isinstance(value, list) else _SCALAR
    _SCHEMAS.setdefault(id(s), s)
    return _node_of(id(s))


def child_schema(n: Node, key: str) -> dict | None:
    if n.kind == "struct":
        return n.fields.get(key)
    return n.elem


def _dump(v) -> str:
    return json.dumps(v, separators=(",", ":"), ensure_ascii=False, sort_keys=True)


def item_element(n: Node, item) -> str:
    if n.list_type == "set":
        return "v:" + _dump(item)
    item = item if isinstance(item, dict) else {}
    key = {}
    for k in n.keys:
        if k in item:
            key[k] = item[k]
        elif k in _KEY_DEFAULTS:
            key[k] = _KEY_DEFAULTS[k]
    return "k:" + _dump(key)


def _index(n: Node, items: list) -> dict[str, object]:
    out: dict[str, object] = {}
    for it in items or []:
        out.setdefault(item_element(n, it), it)  # repeated elements: the first one counts (smd)
    return out


def _leaf(n: Node) -> bool:
    return n.kind == "scalar" or n.atomic or (n.kind == "list" and n.list_type == "atomic")


def _is_container(v) -> bool:
    return isinstance(v, (dict, list))


# --------------------------------------------------------------------------- to_set
def to_set(obj, schema: dict | None) -> set[Path]:
    out: set[Path] = set()
    _set_walk(obj, schema, (), out)
    return out


def _set_walk(v, schema, path: Path, out: set[Path]) -> None:
    n = node(schema, v)
    if _leaf(n) or not _is_container(v):
        if path:
            out.add(path)
        return
    if isinstance(v, dict):
        for k, x in v.items():
            p = path + ("f:" + k,)
            _set_walk(x, child_schema(n, k), p, out)
            if n.kind != "struct" or k not in n.fields or x is None or x == {}:
                out.add(p)
    else:
        for item in v:
            p = path + (item_element(n, item),)
            _set_walk(item, n.elem, p, out)
            out.add(p)


# --------------------------------------------------------------------------- compare
@dataclass
class Comparison:
    added: set[Path] = field(default_factory=set)
    modified: set[Path] = field(default_factory=set)
    removed: set[Path] = field(default_factory=set)


def compare(lhs, rhs, schema: dict | None) -> Comparison:
    c = Comparison()
    _cmp(lhs, rhs, schema, (), c)
    return c


def _same(a, b) -> bool:
    return a == b and type(a) is type(b) if not _is_container(a) else a == b


def _cmp(lv, rv, schema, path: Path, c: Comparison) -> None:
    if lv is not MISSING and rv is not MISSING and type(lv) is type(rv) and lv == rv:
        return  # an unchanged subtree (compared in C) has nothing to report
    n = node(schema, rv if rv is not MISSING else lv)
    lc = lv is not MISSING and _is_container(lv)
    rc = rv is not MISSING and _is_container(rv)
    both_empty = (lv is MISSING or lv in ({}, [], None)) and (rv is MISSING or rv in ({}, [], None))
    mismatch = lv is not MISSING and rv is not MISSING and type(lv) is not type(rv)
    if _leaf(n) or both_empty or mismatch or not (lc or rc):
        if lv is MISSING:
            c.added.add(path)
        elif rv is MISSING:
            c.removed.add(path)
        elif not _same(lv, rv):
            c.modified.add(path)
        return
    left = lv if lc else type(rv)()
    right = rv if rc else type(lv)()
    if isinstance(left, dict):
        for k in list(left) + [k for k in right if k not in left]:
            _cmp(left.get(k, MISSING), right.get(k, MISSING), child_schema(n, k), path + ("f:" + k,), c)
    else:
        li, ri = _index(n, left), _index(n, right)
        elem = n.elem if n.list_type == "map" else None
        for pe in list(li) + [pe for pe in ri if pe not in li]:
            _cmp(li.get(pe, MISSING), ri.get(pe, MISSING), elem, path + (pe,), c)
    if path and lv is MISSING:
        c.added.add(path)
    elif path and rv is MISSING:
        c.removed.add(path)


# --------------------------------------------------------------------------- merge
def merge(lhs, rhs, schema: dict | None):
    """lhs with rhs laid over it (rhs wins at leaves), as smd's ``Merge`` for server-side apply."""
    if rhs is MISSING:
        return copy.deepcopy(lhs)
    if lhs is MISSING or rhs is None or not _is_container(rhs) or type(lhs) is not type(rhs):
        return copy.deepcopy(rhs)
    n = node(schema, rhs)
    if _leaf(n):
        return copy.deepcopy(rhs)
    if isinstance(rhs, dict):
        out = {k: copy.deepcopy(v) for k, v in lhs.items()}
        for k, v in rhs.items():
            out[k] = merge(lhs.get(k, MISSING), v, child_schema(n, k))
        return out
    return _merge_list(n, lhs, rhs)


def _merge_list(n: Node, lhs: list, rhs: list) -> list:
    """smd's ordering: shared items follow rhs' order, lhs-only items keep their place, rhs-only items come where
    rhs has them."""
    elem = n.elem if n.list_type == "map" else None
    li, ri = _index(n, lhs), _index(n, rhs)
    lorder, rorder = list(li), list(ri)
    shared = [pe for pe in rorder if pe in li]
    out, done = [], set()
    i = j = 0
    while i < len(lorder) or j < len(rorder):
        if i < len(lorder) and j < len(rorder):
            pe = lorder[i]
            if pe == rorder[j]:
                out.append(merge(li[pe], ri[pe], elem))
                done.add(pe)
                shared = shared[1:] if shared and shared[0] == pe else shared
                i, j = i + 1, j + 1
                continue
            if pe in ri and shared and shared[0] != pe:
                i += 1
                continue
        if i < len(lorder):
            pe = lorder[i]
            if pe not in ri:
                out.append(copy.deepcopy(li[pe]))
                i += 1
                continue
            if pe in done:
                i += 1
                continue
        if j < len(rorder):
            pe = rorder[j]
            out.append(merge(li.get(pe, MISSING), ri[pe], elem))
            done.add(pe)
            if shared and shared[0] == pe:
                shared = shared[1:]
            j += 1
    return out


# --------------------------------------------------------------------------- remove
def remove(obj, paths: set[Path], schema: dict | None):
    """A copy of ``obj`` without the subtrees at ``paths``; maps and lists emptied by it go too."""
    obj = copy.deepcopy(obj)
    for p in sorted(paths, key=len):
        _remove_one(obj, p, schema)
    return obj


def _remove_one(obj, path: Path, schema) -> bool:
    if not path or not _is_container(obj):
        return False
    n = node(schema, obj)
    pe, rest = path[0], path[1:]
    if isinstance(obj, dict):
        key = pe[2:] if pe.startswith("f:") else None
        if key is None or key not in obj:
            return False
        if not rest:
            del obj[key]
            return True
        if _remove_one(obj[key], rest, child_schema(n, key)) and obj[key] in ({}, []):
            del obj[key]
        return True
    for i, item in enumerate(obj):
        if item_element(n, item) != pe:
            continue
        if not rest:
            del obj[i]
            return True
        if _remove_one(item, rest, n.elem) and item in ({}, []):
            del obj[i]
        return True
    return False


# --------------------------------------------------------------------------- FieldsV1
def _order(pe: str) -> tuple:
    return ("fkvi".find(pe[0]), pe)


def encode(paths: set[Path]) -> dict:
    root: dict = {}
    members: set[Path] = set(paths)
    for p in paths:
        node_ = root
        for pe in p:
            node_ = node_.setdefault(pe, {})

    def emit(tree: dict, prefix: Path) -> dict:
        out: dict = {}
        if tree and prefix in members:
            out["."] = {}
        for pe in sorted(tree, key=_order):
            out[pe] = emit(tree[pe], prefix + (pe,))
        return out

    return emit(root, ())


def decode(fields_v1: dict, prefix: Path = ()) -> set[Path]:
    if not isinstance(fields_v1, dict):
        raise ValueError(f"FieldsV1 must be a JSON object, got {type(fields_v1).__name__}")
    out: set[Path] = set()
    for k, v in fields_v1.items():
        if k == ".":
            out.add(prefix)
            continue
        if not isinstance(k, str) or k[:2] not in ("f:", "k:", "v:", "i:"):
            raise ValueError(f"unexpected FieldsV1 key {k!r}")
        p = prefix + (k,)
        out |= decode(v, p) if v else {p}
    return out


# --------------------------------------------------------------------------- printing
def _go_value(v) -> str:
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    return str(v)


def path_string(path: Path) -> str:
    out = []
    for pe in path:
        kind, raw = pe[0], pe[2:]
        if kind == "f":
            out.append("." + raw)
        elif kind == "k":
            out.append("[" + ",".join(f"{k}={_go_value(v)}" for k, v in json.loads(raw).items()) + "]")
        elif kind == "v":
            out.append("[=" + _go_value(json.loads(raw)) + "]")
        else:
            out.append(f"[{raw}]")
    return "".join(out)
