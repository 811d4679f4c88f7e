"""``metadata.managedFields`` and server-side apply, as kube-apiserver keeps them.

Sources: kubernetes/website ``content/en/docs/reference/using-api/server-side-apply.md``; apimachinery
``pkg/util/managedfields/internal/`` (``fieldmanager.go``, ``managedfieldsupdater.go``, ``structuredmerge.go``,
``stripmeta.go``, ``capmanagers.go``, ``conflict.go``); smd ``merge/update.go``.

- ``track_update(rt, old, new, writer)`` (the store's ``fields`` hook, every non-apply write): the fields the write
  changed move to the writer's ``Update`` entry (keyed by manager, apiVersion and subresource) and leave every
  other entry; an entry and its ``time`` change only when the write changed field values, so a no-op write leaves
  managedFields as they were. A request may set managedFields itself (kubectl's client-side to server-side apply
  migration does); ``[]`` or ``[{}]`` resets them; subresource writes keep the live ones.
- ``apply(rt, live, config, manager, force)``: server-side apply: merge, ownership of what the config sets,
  removal of the fields this manager applied before and nobody owns any more, ``409`` on fields another manager
  owns with another value (``force`` takes them over).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field

from . import fieldpath, schemas
from .fieldpath import Path
from .resources import ResourceType
from .store import ApiError, now_iso

UPDATE, APPLY = "Update", "Apply"
MAX_UPDATE_MANAGERS = 10  # fieldmanager.go DefaultMaxUpdateManagers
ANCIENT = "ancient-changes"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
_STRIPPED_META = ("name", "namespace", "creationTimestamp", "selfLink", "uid", "clusterName", "generation",
                  "managedFields", "resourceVersion")
_STRIPPED: set[Path] = {("f:apiVersion",), ("f:kind",), ("f:metadata",)} | {("f:metadata", "f:" + k) for k in _STRIPPED_META}


@dataclass(frozen=True)
class Writer:
    """Who writes: ``manager`` and ``operation`` as recorded; ``internal`` for the lab's controllers and kubelet.

    An internal writer without a subresource that changes only ``status`` is recorded with subresource ``status``
    (controllers write status through that subresource). ``tracked=False``: a write the apiserver does not pass
    through the field manager (the scheduler's binding, ``pods/binding``)."""

    manager: str
    operation: str = UPDATE
    subresource: str = ""
    internal: bool = False
    tracked: bool = True


CONTROLLERS = Writer("kube-controller-manager", internal=True)
KUBELET = Writer("kubelet", subresource="status", internal=True)
SCHEDULER = Writer("kube-scheduler", subresource="binding", internal=True, tracked=False)
APISERVER = Writer("kube-apiserver", internal=True)


def manager_from(field_manager: str | None, user_agent: str | None) -> str:
    """``managerOrUserAgent`` (apiserver ``handlers/create.go``): the fieldManager parameter, else the User-Agent
    up to its first ``/``, printable characters only, at most 128 bytes."""
    if field_manager:
        return field_manager
    out = ""
    for ch in (user_agent or "").split("/", 1)[0]:
        if not ch.isprintable():
            continue
        if len((out + ch).encode()) > 128:
            break
        out += ch
    return out


def validate_manager(name: str, path: str = "fieldManager") -> str | None:
    """``ValidateFieldManager`` (apimachinery ``pkg/apis/meta/v1/validation``): an error text, or None."""
    if len(name) > 128:
        return f"{path}: Too long: may not be more than 128 bytes"
    for i, ch in enumerate(name):
        if not ch.isprintable():
            return f"{path}: Invalid value: {json.dumps(name)}: invalid character U+{ord(ch):04X} (at position {i})"
    return None


# --------------------------------------------------------------------------- entries
@dataclass
class Entry:
    manager: str
    operation: str
    api_version: str
    subresource: str = ""
    time: str | None = None
    fields: set[Path] = field(default_factory=set)
    source: dict | None = None  # the JSON entry it was decoded from, while unchanged (saves re-encoding)

    @property
    def ident(self) -> tuple:
        """``BuildManagerIdentifier``: Apply entries are not keyed by apiVersion, and never by time."""
        return (self.manager, self.operation, self.api_version if self.operation == UPDATE else "", self.subresource)

    def describe(self) -> str:
        """``printManager`` (conflict.go)."""
        out = json.dumps(self.manager)
        if self.subresource:
            out += f" with subresource {json.dumps(self.subresource)}"
        if self.operation == UPDATE:
            out += f" using {self.api_version}"
        return out

    def sort_key(self) -> tuple:
        return (self.operation, self.time or "", self.manager, self.api_version, self.subresource)

    def drop(self, paths: set[Path]) -> None:
        if self.fields & paths:
            self.fields = self.fields - paths
            self.source = None

    def to_json(self) -> dict:
        if self.source is not None:
            return self.source
        out = {"manager": self.manager, "operation": self.operation, "apiVersion": self.api_version}
        if self.time:
            out["time"] = self.time
        out["fieldsType"] = "FieldsV1"
        out["fieldsV1"] = fieldpath.encode(self.fields)
        if self.subresource:
            out["subresource"] = self.subresource
        return out


Managed = dict[tuple, Entry]


def decode(entries, keep_source: bool = False) -> Managed:
    """Raises ValueError for anything the apiserver would not decode. ``keep_source``: the entries are the
    server's own (re-encoding an unchanged one may reuse it)."""
    if not isinstance(entries, list):
        raise ValueError("managedFields must be a list")
    out: Managed = {}
    for e in entries:
        if not isinstance(e, dict) or e.get("operation") not in (APPLY, UPDATE) or e.get("fieldsType", "FieldsV1") != "FieldsV1":
            raise ValueError(f"invalid managedFields entry {e!r}")
        entry = Entry(str(e.get("manager") or ""), e["operation"], str(e.get("apiVersion") or ""),
                      str(e.get("subresource") or ""), e.get("time"), fieldpath.decode(e.get("fieldsV1") or {}),
                      e if keep_source else None)
        if entry.ident in out:
            raise ValueError(f"duplicate entries for manager {entry.manager}")
        out[entry.ident] = entry
    return out


def encode(managed: Managed) -> list[dict]:
    return [e.to_json() for e in sorted(managed.values(), key=Entry.sort_key) if e.fields]


def _live(obj: dict | None) -> Managed:
    try:
        return decode(((obj or {}).get("metadata") or {}).get("managedFields") or [], keep_source=True)
    except ValueError:
        return {}


def _strip(obj: dict | None) -> dict:
    """The object as the field manager sees it (``stripmeta.go``): no apiVersion/kind/system metadata."""
    out = {k: v for k, v in (obj or {}).items() if k not in ("apiVersion", "kind")}
    if isinstance(out.get("metadata"), dict):
        out["metadata"] = {k: v for k, v in out["metadata"].items() if k not in _STRIPPED_META}
    return out


def _cap(managed: Managed) -> None:
    """``capmanagers.go``: at most 10 Update entries; the oldest merge into ``ancient-changes`` per apiVersion."""
    updaters = sorted((e for e in managed.values() if e.operation == UPDATE), key=lambda e: (e.time or "", e.manager))
    count = len(updaters)
    first: dict[str, Entry] = {}
    for e in updaters:
        if count <= MAX_UPDATE_MANAGERS:
            break
        if e.api_version not in first:
            first[e.api_version] = e
            continue
        bucket_id = (ANCIENT, UPDATE, e.api_version, "")
        bucket = managed.get(bucket_id)
        if bucket is None:
            oldest = managed.pop(first[e.api_version].ident)
            bucket = managed[bucket_id] = Entry(ANCIENT, UPDATE, e.api_version, "", oldest.time, set(oldest.fields))
        bucket.fields |= e.fields
        bucket.time, bucket.source = e.time, None
        del managed[e.ident]
        count -= 1


def _reset(rt: ResourceType, subresource: str, paths: set[Path]) -> set[Path]:
    """Reset fields (the strategies' ``GetResetFields``): with a status subresource, ``status`` is owned through it
    alone, and a status write owns nothing else."""
    if "status" not in rt.subresources:
        return paths
    if subresource == "status":
        return {p for p in paths if p[0] == "f:status"}
    return {p for p in paths if p[0] != "f:status"}


def _finish(managed: Managed) -> list[dict] | None:
    for ident in [i for i, e in managed.items() if not e.fields]:
        del managed[ident]
    _cap(managed)
    return encode(managed) or None


def _set(md: dict, entries: list[dict] | None) -> None:
    if entries:
        md["managedFields"] = entries
    else:
        md.pop("managedFields", None)


# --------------------------------------------------------------------------- Update
def track_update(rt: ResourceType, old: dict | None, new: dict, writer: Writer) -> dict:
    """Set ``new``'s managedFields for a write by ``writer`` (see the module docstring). Returns ``new``."""
    md = new.setdefault("metadata", {})
    given = md.get("managedFields")
    if writer.operation == APPLY:  # server-side apply computed them (apply() below)
        return new
    if not writer.tracked:
        _set(md, ((old or {}).get("metadata") or {}).get("managedFields"))
        return new
    schema = schemas.definition_for(rt)
    # compared with the old object, or the empty one on create; top-level structs always exist (Go zero values)
    base = {**{k: {} for k in ("metadata", "spec", "status") if isinstance(new.get(k), dict)}, **_strip(old)}
    c = fieldpath.compare(base, _strip(new), schema)
    changed = (c.added | c.modified) - _STRIPPED
    live = ((old or {}).get("metadata") or {}).get("managedFields")
    if not changed and not c.removed and (writer.subresource or given is None or given is live or given == live):
        _set(md, live)  # nothing to record, and the request did not set managedFields
        return new
    if writer.subresource or given is None:
        managed = _live(old)
    elif given in ([], [{}]):  # fieldmanager.go isResetManagedFields
        managed = {}
    else:
        try:
            managed = decode(given) or _live(old)
        except ValueError:
            managed = _live(old)
    subresource = writer.subresource
    if writer.internal and not subresource and changed | c.removed and all(p[0] == "f:status" for p in changed | c.removed):
        subresource = "status"
    changed = _reset(rt, subresource, changed)
    for e in managed.values():
        e.drop(changed | c.removed)
    if changed:
        entry = Entry(writer.manager, UPDATE, rt.api_version, subresource, now_iso())
        prev = managed.get(entry.ident)
        entry.fields = (prev.fields if prev else set()) | changed
        managed[entry.ident] = entry
    _set(md, _finish(managed))
    return new


# --------------------------------------------------------------------------- Apply
def _prune(merged: dict, managed: Managed, last: set[Path], schema) -> dict:
    """Remove what the applier owned before, does not apply now, and no manager owns (smd ``Updater.prune``);
    struct fields above an owned field stay."""
    owned = set().union(*(e.fields for e in managed.values()))
    kept = {p[:i] for p in owned for i in range(1, len(p)) if p[i - 1].startswith("f:")}
    return fieldpath.remove(merged, {p for p in last if p not in owned and p not in kept}, schema)


def _last_applied_set(rt: ResourceType, live: dict | None, schema) -> set[Path]:
    """The fields kubectl's client-side apply annotation sets with the value the object still has
    (``lastappliedmanager.go allowedConflictsFromLastApplied``)."""
    raw = (((live or {}).get("metadata") or {}).get("annotations") or {}).get(LAST_APPLIED)
    try:
        last = json.loads(raw) if raw else None
    except ValueError:
        return set()
    if not isinstance(last, dict) or last.get("apiVersion") != rt.api_version:
        return set()
    last = _strip(last)
    c = fieldpath.compare(last, _strip(live), schema)
    return fieldpath.to_set(last, schema) - c.modified - c.added - c.removed


def conflict_error(conflicts: dict[tuple, tuple[Entry, set[Path]]]) -> ApiError:
    """``NewConflictError`` (conflict.go) worded as ``errors.NewApplyConflict``."""
    rows = []
    for entry, paths in sorted(conflicts.values(), key=lambda x: json.dumps(x[0].ident)):
        for p in sorted(paths, key=lambda p: [fieldpath._order(pe) for pe in p]):
            rows.append((entry.describe(), fieldpath.path_string(p)))
    if len(rows) == 1:
        message = f"Apply failed with 1 conflict: conflict with {rows[0][0]}: {rows[0][1]}"
    else:
        lines, last = [], None
        for who, path in rows:
            if who != last:
                lines.append(f"conflicts with {who}:")
                last = who
            lines.append(f"- {path}")
        message = f"Apply failed with {len(rows)} conflicts: " + "\n".join(lines)
    causes = [{"reason": "FieldManagerConflict", "message": f"conflict with {who}", "field": path} for who, path in rows]
    return ApiError(409, "Conflict", message, {"causes": causes})


def apply(rt: ResourceType, live: dict | None, config: dict, manager: str, force: bool,
          subresource: str = "") -> tuple[dict, bool]:
    """Server-side apply of ``config`` onto ``live`` (None: create). Returns the new object (managedFields set;
    name, namespace and resourceVersion are the caller's) and whether it differs from ``live``.
    Raises ApiError 409 on conflicts unless ``force``."""
    schema = schemas.definition_for(rt)
    managed = _live(live)
    base = _strip(live) if live is not None else {}
    cfg = _strip(config)
    me = Entry(manager, APPLY, rt.api_version, subresource, None, _reset(rt, subresource, fieldpath.to_set(cfg, schema) - _STRIPPED))
    last = managed.get(me.ident)
    me.time = last.time if last else None
    managed[me.ident] = me
    merged = fieldpath.merge(base, cfg, schema)
    if last and last.fields:
        merged = _prune(merged, managed, last.fields, schema)
    c = fieldpath.compare(base, merged, schema)
    touched = c.added | c.modified
    conflicts = {i: (e, e.fields & touched) for i, e in managed.items() if i != me.ident and e.fields & touched}
    if conflicts and not force and manager == "kubectl":  # migrating from client-side apply: lastappliedmanager.go
        allowed = _last_applied_set(rt, live, schema)
        conflicts = {i: (e, paths - allowed) for i, (e, paths) in conflicts.items() if paths - allowed}
    if conflicts and not force:
        raise conflict_error(conflicts)
    for ident, e in managed.items():
        if ident != me.ident:
            e.drop(touched | c.removed)
    annotations = (merged.get("metadata") or {}).get("annotations") or {}
    if manager == "kubectl" and annotations.get(LAST_APPLIED):  # lastappliedupdater.go keeps the annotation true
        applied = copy.deepcopy(config)
        (applied.get("metadata") or {}).get("annotations", {}).pop(LAST_APPLIED, None)
        annotations[LAST_APPLIED] = json.dumps(applied, sort_keys=True, separators=(",", ":")) + "\n"
    changed = live is None or merged != base
    if changed:
        me.time = now_iso()
    out = copy.deepcopy(merged)
    out["apiVersion"], out["kind"] = rt.api_version, rt.kind
    md = out.setdefault("metadata", {})
    for k in _STRIPPED_META:
        if live is not None and k in live.get("metadata", {}):
            md[k] = copy.deepcopy(live["metadata"][k])
    _set(md, _finish(managed))
    return out, changed
