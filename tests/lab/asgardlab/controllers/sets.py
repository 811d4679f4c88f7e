"""StatefulSet -> Pods (+ PVCs from volumeClaimTemplates) and DaemonSet -> one Pod on the lab's node.

Minimal versions of kubernetes pkg/controller/statefulset and pkg/controller/daemon, with the status fields the
real ones report (what `kubectl rollout status` and kubernetes.core's `wait: true` read):
- StatefulSet: pods ``<name>-<ordinal>`` (hostname, subdomain = serviceName, labels
  ``controller-revision-hash``, ``statefulset.kubernetes.io/pod-name``, ``apps.kubernetes.io/pod-index``);
  OrderedReady creates ordinal N only when 0..N-1 are Running and Ready and removes the highest ordinal first,
  one at a time; Parallel does all at once. RollingUpdate replaces pods whose revision is not the update
  revision from the highest ordinal down to ``partition``, one at a time, each after the previous one is
  Ready again; OnDelete leaves that to the user. PVCs ``<template>-<name>-<ordinal>`` are created and kept
  (retention policy Retain). ControllerRevisions ``<name>-<hash>`` record the templates.
- DaemonSet: one pod per matching node (the lab has one; ``nodeSelector`` is honoured), pinned by node
  affinity as the real controller does; RollingUpdate (maxUnavailable 1, maxSurge 0) deletes the old pod then
  creates the new one; OnDelete waits for the user.
Not modelled: minReadySeconds beyond availability counting, maxUnavailable for StatefulSets, tolerations and
taints, history cleanup beyond revisionHistoryLimit of ControllerRevisions.
"""

from __future__ import annotations

import copy
import logging
import time

from .. import resources as R
from ..store import ApiError, Store
from .events import NODE_NAME, Recorder
from .util import controller_ref, owned_by, pod_active, pod_available, pod_ready, rand_suffix, template_hash

log = logging.getLogger("asgardlab.controllers")
STATEFULSETS = R.lookup("apps", "statefulsets")
DAEMONSETS = R.lookup("apps", "daemonsets")
REVISIONS = R.lookup("apps", "controllerrevisions")
NODES = R.lookup("", "nodes")
HASH = "controller-revision-hash"


def _running_ready(p: dict) -> bool:
    return (p.get("status") or {}).get("phase") == "Running" and pod_ready(p)


