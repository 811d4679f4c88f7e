"""In-memory object store with real Kubernetes semantics.

This is the single source of truth inside the lab process. The HTTP layer (server.py) and the
controllers/kubelet both go through it, so objects created by controllers get the same admission
(defaulting + validation) as objects sent by clients.

Everything runs on the lab's asyncio event loop thread: no locking. Methods are synchronous.

Contract (used by server.py, controllers/ and kubelet/):

- ``Store.get(rt, ns, name) -> dict | None``      deep copy, or None
- ``Store.list(rt, ns=None, label_selector=None, field_selector=None) -> (items, resource_version)``
- ``Store.create(rt, obj, dry_run=False, writer=None) -> dict``  raises ApiError 409 AlreadyExists, 404 (namespace
  missing), 403 (namespace terminating or admission), 422 (admission)
- ``Store.update(rt, obj, subresource=None, dry_run=False, check_rv=False, internal=False, writer=None) -> dict``
  replace the stored object. ``subresource="status"`` only takes ``status`` from obj; otherwise ``status``
  from obj is ignored for types with a status subresource... except when the caller is internal
  (``internal=True``), which may write everything. resourceVersion bumps only on a real change;
  generation bumps only on a ``spec`` (or non-metadata/status top-level) change; a change of managedFields alone
  is a change.
- ``writer`` (a ``managed_fields.Writer``: who writes, for ``metadata.managedFields``); without one, an API-less
  write is the controllers' (``kube-controller-manager``).
- ``Store.delete(rt, ns, name, propagation="Background", grace_period=None, dry_run=False) -> dict``
  pods get ``deletionTimestamp`` (graceful, kubelet finishes with ``finalize_delete``); namespaces go
  Terminating and the namespace controller finishes them; objects with finalizers get deletionTimestamp.
  Otherwise removed at once. ownerReferences dependents are collected (cascading delete).
- ``Store.finalize_delete(rt, ns, name)``  remove for good (kubelet/namespace controller).
- ``Store.watch(rt, ns, since_rv, label_selector, field_selector) -> Watch`` async iterator of
  ``(type, obj)``; raises ApiError 410 Gone if ``since_rv`` is older than the retained history.
- ``Store.add_listener(fn)``  ``fn(event_type, rt, obj, old)`` called synchronously after each change
  (controllers use it to enqueue work; they must not block).
- ``Store.admission``  callable ``(rt, obj, old, subresource, internal) -> obj`` set by the server to default and
  validate; raise ApiError(422) to refuse.
- ``Store.fields``  callable ``(rt, old, new, writer) -> new`` set by the server: records ``metadata.managedFields``
  (``managed_fields.track_update``); ``Store.default_writer`` is the writer of internal writes without one.
"""

from __future__ import annotations

import asyncio
import collections
import copy
import datetime as _dt
import uuid
from typing import Any
from collections.abc import Callable

from . import resources as R
from .resources import ResourceType
from .selectors import match_fields, match_labels


def clone(obj):
    """A deep copy of an object that shares its ``metadata.managedFields``: nothing changes them in place (every
    write builds a new list), and copying them would double the cost of every read and write."""
    md = obj.get("metadata") if isinstance(obj, dict) else None
    mf = md.get("managedFields") if isinstance(md, dict) else None
    return copy.deepcopy(obj, {id(mf): mf} if mf is not None else None)


def now_iso() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_in(seconds: float, start: str | None = None) -> str:
    """The RFC 3339 time ``seconds`` after ``start`` (an RFC 3339 time; default now)."""
    t0 = _dt.datetime.strptime(start, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=_dt.UTC) if start else _dt.datetime.now(_dt.UTC)
    return (t0 + _dt.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


class ApiError(Exception):
    """An error the API answers with a ``Status`` object."""

    def __init__(self, code: int, reason: str, message: str, details: dict | None = None):
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> dict:
        body = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if not self.reason:  # errors that are not a metav1.Status (e.g. a 500 from server-side apply) have none
            del body["reason"]
        if self.details:
            body["details"] = self.details
        return body


def not_found(rt: ResourceType, name: str) -> ApiError:
    group = rt.group
    return ApiError(
        404,
        "NotFound",
        f'{rt.plural}{"." + group if group else ""} "{name}" not found',
        {"name": name, "group": group, "kind": rt.plural},
    )


def already_exists(rt: ResourceType, name: str) -> ApiError:
    group = rt.group
    return ApiError(
        409,
        "AlreadyExists",
        f'{rt.plural}{"." + group if group else ""} "{name}" already exists',
        {"name": name, "group": group, "kind": rt.plural},
    )


def conflict(rt: ResourceType, name: str) -> ApiError:
    group = rt.group
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {rt.plural}{"." + group if group else ""} "{name}": '
        "the object has been modified; please apply your changes to the latest version and try again",
        {"name": name, "group": group, "kind": rt.plural},
    )


