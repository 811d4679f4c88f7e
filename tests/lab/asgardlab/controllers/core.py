"""Service -> Endpoints/EndpointSlices, namespace termination, PVC binding, the lab's Node."""

from __future__ import annotations

import copy
import logging

from .. import resources as R
from ..selectors import match_selector_dict
from ..store import ApiError, Store, now_iso
from .events import NODE_NAME
from .util import pod_ready

log = logging.getLogger("asgardlab.controllers")
HOST_IP = "10.244.0.1"  # the first lab's gateway; a lab's own is kubelet.net.gateway (kubelet/network.py)
POD_CIDR = "10.244.0.0/20"
SLICE_MANAGER = "endpointslice-controller.k8s.io"


def node_object(host_ip: str = HOST_IP, pod_cidr: str = POD_CIDR) -> dict:
    ts = now_iso()
    cond = lambda t, s, r, m: {"type": t, "status": s, "reason": r, "message": m, "lastHeartbeatTime": ts, "lastTransitionTime": ts}  # noqa: E731
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": NODE_NAME, "labels": {
            "kubernetes.io/hostname": NODE_NAME, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
            "node-role.kubernetes.io/control-plane": ""}},
        "spec": {"podCIDR": pod_cidr, "podCIDRs": [pod_cidr]},
        "status": {
            "conditions": [
                cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                cond("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
            ],
            "addresses": [{"type": "InternalIP", "address": host_ip}, {"type": "Hostname", "address": NODE_NAME}],
            "capacity": {"cpu": "2", "memory": "24Gi", "pods": "110", "ephemeral-storage": "100Gi"},
            "allocatable": {"cpu": "2", "memory": "24Gi", "pods": "110", "ephemeral-storage": "100Gi"},
            "nodeInfo": {
                "architecture": "amd64", "operatingSystem": "linux", "osImage": "asgard lab (processes in namespaces)",
                "kernelVersion": "", "kubeletVersion": "v1.32.0", "kubeProxyVersion": "v1.32.0",
                "containerRuntimeVersion": "asgardlab://1.0", "machineID": "", "systemUUID": "", "bootID": "",
            },
        },
    }


def ensure_node(store: Store, host_ip: str = HOST_IP, pod_cidr: str = POD_CIDR) -> None:
    node = node_object(host_ip, pod_cidr)
    cur = store.get(R.lookup("", "nodes"), None, NODE_NAME)
    if cur is None:
        store.create(R.lookup("", "nodes"), node)
    else:
        cur["spec"], cur["status"] = node["spec"], node["status"]
        store.update(R.lookup("", "nodes"), cur, internal=True)


def _resolve_port(target, pod: dict) -> int | None:
    if isinstance(target, int):
        return target
    if isinstance(target, str) and target.isdigit():
        return int(target)
    for c in pod["spec"].get("containers") or []:
        for p in c.get("ports") or []:
            if p.get("name") == target:
                return p.get("containerPort")
    return None


