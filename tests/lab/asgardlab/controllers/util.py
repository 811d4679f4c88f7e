"""Small helpers shared by the controllers."""

from __future__ import annotations

import datetime as _dt
import json
import math
import random

ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # k8s.io/apimachinery rand.SafeEncodeString alphabet


def parse_ts(ts: str | None) -> float | None:
    if not ts:
        return None
    return _dt.datetime.strptime(ts[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=_dt.UTC).timestamp()


def rand_suffix(n: int = 5) -> str:
    return "".join(random.choice(ALPHABET) for _ in range(n))


def fnv32a(data: bytes) -> int:
    h = 0x811C9DC5
    for b in data:
        h ^= b
        h = (h * 0x01000193) & 0xFFFFFFFF
    return h


def template_hash(template: dict, collision_count: int = 0) -> str:
    tpl = json.loads(json.dumps(template or {}))
    labels = (tpl.get("metadata") or {}).get("labels") or {}
    labels.pop("pod-template-hash", None)
    raw = json.dumps(tpl, sort_keys=True, separators=(",", ":")).encode() + str(collision_count or "").encode()
    h = str(fnv32a(raw))
    return "".join(ALPHABET[ord(c) % len(ALPHABET)] for c in h)[:10]


def controller_ref(obj: dict) -> dict:
    md = obj["metadata"]
    return {
        "apiVersion": obj["apiVersion"],
        "kind": obj["kind"],
        "name": md["name"],
        "uid": md["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def owned_by(obj: dict, uid: str) -> bool:
    return any(r.get("uid") == uid and r.get("controller") for r in obj["metadata"].get("ownerReferences") or [])


def condition(obj: dict, ctype: str) -> dict | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == ctype:
            return c
    return None


def pod_ready(pod: dict) -> bool:
    c = condition(pod, "Ready")
    return bool(c and c.get("status") == "True")


def pod_available(pod: dict, min_ready: int, now: float) -> bool:
    c = condition(pod, "Ready")
    if not c or c.get("status") != "True":
        return False
    if not min_ready:
        return True
    t = parse_ts(c.get("lastTransitionTime"))
    return t is not None and t + min_ready <= now


def pod_active(pod: dict) -> bool:
    return not pod["metadata"].get("deletionTimestamp") and (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")


def int_or_percent(value, total: int, round_up: bool, field: str) -> int:
    if value is None:
        value = "25%"
    if isinstance(value, int):
        return value
    s = str(value)
    if s.endswith("%"):
        try:
            pct = int(s[:-1])
        except ValueError:
            raise ValueError(f"{field}: expected an integer or a percentage like '25%', got {value!r}") from None
        v = pct * total / 100
        return math.ceil(v) if round_up else math.floor(v)
    try:
        return int(s)
    except ValueError:
        raise ValueError(f"{field}: expected an integer or a percentage like '25%', got {value!r}") from None


def set_condition(status: dict, ctype: str, cstatus: str, reason: str, message: str, now: str, progress: bool = False) -> None:
    conds = status.setdefault("conditions", [])
    for c in conds:
        if c["type"] == ctype:
            if c["status"] != cstatus:
                c["lastTransitionTime"] = now
                c["lastUpdateTime"] = now
            elif progress or c.get("reason") != reason:
                c["lastUpdateTime"] = now
            c["status"], c["reason"], c["message"] = cstatus, reason, message
            return
    conds.append({"type": ctype, "status": cstatus, "reason": reason, "message": message, "lastTransitionTime": now, "lastUpdateTime": now})
