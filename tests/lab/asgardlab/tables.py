"""Server-side printing (``Accept: application/json;as=Table;v=v1;g=meta.k8s.io``) as kube-apiserver does it."""

from __future__ import annotations

import datetime as _dt

from .resources import ResourceType


def human_duration(seconds: float) -> str:
    """k8s.io/apimachinery/pkg/util/duration.HumanDuration."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if m < 180:
        return f"{m}m"
    h = m // 60
    if h < 8:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if h < 48:
        return f"{h}h"
    if h < 24 * 8:
        return f"{h // 24}d{h % 24}h" if h % 24 else f"{h // 24}d"
    if h < 24 * 365 * 2:
        return f"{h // 24}d"
    y = h // (24 * 365)
    if y < 8:
        return f"{y}y{(h // 24) % 365}d"
    return f"{y}y"


def _age(ts: str | None) -> str:
    if not ts:
        return "<unknown>"
    t = _dt.datetime.strptime(ts[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=_dt.UTC)
    return human_duration((_dt.datetime.now(_dt.UTC) - t).total_seconds())


def _col(name: str, typ: str = "string", priority: int = 0, fmt: str = "", desc: str = "") -> dict:
    return {"name": name, "type": typ, "format": fmt, "description": desc or name, "priority": priority}


NAME = _col("Name", fmt="name", desc="Name must be unique within a namespace.")
AGE = _col("Age", desc="CreationTimestamp is a timestamp representing the server time when this object was created.")


def _containers(spec: dict) -> tuple[str, str]:
    cs = ((spec.get("template") or {}).get("spec") or {}).get("containers") or []
    return ",".join(c.get("name", "") for c in cs), ",".join(c.get("image", "") for c in cs)


def _selector(sel: dict | None) -> str:
    from .selectors import selector_dict_to_string

    return selector_dict_to_string(sel) or "<none>"


def pod_status(pod: dict) -> tuple[str, int, int, int]:
    st = pod.get("status") or {}
    reason = st.get("reason") or st.get("phase") or "Pending"
    spec = pod.get("spec") or {}
    total = len(spec.get("containers") or [])
    ready = restarts = 0
    init = False
    for i, cs in enumerate(st.get("initContainerStatuses") or []):
        restarts += cs.get("restartCount", 0)
        state = cs.get("state") or {}
        term = state.get("terminated")
        if term and term.get("exitCode") == 0:
            continue
        init = True
        if term:
            reason = "Init:" + (term.get("reason") or f"Signal:{term.get('signal')}" if term.get("signal") else "Init:" + (term.get("reason") or f"ExitCode:{term.get('exitCode')}"))
        elif state.get("waiting", {}).get("reason") not in (None, "", "PodInitializing"):
            reason = "Init:" + state["waiting"]["reason"]
        else:
            reason = f"Init:{i}/{len(spec.get('initContainers') or [])}"
        break
    if not init:
        has_running = False
        for cs in reversed(st.get("containerStatuses") or []):
            restarts += cs.get("restartCount", 0)
            state = cs.get("state") or {}
            if state.get("waiting", {}).get("reason"):
                reason = state["waiting"]["reason"]
            elif state.get("terminated"):
                t = state["terminated"]
                reason = t.get("reason") or (f"Signal:{t['signal']}" if t.get("signal") else f"ExitCode:{t.get('exitCode')}")
            elif state.get("running") and cs.get("ready"):
                has_running = True
                ready += 1
            elif state.get("running"):
                has_running = True
        if reason == "Completed" and has_running:
            reason = "Running"
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        reason = "Unknown" if st.get("reason") == "NodeLost" else "Terminating"
    return reason, ready, total, restarts


def _pod(o):
    reason, ready, total, restarts = pod_status(o)
    st, sp = o.get("status") or {}, o.get("spec") or {}
    return [f"{ready}/{total}", reason, restarts, _age(o["metadata"].get("creationTimestamp")),
            st.get("podIP") or "<none>", sp.get("nodeName") or "<none>", st.get("nominatedNodeName") or "<none>",
            "<none>"]


def _ports(spec: dict) -> str:
    out = []
    for p in spec.get("ports") or []:
        if p.get("nodePort"):
            out.append(f"{p.get('port')}:{p['nodePort']}/{p.get('protocol', 'TCP')}")
        else:
            out.append(f"{p.get('port')}/{p.get('protocol', 'TCP')}")
    return ",".join(out) or "<none>"


def _svc(o):
    sp = o.get("spec") or {}
    lb = ((o.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    ext = ",".join(i.get("ip") or i.get("hostname", "") for i in lb)
    if sp.get("type") == "ExternalName":
        ext = sp.get("externalName", "")
    elif sp.get("type") == "LoadBalancer" and not ext:
        ext = "<pending>"
    ext = ext or ",".join(sp.get("externalIPs") or []) or "<none>"
    sel = sp.get("selector")
    return [sp.get("type", "ClusterIP"), sp.get("clusterIP") or "<none>", ext, _ports(sp), _age(o["metadata"].get("creationTimestamp")),
            ",".join(f"{k}={v}" for k, v in sorted(sel.items())) if sel else "<none>"]


def _deploy(o):
    sp, st = o.get("spec") or {}, o.get("status") or {}
    names, images = _containers(sp)
    return [f"{st.get('readyReplicas', 0)}/{sp.get('replicas', 0)}", st.get("updatedReplicas", 0), st.get("availableReplicas", 0),
            _age(o["metadata"].get("creationTimestamp")), names, images, _selector(sp.get("selector"))]


def _rs(o):
    sp, st = o.get("spec") or {}, o.get("status") or {}
    names, images = _containers(sp)
    return [sp.get("replicas", 0), st.get("replicas", 0), st.get("readyReplicas", 0), _age(o["metadata"].get("creationTimestamp")),
            names, images, _selector(sp.get("selector"))]


def _endpoints(o):
    eps = []
    for s in o.get("subsets") or []:
        for a in s.get("addresses") or []:
            for p in s.get("ports") or [{}]:
                eps.append(f"{a.get('ip')}:{p.get('port')}" if p.get("port") else a.get("ip"))
    text = ",".join(eps[:3]) + (f" + {len(eps) - 3} more..." if len(eps) > 3 else "")
    return [text or "<none>", _age(o["metadata"].get("creationTimestamp"))]


def _ns(o):
    return [(o.get("status") or {}).get("phase", "Active"), _age(o["metadata"].get("creationTimestamp"))]


def _event(o):
    io = o.get("involvedObject") or {}
    last = o.get("lastTimestamp") or o.get("eventTime") or o["metadata"].get("creationTimestamp")
    src = o.get("source") or {}
    return [_age(last), o.get("type", ""), o.get("reason", ""), f"{(io.get('kind') or '').lower()}/{io.get('name', '')}",
            io.get("fieldPath", ""), ", ".join(x for x in (src.get("component"), src.get("host")) if x),
            o.get("message", ""), _age(o.get("firstTimestamp") or last), o.get("count", 1), o["metadata"]["name"]]


def _job(o):
    sp, st = o.get("spec") or {}, o.get("status") or {}
    conds = {c.get("type"): c.get("status") for c in st.get("conditions") or []}
    status = ("Complete" if conds.get("Complete") == "True" else "Failed" if conds.get("Failed") == "True"
              else "Suspended" if sp.get("suspend") else "Running")
    names, images = _containers(sp)
    dur = ""
    if st.get("startTime"):
        start = _dt.datetime.strptime(st["startTime"][:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=_dt.UTC)
        end = (_dt.datetime.strptime(st["completionTime"][:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=_dt.UTC)
               if st.get("completionTime") else _dt.datetime.now(_dt.UTC))
        dur = human_duration((end - start).total_seconds())
    return [status, f"{st.get('succeeded', 0)}/{sp.get('completions', 1)}", dur, _age(o["metadata"].get("creationTimestamp")),
            names, images, _selector(sp.get("selector"))]


def _secret(o):
    return [o.get("type", "Opaque"), len(o.get("data") or {}), _age(o["metadata"].get("creationTimestamp"))]


def _cm(o):
    return [len(o.get("data") or {}) + len(o.get("binaryData") or {}), _age(o["metadata"].get("creationTimestamp"))]


def _ing(o):
    sp = o.get("spec") or {}
    hosts = ",".join(r.get("host", "*") for r in sp.get("rules") or []) or "*"
    lb = ((o.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    return [sp.get("ingressClassName") or "<none>", hosts, ",".join(i.get("ip") or i.get("hostname", "") for i in lb),
            "80, 443" if sp.get("tls") else "80", _age(o["metadata"].get("creationTimestamp"))]


def _ingclass(o):
    sp = o.get("spec") or {}
    par = sp.get("parameters")
    return [sp.get("controller", ""), f'{par.get("kind")}/{par.get("name")}' if par else "<none>",
            _age(o["metadata"].get("creationTimestamp"))]


def _cond_status(o, ctype: str) -> str:
    return next((c.get("status", "") for c in (o.get("status") or {}).get("conditions") or [] if c.get("type") == ctype), "")


def _gatewayclass(o):
    sp = o.get("spec") or {}
    return [sp.get("controllerName", ""), _cond_status(o, "Accepted"), _age(o["metadata"].get("creationTimestamp")),
            sp.get("description", "")]


def _gateway(o):
    addrs = ",".join(a.get("value", "") for a in (o.get("status") or {}).get("addresses") or [])
    return [(o.get("spec") or {}).get("gatewayClassName", ""), addrs, _cond_status(o, "Programmed"),
            _age(o["metadata"].get("creationTimestamp"))]


def _httproute(o):
    import json

    hosts = (o.get("spec") or {}).get("hostnames")
    return [json.dumps(hosts, separators=(",", ":")) if hosts else "", _age(o["metadata"].get("creationTimestamp"))]


def _sa(o):
    return [len(o.get("secrets") or []), _age(o["metadata"].get("creationTimestamp"))]


def _generic(o):
    return [_age(o["metadata"].get("creationTimestamp"))]


_PRINTERS = {
    "pods": ([_col("Ready", desc="The aggregate readiness state of this pod for accepting traffic."), _col("Status"),
              _col("Restarts", "string"), AGE, _col("IP", priority=1), _col("Node", priority=1),
              _col("Nominated Node", priority=1), _col("Readiness Gates", priority=1)], _pod),
    "services": ([_col("Type"), _col("Cluster-IP"), _col("External-IP"), _col("Port(s)"), AGE,
                  _col("Selector", priority=1)], _svc),
    "apps/deployments": ([_col("Ready"), _col("Up-to-date", "integer"), _col("Available", "integer"), AGE,
                          _col("Containers", priority=1), _col("Images", priority=1), _col("Selector", priority=1)], _deploy),
    "apps/replicasets": ([_col("Desired", "integer"), _col("Current", "integer"), _col("Ready", "integer"), AGE,
                          _col("Containers", priority=1), _col("Images", priority=1), _col("Selector", priority=1)], _rs),
    "endpoints": ([_col("Endpoints"), AGE], _endpoints),
    "namespaces": ([_col("Status"), AGE], _ns),
    "events": ([_col("Last Seen"), _col("Type"), _col("Reason"), _col("Object"), _col("Subobject", priority=1),
                _col("Source", priority=1), _col("Message"), _col("First Seen", priority=1), _col("Count", "integer", 1),
                _col("Name", priority=1)], _event),
    "batch/jobs": ([_col("Status"), _col("Completions"), _col("Duration"), AGE, _col("Containers", priority=1),
                    _col("Images", priority=1), _col("Selector", priority=1)], _job),
    "secrets": ([_col("Type"), _col("Data", "integer"), AGE], _secret),
    "configmaps": ([_col("Data", "integer"), AGE], _cm),
    "networking.k8s.io/ingresses": ([_col("Class"), _col("Hosts"), _col("Address"), _col("Ports"), AGE], _ing),
    "serviceaccounts": ([_col("Secrets", "integer"), AGE], _sa),
    "networking.k8s.io/ingressclasses": ([_col("Controller"), _col("Parameters"), AGE], _ingclass),
    # Gateway API: the CRDs' additionalPrinterColumns
    "gateway.networking.k8s.io/gatewayclasses": ([_col("Controller"), _col("Accepted"), AGE,
                                                  _col("Description", priority=1)], _gatewayclass),
    "gateway.networking.k8s.io/gateways": ([_col("Class"), _col("Address"), _col("Programmed"), AGE], _gateway),
    "gateway.networking.k8s.io/httproutes": ([_col("Hostnames"), AGE], _httproute),
}


def _row_object(obj: dict, include: str) -> dict | None:
    if include == "None":
        return None
    if include == "Object":
        return obj
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj.get("metadata", {})}


def table(rt: ResourceType, objs: list[dict], resource_version: str, include: str = "Metadata", list_meta: dict | None = None) -> dict:
    cols, fn = _PRINTERS.get(rt.key, ([AGE], _generic))
    rows = []
    for o in objs:
        row = {"cells": [o["metadata"].get("name", "")] + fn(o)}
        ro = _row_object(o, include)
        if ro is not None:
            row["object"] = ro
        rows.append(row)
    md = {"resourceVersion": resource_version}
    md.update(list_meta or {})
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": md, "columnDefinitions": [NAME] + cols, "rows": rows}


def wants_table(accept: str) -> bool:
    first = (accept or "").split(",")[0]
    return "as=Table" in first