class Core:
    def __init__(self, store: Store, kubelet=None) -> None:
        self.store = store
        self.kubelet = kubelet

    # ------------------------------------------------------------------ endpoints
    def sync_services(self) -> None:
        seen = set()
        for svc in list(self.store.iter_refs(R.SERVICES)):
            md = svc["metadata"]
            seen.add((md["namespace"], md["name"]))
            sel = (svc.get("spec") or {}).get("selector")
            if not sel:
                continue
            try:
                self._sync_service(svc)
            except ApiError as exc:
                log.debug("service %s: %s", md["name"], exc.message)
        # Endpoints of deleted services
        for ep in list(self.store.iter_refs(R.ENDPOINTS)):
            md = ep["metadata"]
            if (md["namespace"], md["name"]) not in seen and (md.get("labels") or {}).get("endpoints.kubernetes.io/managed-by") == "endpoint-controller":
                try:
                    self.store.delete(R.ENDPOINTS, md["namespace"], md["name"])
                except ApiError:
                    pass

    def _sync_service(self, svc: dict) -> None:
        md, spec = svc["metadata"], svc["spec"]
        ns = md["namespace"]
        publish_not_ready = bool(spec.get("publishNotReadyAddresses"))
        pods = [p for p in self.store.iter_refs(R.PODS, ns)
                if match_selector_dict({"matchLabels": spec["selector"]}, p["metadata"].get("labels") or {})
                and (p.get("status") or {}).get("podIP") and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]
        groups: dict[tuple, dict] = {}
        slice_eps = []
        svc_ports = spec.get("ports") or []
        for p in sorted(pods, key=lambda p: p["metadata"]["name"]):
            terminating = bool(p["metadata"].get("deletionTimestamp"))
            ready = pod_ready(p) and not terminating
            resolved = tuple((sp.get("name"), _resolve_port(sp.get("targetPort", sp.get("port")), p), sp.get("protocol", "TCP")) for sp in svc_ports)
            if any(port is None for _, port, _ in resolved):
                continue
            addr = {"ip": p["status"]["podIP"], "nodeName": NODE_NAME,
                    "targetRef": {"kind": "Pod", "namespace": ns, "name": p["metadata"]["name"], "uid": p["metadata"]["uid"]}}
            if not terminating:
                g = groups.setdefault(resolved, {"addresses": [], "notReadyAddresses": []})
                g["addresses" if ready or publish_not_ready else "notReadyAddresses"].append(addr)
            slice_eps.append((resolved, {
                "addresses": [p["status"]["podIP"]],
                "conditions": {"ready": ready or publish_not_ready, "serving": pod_ready(p), "terminating": terminating},
                "nodeName": NODE_NAME,
                "targetRef": addr["targetRef"],
            }))
        subsets = []
        for resolved, g in groups.items():
            sub = {k: v for k, v in g.items() if v}
            sub["ports"] = [{k: v for k, v in (("name", n), ("port", port), ("protocol", proto)) if v is not None} for n, port, proto in resolved]
            subsets.append(sub)
        labels = dict(md.get("labels") or {})
        labels["endpoints.kubernetes.io/managed-by"] = "endpoint-controller"
        ep = {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": md["name"], "namespace": ns, "labels": labels}}
        if subsets:
            ep["subsets"] = subsets
        cur = self.store.get(R.ENDPOINTS, ns, md["name"])
        if cur is None:
            self.store.create(R.ENDPOINTS, ep)
        elif cur.get("subsets") != ep.get("subsets") or cur["metadata"].get("labels") != labels:
            cur["metadata"]["labels"] = labels
            cur.pop("subsets", None)
            if subsets:
                cur["subsets"] = subsets
            self.store.update(R.ENDPOINTS, cur, internal=True)
        self._sync_slice(svc, slice_eps, svc_ports)

    def _sync_slice(self, svc: dict, slice_eps: list, svc_ports: list) -> None:
        md = svc["metadata"]
        ns = md["namespace"]
        ports_key = None
        endpoints = []
        for resolved, e in slice_eps:
            ports_key = ports_key or resolved
            if resolved == ports_key:
                endpoints.append(e)
        ports = [{"name": n or "", "port": port, "protocol": proto} for n, port, proto in ports_key or ()]
        mine = [s for s in self.store.iter_refs(R.ENDPOINTSLICES, ns) if (s["metadata"].get("labels") or {}).get("kubernetes.io/service-name") == md["name"]
                and (s["metadata"].get("labels") or {}).get("endpointslice.kubernetes.io/managed-by") == SLICE_MANAGER]
        body = {"addressType": "IPv4", "endpoints": endpoints, "ports": ports}
        if mine:
            cur = copy.deepcopy(mine[0])
            if any(cur.get(k) != v for k, v in body.items()):
                cur.update(body)
                self.store.update(R.ENDPOINTSLICES, cur, internal=True)
            return
        sl = {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "generateName": f"{md['name']}-",
                "namespace": ns,
                "labels": {"kubernetes.io/service-name": md["name"], "endpointslice.kubernetes.io/managed-by": SLICE_MANAGER},
                "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": md["name"], "uid": md["uid"], "controller": True, "blockOwnerDeletion": True}],
            },
            **body,
        }
        self.store.create(R.ENDPOINTSLICES, sl)

    # ------------------------------------------------------------------ PVCs
    def sync_pvcs(self) -> None:
        for pvc in list(self.store.iter_refs(R.PVCS)):
            if (pvc.get("status") or {}).get("phase") == "Bound" or pvc["metadata"].get("deletionTimestamp"):
                continue
            cur = copy.deepcopy(pvc)
            req = ((cur.get("spec") or {}).get("resources") or {}).get("requests") or {}
            cur.setdefault("spec", {}).setdefault("volumeName", f"pvc-{cur['metadata']['uid']}")
            cur["status"] = {"phase": "Bound", "accessModes": cur["spec"].get("accessModes") or ["ReadWriteOnce"],
                             "capacity": {"storage": req.get("storage", "1Gi")}}
            ann = cur["metadata"].setdefault("annotations", {})
            ann["pv.kubernetes.io/bind-completed"] = "yes"
            try:
                self.store.update(R.PVCS, cur, internal=True)
            except ApiError as exc:
                log.debug("pvc %s: %s", cur["metadata"]["name"], exc.message)

    # ------------------------------------------------------------------ namespaces
    def sync_namespaces(self) -> None:
        for nsobj in list(self.store.iter_refs(R.NAMESPACES)):
            if not nsobj["metadata"].get("deletionTimestamp"):
                continue
            ns = nsobj["metadata"]["name"]
            left = 0
            for rt in R.ALL_TYPES:
                if not rt.namespaced:
                    continue
                for obj in list(self.store.iter_refs(rt, ns)):
                    left += 1
                    if obj["metadata"].get("deletionTimestamp"):
                        fin = obj["metadata"].get("finalizers") or []
                        if rt.key != R.PODS.key and "kubernetes.io/pvc-protection" in fin and not any(
                                True for _ in self.store.iter_refs(R.PODS, ns)):
                            cur = copy.deepcopy(obj)
                            cur["metadata"]["finalizers"] = [f for f in fin if f != "kubernetes.io/pvc-protection"]
                            self.store.update(rt, cur, internal=True)
                        continue
                    try:
                        self.store.delete(rt, ns, obj["metadata"]["name"])
                    except ApiError:
                        pass
            if not left:
                self.store.finalize_delete(R.NAMESPACES, None, ns)
