"""Kubernetes protobuf request bodies, decoded for the access-review kinds only.

client-go's typed clients send built-in kinds as ``application/vnd.kubernetes.protobuf``: ``kubectl auth can-i``
and ``kubectl auth whoami`` post their reviews that way, so the lab reads those few messages. Other kinds keep
the 415 (docs/lab.md, known differences): PyPI has no maintained package with the Kubernetes protobuf types
(``k8s-proto`` 0.0.3 is a one-off from 2019), and hand-kept field tables for PodSpec and friends would be a
second schema to keep true.

Wire format: the 4-byte magic ``k8s\\0``, then a ``runtime.Unknown`` {typeMeta=1 {apiVersion=1, kind=2}, raw=2,
contentEncoding=3, contentType=4} whose ``raw`` is the object (apimachinery ``pkg/runtime/serializer/protobuf``,
``pkg/runtime/generated.proto``); field numbers from k8s.io/api ``authorization/v1`` and
``authentication/v1`` ``generated.proto``.
"""

from __future__ import annotations

MAGIC = b"k8s\x00"

_STR, _BYTES = "string", "bytes"
_TYPE_META = {1: ("apiVersion", _STR), 2: ("kind", _STR)}
_UNKNOWN = {1: ("typeMeta", _TYPE_META), 2: ("raw", _BYTES)}
_OBJECT_META = {1: ("name", _STR), 2: ("generateName", _STR), 3: ("namespace", _STR)}
_RESOURCE_ATTRIBUTES = {1: ("namespace", _STR), 2: ("verb", _STR), 3: ("group", _STR), 4: ("version", _STR),
                        5: ("resource", _STR), 6: ("subresource", _STR), 7: ("name", _STR)}
_NON_RESOURCE_ATTRIBUTES = {1: ("path", _STR), 2: ("verb", _STR)}
_EXTRA_VALUE = {1: ("items", [_STR])}
_SAR_SPEC = {1: ("resourceAttributes", _RESOURCE_ATTRIBUTES), 2: ("nonResourceAttributes", _NON_RESOURCE_ATTRIBUTES),
             3: ("user", _STR), 4: ("groups", [_STR]), 5: ("extra", {"map": "extra"}), 6: ("uid", _STR)}
_SSAR_SPEC = {k: v for k, v in _SAR_SPEC.items() if k in (1, 2)}
MESSAGES = {  # kind -> the fields the lab reads (status is the server's to fill)
    "SelfSubjectAccessReview": {1: ("metadata", _OBJECT_META), 2: ("spec", _SSAR_SPEC)},
    "SubjectAccessReview": {1: ("metadata", _OBJECT_META), 2: ("spec", _SAR_SPEC)},
    "LocalSubjectAccessReview": {1: ("metadata", _OBJECT_META), 2: ("spec", _SAR_SPEC)},
    "SelfSubjectRulesReview": {1: ("metadata", _OBJECT_META), 2: ("spec", {1: ("namespace", _STR)})},
    "SelfSubjectReview": {1: ("metadata", _OBJECT_META)},
}


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    out = shift = 0
    while True:
        if i >= len(buf):
            raise ValueError("truncated varint")
        b = buf[i]
        i += 1
        out |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return out, i


def _fields(buf: bytes):
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 2:
            n, i = _varint(buf, i)
            value, i = buf[i:i + n], i + n
        elif wire in (1, 5):
            n = 8 if wire == 1 else 4
            value, i = buf[i:i + n], i + n
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield number, value


def _value(kind, raw):
    if kind == _STR:
        return raw.decode()
    if kind == _BYTES:
        return raw
    if kind == "extra":  # ExtraValue is a []string in JSON
        return decode_message(raw, _EXTRA_VALUE).get("items", [])
    return decode_message(raw, kind)


def decode_message(buf: bytes, table: dict) -> dict:
    """The fields of ``table`` (number -> (name, kind)); kind: "string", "bytes", a nested table, ``[kind]``
    (repeated) or ``{"map": kind}`` (map<string, kind>). Unknown fields and empty strings are left out."""
    out: dict = {}
    for number, raw in _fields(buf):
        if number not in table:
            continue
        name, kind = table[number]
        if isinstance(kind, list):
            out.setdefault(name, []).append(_value(kind[0], raw))
        elif isinstance(kind, dict) and "map" in kind:
            entry = dict(_fields(raw))
            out.setdefault(name, {})[entry.get(1, b"").decode()] = _value(kind["map"], entry.get(2, b""))
        else:
            value = _value(kind, raw)
            if value != "":
                out[name] = value
    return out


def decode(body: bytes) -> dict:
    """A review object (JSON-shaped) from a protobuf request body; ValueError for anything else."""
    if not body.startswith(MAGIC):
        raise ValueError("missing the k8s protobuf magic prefix")
    unknown = decode_message(body[len(MAGIC):], _UNKNOWN)
    meta = unknown.get("typeMeta") or {}
    table = MESSAGES.get(meta.get("kind", ""))
    if table is None:
        raise ValueError(f"the lab decodes protobuf only for {', '.join(MESSAGES)}, not {meta.get('kind')!r}")
    return {"apiVersion": meta.get("apiVersion"), "kind": meta["kind"], **decode_message(unknown.get("raw", b""), table)}
