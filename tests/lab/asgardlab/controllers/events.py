"""v1 Events as a real cluster records them (deduplicated: count, firstTimestamp, lastTimestamp)."""

from __future__ import annotations

import logging
import uuid

from .. import resources as R
from ..store import ApiError, Store, now_iso

log = logging.getLogger("asgardlab.events")
NODE_NAME = "asgard-lab-node"


class Recorder:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._seen: dict[tuple, str] = {}  # (uid, type, reason, message, fieldPath) -> event name

    def event(self, obj: dict, etype: str, reason: str, message: str, component: str, field_path: str | None = None) -> None:
        md = obj.get("metadata", {})
        ns = md.get("namespace") or "default"
        key = (md.get("uid"), etype, reason, message, field_path)
        ts = now_iso()
        name = self._seen.get(key)
        if name:
            ev = self.store.get(R.EVENTS, ns, name)
            if ev is not None:
                ev["count"] = int(ev.get("count") or 1) + 1
                ev["lastTimestamp"] = ts
                try:
                    self.store.update(R.EVENTS, ev, internal=True)
                    return
                except ApiError:
                    pass
        involved = {
            "apiVersion": obj.get("apiVersion"),
            "kind": obj.get("kind"),
            "name": md.get("name"),
            "namespace": md.get("namespace"),
            "uid": md.get("uid"),
            "resourceVersion": md.get("resourceVersion"),
        }
        if field_path:
            involved["fieldPath"] = field_path
        name = f"{md.get('name')}.{uuid.uuid4().hex[:16]}"
        ev = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": ns},
            "involvedObject": {k: v for k, v in involved.items() if v is not None},
            "reason": reason,
            "message": message,
            "type": etype,
            "count": 1,
            "firstTimestamp": ts,
            "lastTimestamp": ts,
            "source": {"component": component, **({"host": NODE_NAME} if component == "kubelet" else {})},
            "reportingComponent": component,
            "reportingInstance": NODE_NAME if component == "kubelet" else "",
            "eventTime": None,
        }
        try:
            self.store.create(R.EVENTS, ev)
            self._seen[key] = name
        except ApiError as exc:  # namespace terminating or gone: a real cluster drops the event too
            log.debug("event %s/%s dropped: %s", ns, reason, exc.message)