class Sets:
    def __init__(self, store: Store, rec: Recorder) -> None:
        self.store = store
        self.rec = rec

    # ------------------------------------------------------------------ shared
    def _pods_of(self, ns: str, uid: str) -> list[dict]:
        return [p for p in self.store.iter_refs(R.PODS, ns) if owned_by(p, uid)]

    def _revision(self, owner: dict, template: dict) -> str:
        """The ControllerRevision name for ``template`` (created if missing): ``<owner>-<hash>``."""
        md = owner["metadata"]
        ns = md["namespace"]
        name = f"{md['name']}-{template_hash(template, (owner.get('status') or {}).get('collisionCount'))}"
        revs = [r for r in self.store.iter_refs(REVISIONS, ns) if owned_by(r, md["uid"])]
        if not any(r["metadata"]["name"] == name for r in revs):
            labels = dict(((owner.get("spec") or {}).get("selector") or {}).get("matchLabels") or {})
            labels[HASH] = name.rsplit("-", 1)[1]
            try:
                self.store.create(REVISIONS, {
                    "apiVersion": "apps/v1", "kind": "ControllerRevision",
                    "metadata": {"name": name, "namespace": ns, "labels": labels, "ownerReferences": [controller_ref(owner)]},
                    "data": {"spec": {"template": {**copy.deepcopy(template), "$patch": "replace"}}},
                    "revision": max((int(r.get("revision") or 0) for r in revs), default=0) + 1})
            except ApiError as exc:
                log.debug("controllerrevision %s: %s", name, exc.message)
            limit = (owner.get("spec") or {}).get("revisionHistoryLimit", 10)
            in_use = {(owner.get("status") or {}).get("currentRevision")}
            for old in [r for r in sorted(revs, key=lambda r: int(r.get("revision") or 0)) if r["metadata"]["name"] not in in_use][: max(len(revs) - limit, 0)]:
                try:
                    self.store.delete(REVISIONS, ns, old["metadata"]["name"])
                except ApiError:
                    pass
        return name

    def _put_status(self, rt, obj: dict, status: dict) -> None:
        if status == (obj.get("status") or {}):
            return
        cur = self.store.get(rt, obj["metadata"]["namespace"], obj["metadata"]["name"])
        if cur is not None:
            cur["status"] = status
            self.store.update(rt, cur, internal=True)

    def _create_pod(self, owner: dict, pod: dict, component: str) -> None:
        created = self.store.create(R.PODS, pod)
        kind = owner["kind"]
        self.rec.event(owner, "Normal", "SuccessfulCreate",
                       f"create Pod {created['metadata']['name']} in {kind} {owner['metadata']['name']} successful" if kind == "StatefulSet"
                       else f"Created pod: {created['metadata']['name']}", component)

    def _delete_pod(self, owner: dict, pod: dict, component: str) -> None:
        self.store.delete(R.PODS, pod["metadata"]["namespace"], pod["metadata"]["name"])
        kind = owner["kind"]
        self.rec.event(owner, "Normal", "SuccessfulDelete",
                       f"delete Pod {pod['metadata']['name']} in {kind} {owner['metadata']['name']} successful" if kind == "StatefulSet"
                       else f"Deleted pod: {pod['metadata']['name']}", component)

    # ------------------------------------------------------------------ statefulsets
    def sync_statefulsets(self) -> None:
        now = time.time()
        for sts in list(self.store.iter_refs(STATEFULSETS)):
            try:
                self._sync_sts(copy.deepcopy(sts), now)
            except ApiError as exc:
                log.debug("statefulset %s: %s", sts["metadata"]["name"], exc.message)
            except (ValueError, TypeError, KeyError) as exc:
                log.warning("statefulset %s/%s: %s", sts["metadata"].get("namespace"), sts["metadata"]["name"], exc)

    def _template(self, owner: dict, revision: str) -> dict:
        """The pod template recorded in ControllerRevision ``revision`` (the owner's own if not found)."""
        cr = self.store.get_ref(REVISIONS, owner["metadata"]["namespace"], revision)
        tpl = copy.deepcopy((((cr or {}).get("data") or {}).get("spec") or {}).get("template") or owner["spec"].get("template") or {})
        tpl.pop("$patch", None)
        return tpl

    def _sts_pod(self, sts: dict, ordinal: int, revision: str) -> dict:
        md, spec = sts["metadata"], sts["spec"]
        tpl = self._template(sts, revision)
        pmd = tpl.get("metadata") or {}
        name = f"{md['name']}-{ordinal}"
        labels = {**(pmd.get("labels") or {}), HASH: revision, "statefulset.kubernetes.io/pod-name": name,
                  "apps.kubernetes.io/pod-index": str(ordinal)}
        pspec = tpl.get("spec") or {}
        pspec["hostname"] = name
        if spec.get("serviceName"):
            pspec["subdomain"] = spec["serviceName"]
        vols = [v for v in pspec.get("volumes") or [] if v["name"] not in {t["metadata"]["name"] for t in spec.get("volumeClaimTemplates") or []}]
        for t in spec.get("volumeClaimTemplates") or []:
            vols.append({"name": t["metadata"]["name"], "persistentVolumeClaim": {"claimName": f"{t['metadata']['name']}-{name}"}})
        if vols:
            pspec["volumes"] = vols
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": md["namespace"], "labels": labels, "ownerReferences": [controller_ref(sts)]},
               "spec": pspec}
        if pmd.get("annotations"):
            pod["metadata"]["annotations"] = pmd["annotations"]
        return pod

    def _ensure_claims(self, sts: dict, ordinal: int) -> None:
        md = sts["metadata"]
        for t in sts["spec"].get("volumeClaimTemplates") or []:
            claim = f"{t['metadata']['name']}-{md['name']}-{ordinal}"
            if self.store.get_ref(R.PVCS, md["namespace"], claim) is not None:
                continue
            labels = {**((sts["spec"].get("selector") or {}).get("matchLabels") or {}), **(t["metadata"].get("labels") or {})}
            pvc = {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                   "metadata": {"name": claim, "namespace": md["namespace"], "labels": labels},
                   "spec": copy.deepcopy(t.get("spec") or {})}
            self.store.create(R.PVCS, pvc)
            self.rec.event(sts, "Normal", "SuccessfulCreate",
                           f"create Claim {claim} Pod {md['name']}-{ordinal} in StatefulSet {md['name']} success", "statefulset-controller")

    def _sync_sts(self, sts: dict, now: float) -> None:
        md, spec = sts["metadata"], sts["spec"]
        if md.get("deletionTimestamp"):
            return
        ns = md["namespace"]
        replicas = int(spec.get("replicas", 1))
        update_rev = self._revision(sts, spec.get("template") or {})
        status_before = copy.deepcopy(sts.get("status") or {})
        current_rev = status_before.get("currentRevision") or update_rev
        ordered = spec.get("podManagementPolicy", "OrderedReady") != "Parallel"
        strategy = spec.get("updateStrategy") or {}
        partition = int((strategy.get("rollingUpdate") or {}).get("partition") or 0)
        pods = {}
        for p in self._pods_of(ns, md["uid"]):
            try:
                pods[int(p["metadata"]["name"].rsplit("-", 1)[1])] = p
            except ValueError:
                continue
        # failed pods are replaced; terminating pods are waited for
        for p in pods.values():
            if (p.get("status") or {}).get("phase") == "Failed" and not p["metadata"].get("deletionTimestamp"):
                self._delete_pod(sts, p, "statefulset-controller")
        busy = False
        for i in range(replicas):  # create missing ordinals
            p = pods.get(i)
            if p is None:
                if busy and ordered:
                    break
                self._ensure_claims(sts, i)
                # newVersionedStatefulSetPod: below the partition the current revision, else the update revision
                rev = current_rev if strategy.get("type", "RollingUpdate") == "RollingUpdate" and i < partition else update_rev
                self._create_pod(sts, self._sts_pod(sts, i, rev), "statefulset-controller")
                busy = True
                if ordered:
                    break
            elif ordered and not (_running_ready(p) and not p["metadata"].get("deletionTimestamp")):
                busy = True
                break
        if not busy:  # scale down: highest ordinal first
            extra = sorted((i for i in pods if i >= replicas), reverse=True)
            if extra and ordered and any(pods[i]["metadata"].get("deletionTimestamp") for i in extra):
                busy = True
            for i in extra:
                if not pods[i]["metadata"].get("deletionTimestamp"):
                    self._delete_pod(sts, pods[i], "statefulset-controller")
                    busy = True
                    if ordered:
                        break
        if not busy and strategy.get("type", "RollingUpdate") == "RollingUpdate":
            # one pod at a time, highest ordinal first, down to the partition
            for i in sorted((i for i in pods if partition <= i < replicas), reverse=True):
                p = pods[i]
                if p["metadata"].get("deletionTimestamp") or not _running_ready(p):
                    break
                if (p["metadata"].get("labels") or {}).get(HASH) != update_rev:
                    self._delete_pod(sts, p, "statefulset-controller")
                    break
        # ---- status (kubernetes pkg/controller/statefulset/stateful_set_control.go computeReplicaStatus):
        # replicas counts every created pod (terminating ones too), current/updated only those not terminating
        owned = [p for p in self._pods_of(ns, md["uid"]) if (p.get("status") or {}).get("phase")]
        live = [p for p in owned if not p["metadata"].get("deletionTimestamp")]
        rev = lambda p: (p["metadata"].get("labels") or {}).get(HASH)  # noqa: E731
        min_ready = int(spec.get("minReadySeconds") or 0)
        status = {
            "observedGeneration": md.get("generation", 1),
            "replicas": len(owned),
            "readyReplicas": sum(1 for p in owned if _running_ready(p)),
            "availableReplicas": sum(1 for p in owned if _running_ready(p) and pod_available(p, min_ready, now)),
            "currentReplicas": sum(1 for p in live if rev(p) == current_rev),
            "updatedReplicas": sum(1 for p in live if rev(p) == update_rev),
            "currentRevision": current_rev,
            "updateRevision": update_rev,
            "collisionCount": status_before.get("collisionCount", 0),
        }
        if status["updatedReplicas"] == status["replicas"] == len(live) and status["readyReplicas"] == status["replicas"]:
            status["currentRevision"] = update_rev  # completeRollingUpdate: every pod updated and ready
            status["currentReplicas"] = status["updatedReplicas"]
        for k in ("readyReplicas", "currentReplicas", "updatedReplicas"):
            if not status[k]:
                status.pop(k)
        self._put_status(STATEFULSETS, sts, status)

    # ------------------------------------------------------------------ daemonsets
    def sync_daemonsets(self) -> None:
        now = time.time()
        node = self.store.get_ref(NODES, None, NODE_NAME)
        node_labels = ((node or {}).get("metadata") or {}).get("labels") or {}
        for ds in list(self.store.iter_refs(DAEMONSETS)):
            try:
                self._sync_ds(copy.deepcopy(ds), node_labels, now)
            except ApiError as exc:
                log.debug("daemonset %s: %s", ds["metadata"]["name"], exc.message)

    def _sync_ds(self, ds: dict, node_labels: dict, now: float) -> None:
        md, spec = ds["metadata"], ds["spec"]
        if md.get("deletionTimestamp"):
            return
        ns = md["namespace"]
        tpl = spec.get("template") or {}
        selector = (tpl.get("spec") or {}).get("nodeSelector") or {}
        want = int(all(node_labels.get(k) == v for k, v in selector.items()))
        rev = self._revision(ds, tpl)
        hash_ = rev.rsplit("-", 1)[1]
        pods = self._pods_of(ns, md["uid"])
        live = [p for p in pods if pod_active(p)]
        terminating = [p for p in pods if p["metadata"].get("deletionTimestamp")]
        for p in pods:
            if (p.get("status") or {}).get("phase") == "Failed" and not p["metadata"].get("deletionTimestamp"):
                self._delete_pod(ds, p, "daemonset-controller")
        if want and not live and not terminating:
            pod_tpl = copy.deepcopy(tpl)
            pmd = pod_tpl.get("metadata") or {}
            pspec = pod_tpl.get("spec") or {}
            pspec["affinity"] = {**(pspec.get("affinity") or {}), "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": [NODE_NAME]}]}]}}}
            pod = {"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": f"{md['name']}-{rand_suffix()}", "namespace": ns, "ownerReferences": [controller_ref(ds)],
                                "labels": {**(pmd.get("labels") or {}), HASH: hash_, "pod-template-generation": str(md.get("generation", 1))}},
                   "spec": pspec}
            if pmd.get("annotations"):
                pod["metadata"]["annotations"] = pmd["annotations"]
            self._create_pod(ds, pod, "daemonset-controller")
        elif not want:
            for p in live:
                self._delete_pod(ds, p, "daemonset-controller")
        elif (spec.get("updateStrategy") or {}).get("type", "RollingUpdate") == "RollingUpdate":
            for p in live:  # maxSurge 0: the old pod goes first, the new one comes once it is gone
                if (p["metadata"].get("labels") or {}).get(HASH) != hash_:
                    self._delete_pod(ds, p, "daemonset-controller")
        live = [p for p in self._pods_of(ns, md["uid"]) if pod_active(p)]
        min_ready = int(spec.get("minReadySeconds") or 0)
        available = sum(1 for p in live if pod_available(p, min_ready, now))
        # kubernetes pkg/controller/daemon/daemon_controller.go updateDaemonSetStatus
        status = {
            "currentNumberScheduled": min(len(live), want),
            "desiredNumberScheduled": want,
            "numberMisscheduled": 0 if want else len(live),
            "numberReady": sum(1 for p in live if pod_ready(p)),
            "observedGeneration": md.get("generation", 1),
            "updatedNumberScheduled": sum(1 for p in live if (p["metadata"].get("labels") or {}).get(HASH) == hash_),
            "numberAvailable": available,
            "numberUnavailable": max(want - available, 0),
        }
        for k in ("numberAvailable", "numberUnavailable", "updatedNumberScheduled"):
            if not status[k]:
                status.pop(k)
        self._put_status(DAEMONSETS, ds, status)