_STATUS_TYPES = {rt.key for rt in R.ALL_TYPES if "status" in rt.subresources}
HISTORY = 5000  # events retained for watch resumption


class Watch:
    """Async iterator of (event_type, object) for one watcher."""

    def __init__(self, store: Store, rt: ResourceType, ns, label_selector, field_selector):
        self.store = store
        self.rt = rt
        self.ns = ns
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.queue: asyncio.Queue = asyncio.Queue()
        self.closed = False

    def matches(self, rt: ResourceType, obj: dict) -> bool:
        if rt.key != self.rt.key:
            return False
        md = obj.get("metadata", {})
        if self.ns and md.get("namespace") != self.ns:
            return False
        if self.label_selector and not match_labels(self.label_selector, md.get("labels") or {}):
            return False
        if self.field_selector and not match_fields(self.field_selector, obj):
            return False
        return True

    def push(self, etype: str, obj: dict) -> None:
        if not self.closed:
            self.queue.put_nowait((etype, obj))

    def close(self) -> None:
        self.closed = True
        self.queue.put_nowait(None)
        if self in self.store._watches:
            self.store._watches.remove(self)

    def __aiter__(self):
        return self

    async def __anext__(self):
        item = await self.queue.get()
        if item is None:
            raise StopAsyncIteration
        return item


class Store:
    def __init__(self) -> None:
        self._objects: dict[str, dict[tuple[str, str], dict]] = collections.defaultdict(dict)
        self._rv = 1
        self._history: collections.deque = collections.deque(maxlen=HISTORY)
        self._watches: list[Watch] = []
        self._listeners: list[Callable] = []
        self.admission: Callable[..., dict] | None = None
        self.fields: Callable[..., dict] | None = None
        self.default_writer = None

    # ------------------------------------------------------------------ helpers
    @property
    def resource_version(self) -> str:
        return str(self._rv)

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _key(self, rt: ResourceType, ns: str | None, name: str) -> tuple[str, str]:
        return (ns or "" if rt.namespaced else "", name)

    def add_listener(self, fn: Callable) -> None:
        self._listeners.append(fn)

    def _emit(self, etype: str, rt: ResourceType, obj: dict, old: dict | None) -> None:
        self._history.append((int(obj["metadata"]["resourceVersion"]), etype, rt.key, clone(obj)))
        for w in list(self._watches):
            if w.matches(rt, obj):
                w.push(etype, clone(obj))
        for fn in list(self._listeners):
            fn(etype, rt, obj, old)

    def namespace_exists(self, ns: str) -> bool:
        return ("", ns) in self._objects[R.NAMESPACES.key]

    def _check_namespace(self, rt: ResourceType, ns: str | None, creating: bool) -> None:
        if not rt.namespaced:
            return
        if not ns:
            raise ApiError(400, "BadRequest", "the namespace of the provided object does not match the namespace sent on the request")
        nsobj = self._objects[R.NAMESPACES.key].get(("", ns))
        if nsobj is None:
            raise ApiError(404, "NotFound", f'namespaces "{ns}" not found', {"name": ns, "kind": "namespaces"})
        if creating and nsobj.get("status", {}).get("phase") == "Terminating":
            raise ApiError(
                403,
                "Forbidden",
                f'{rt.plural} "" is forbidden: unable to create new content in namespace {ns} because it is being terminated',
                {"name": "", "kind": rt.plural},
            )

    # ------------------------------------------------------------------ reads
    def get(self, rt: ResourceType, ns: str | None, name: str) -> dict | None:
        obj = self._objects[rt.key].get(self._key(rt, ns, name))
        return clone(obj) if obj is not None else None

    def get_ref(self, rt: ResourceType, ns: str | None, name: str) -> dict | None:
        """The stored object itself (read-only use, no copy): for hot paths in controllers."""
        return self._objects[rt.key].get(self._key(rt, ns, name))

    def list(self, rt: ResourceType, ns: str | None = None, label_selector: str | None = None, field_selector: str | None = None) -> tuple[list[dict], str]:
        items = []
        for (ons, _), obj in sorted(self._objects[rt.key].items()):
            if ns and rt.namespaced and ons != ns:
                continue
            md = obj["metadata"]
            if label_selector and not match_labels(label_selector, md.get("labels") or {}):
                continue
            if field_selector and not match_fields(field_selector, obj):
                continue
            items.append(clone(obj))
        return items, self.resource_version

    def iter_refs(self, rt: ResourceType, ns: str | None = None):
        """Stored objects without copying (read-only use by controllers)."""
        for (ons, _), obj in list(self._objects[rt.key].items()):
            if ns and rt.namespaced and ons != ns:
                continue
            yield obj

    # ------------------------------------------------------------------ writes
    def create(self, rt: ResourceType, obj: dict, dry_run: bool = False, writer=None) -> dict:
        obj = clone(obj)
        md = obj.setdefault("metadata", {})
        ns = md.get("namespace") if rt.namespaced else None
        if not rt.namespaced:
            md.pop("namespace", None)
        self._check_namespace(rt, ns, creating=True)
        md["uid"] = str(uuid.uuid4())  # before admission: defaults may refer to it (Job selectors)
        if self.admission:  # generates the name from generateName after mutating admission
            obj = self.admission(rt, obj, None, None, writer is None or writer.internal)
            md = obj["metadata"]
        if not md.get("name") and md.get("generateName"):
            md["name"] = md["generateName"] + uuid.uuid4().hex[:5]
        name = md.get("name")
        if self.fields:
            obj = self.fields(rt, None, obj, writer or self.default_writer)
            md = obj["metadata"]
        if self._key(rt, ns, name) in self._objects[rt.key]:
            raise already_exists(rt, name)
        obj["apiVersion"] = rt.api_version
        obj["kind"] = rt.kind
        md["creationTimestamp"] = now_iso()
        md.pop("resourceVersion", None)
        md.pop("deletionTimestamp", None)
        if rt.key in _STATUS_TYPES or "spec" in obj:
            md["generation"] = 1
        if dry_run:
            md["resourceVersion"] = self.resource_version
            return obj
        md["resourceVersion"] = self._next_rv()
        self._objects[rt.key][self._key(rt, ns, name)] = obj
        self._emit("ADDED", rt, obj, None)
        return clone(obj)

    def update(self, rt: ResourceType, obj: dict, subresource: str | None = None, dry_run: bool = False, check_rv: bool = False,
               internal: bool = False, writer=None) -> dict:
        obj = clone(obj)
        md = obj.setdefault("metadata", {})
        ns = md.get("namespace") if rt.namespaced else None
        name = md.get("name")
        key = self._key(rt, ns, name)
        old = self._objects[rt.key].get(key)
        if old is None:
            raise not_found(rt, name)
        if check_rv and md.get("resourceVersion") and md["resourceVersion"] != old["metadata"]["resourceVersion"]:
            raise conflict(rt, name)
        if not internal and rt.key in _STATUS_TYPES:
            if subresource == "status":
                new = clone(old)
                new["status"] = obj.get("status", {})
                obj = new
            else:
                obj["status"] = copy.deepcopy(old.get("status")) if "status" in old else obj.get("status")
                if obj.get("status") is None:
                    obj.pop("status", None)
        # immutable metadata
        for f in ("uid", "creationTimestamp", "generation", "deletionTimestamp", "deletionGracePeriodSeconds"):
            if f in old["metadata"]:
                obj["metadata"][f] = old["metadata"][f]
            else:
                obj["metadata"].pop(f, None)
        obj["apiVersion"] = rt.api_version
        obj["kind"] = rt.kind
        if self.admission:
            obj = self.admission(rt, obj, old, subresource, internal)
        if self.fields:
            obj = self.fields(rt, old, obj, writer or self.default_writer)
        obj["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
        if _strip_volatile(obj) == _strip_volatile(old):
            return clone(old)
        if _spec_part(obj) != _spec_part(old) and "generation" in old["metadata"]:
            obj["metadata"]["generation"] = old["metadata"]["generation"] + 1
        if dry_run:
            return obj
        obj["metadata"]["resourceVersion"] = self._next_rv()
        self._objects[rt.key][key] = obj
        self._emit("MODIFIED", rt, obj, old)
        # finalizers removed from an object being deleted -> really delete
        if obj["metadata"].get("deletionTimestamp") and not obj["metadata"].get("finalizers") and rt.key not in (R.PODS.key, R.NAMESPACES.key):
            self.finalize_delete(rt, ns, name)
        return clone(obj)

    def delete(self, rt: ResourceType, ns: str | None, name: str, propagation: str = "Background", grace_period: int | None = None, dry_run: bool = False) -> dict:
        key = self._key(rt, ns, name)
        obj = self._objects[rt.key].get(key)
        if obj is None:
            raise not_found(rt, name)
        if dry_run:
            return clone(obj)
        md = obj["metadata"]
        graceful = rt.key == R.PODS.key and grace_period != 0 and obj.get("spec", {}).get("nodeName")
        if rt.key == R.NAMESPACES.key:
            if not md.get("deletionTimestamp"):
                old = clone(obj)
                md["deletionTimestamp"] = now_iso()
                obj.setdefault("spec", {})["finalizers"] = ["kubernetes"]
                obj.setdefault("status", {})["phase"] = "Terminating"
                md["resourceVersion"] = self._next_rv()
                self._emit("MODIFIED", rt, obj, old)
            return clone(obj)
        if graceful or md.get("finalizers"):
            # as the apiserver marks an object deleted (k8s.io/apiserver registry/rest/delete.go BeforeDelete for a
            # graceful delete, registry/generic/registry/store.go markAsDeleting for one held by finalizers):
            # deletionTimestamp = now + the grace period (the time the object will be gone), the grace period in
            # deletionGracePeriodSeconds (0 when not graceful), generation + 1 where the object has one; a second
            # graceful delete may only shorten a running grace period
            gp = 0
            if graceful:
                gp = grace_period if grace_period is not None else obj["spec"].get("terminationGracePeriodSeconds", 30)
                gp = 1 if gp < 0 else gp
            if not md.get("deletionTimestamp"):
                old = clone(obj)
                md["deletionTimestamp"] = iso_in(gp)
                md["deletionGracePeriodSeconds"] = gp
                if md.get("generation", 0) > 0:
                    md["generation"] += 1
                md["resourceVersion"] = self._next_rv()
                self._emit("MODIFIED", rt, obj, old)
            elif graceful and grace_period is not None and 0 < gp < (md.get("deletionGracePeriodSeconds") or 0):
                old = clone(obj)
                md["deletionTimestamp"] = iso_in(gp - md["deletionGracePeriodSeconds"], md["deletionTimestamp"])
                md["deletionGracePeriodSeconds"] = gp
                md["resourceVersion"] = self._next_rv()
                self._emit("MODIFIED", rt, obj, old)
            if propagation != "Orphan":
                self._cascade(md.get("uid"))
            return clone(obj)
        result = self.finalize_delete(rt, ns, name)
        if propagation == "Orphan":
            self._orphan(md.get("uid"))
        return result

    def finalize_delete(self, rt: ResourceType, ns: str | None, name: str) -> dict | None:
        key = self._key(rt, ns, name)
        obj = self._objects[rt.key].pop(key, None)
        if obj is None:
            return None
        obj["metadata"]["resourceVersion"] = self._next_rv()
        self._emit("DELETED", rt, obj, None)
        self._cascade(obj["metadata"].get("uid"))
        return clone(obj)

    def _dependents(self, uid: str):
        for key, objs in list(self._objects.items()):
            rt = _rt_by_key(key)
            for obj in list(objs.values()):
                for ref in obj["metadata"].get("ownerReferences") or []:
                    if ref.get("uid") == uid:
                        yield rt, obj
                        break

    def _cascade(self, uid: str | None) -> None:
        if not uid:
            return
        for rt, obj in list(self._dependents(uid)):
            md = obj["metadata"]
            if self._objects[rt.key].get(self._key(rt, md.get("namespace"), md["name"])) is not None:
                self.delete(rt, md.get("namespace"), md["name"])

    def _orphan(self, uid: str | None) -> None:
        if not uid:
            return
        for rt, obj in list(self._dependents(uid)):
            new = clone(obj)
            new["metadata"]["ownerReferences"] = [r for r in obj["metadata"]["ownerReferences"] if r.get("uid") != uid]
            if not new["metadata"]["ownerReferences"]:
                del new["metadata"]["ownerReferences"]
            self.update(rt, new, internal=True)

    # ------------------------------------------------------------------ watch
    def watch(self, rt: ResourceType, ns: str | None = None, since_rv: str | None = None, label_selector: str | None = None, field_selector: str | None = None) -> Watch:
        w = Watch(self, rt, ns, label_selector, field_selector)
        if since_rv not in (None, "", "0"):
            rv = int(since_rv)
            oldest = self._history[0][0] if self._history else self._rv
            if rv < oldest - 1 and rv < self._rv:
                raise ApiError(410, "Expired", f"too old resource version: {rv} ({oldest - 1})")
            for hrv, etype, _key, obj in self._history:
                if hrv > rv and w.matches(rt, obj):
                    w.push(etype, clone(obj))
        else:
            items, _ = self.list(rt, ns, label_selector, field_selector)
            for obj in items:
                w.push("ADDED", obj)
        self._watches.append(w)
        return w


def _rt_by_key(key: str) -> ResourceType:
    for rt in R.ALL_TYPES:
        if rt.key == key:
            return rt
    raise KeyError(key)


def _strip_volatile(obj: dict) -> dict:
    o = copy.copy(obj)
    md = dict(o.get("metadata", {}))
    md.pop("resourceVersion", None)
    o["metadata"] = md
    return o


def _spec_part(obj: dict) -> Any:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}
