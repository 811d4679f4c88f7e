"""Deployment -> ReplicaSet -> Pod and Job -> Pod controllers."""

from __future__ import annotations

import copy
import logging
import time

from .. import resources as R
from ..store import ApiError, Store, now_iso
from .events import Recorder
from .util import (
    controller_ref,
    int_or_percent,
    owned_by,
    parse_ts,
    pod_active,
    pod_available,
    pod_ready,
    set_condition,
    template_hash,
)

log = logging.getLogger("asgardlab.controllers")
REV = "deployment.kubernetes.io/revision"


def _rev(rs: dict) -> int:
    try:
        return int((rs["metadata"].get("annotations") or {}).get(REV, "0"))
    except ValueError:
        return 0


def _replica_failure(rs: dict, error: ApiError | None) -> list[dict]:
    """The ReplicaSet's conditions after a sync (k/k ``replica_set_utils.go calculateStatus``): a failed pod
    creation adds ``ReplicaFailure`` (reason ``FailedCreate``) once; a sync without error removes it."""
    conds = [dict(c) for c in (rs.get("status") or {}).get("conditions") or []]
    failure = next((c for c in conds if c.get("type") == "ReplicaFailure"), None)
    if error is not None and failure is None:
        conds.append({"type": "ReplicaFailure", "status": "True", "lastTransitionTime": now_iso(),
                      "reason": "FailedCreate", "message": error.message})
    elif error is None and failure is not None:
        conds.remove(failure)
    return conds


def _spec_replicas(obj: dict) -> int:
    r = (obj.get("spec") or {}).get("replicas")
    return 1 if r is None else int(r)


class Workloads:
    def __init__(self, store: Store, rec: Recorder) -> None:
        self.store = store
        self.rec = rec
        self._job_backoff_until: dict[str, float] = {}

    # ------------------------------------------------------------------ deployments
    def sync_deployments(self) -> None:
        for d in list(self.store.iter_refs(R.DEPLOYMENTS)):
            try:
                self._sync_deployment(copy.deepcopy(d))
            except ApiError as exc:
                log.debug("deployment %s: %s", d["metadata"]["name"], exc.message)
            except (ValueError, TypeError, KeyError) as exc:
                log.warning("deployment %s/%s: %s", d["metadata"].get("namespace"), d["metadata"]["name"], exc)

    def _pods_of(self, ns: str, uid: str) -> list[dict]:
        return [p for p in self.store.iter_refs(R.PODS, ns) if owned_by(p, uid)]

    def _scale_rs(self, d: dict, rs: dict, n: int) -> None:
        old = _spec_replicas(rs)
        if old == n:
            return
        rs = self.store.get(R.REPLICASETS, rs["metadata"]["namespace"], rs["metadata"]["name"])
        if rs is None:
            return
        rs["spec"]["replicas"] = n
        ann = rs["metadata"].setdefault("annotations", {})
        ann["deployment.kubernetes.io/desired-replicas"] = str(_spec_replicas(d))
        self.store.update(R.REPLICASETS, rs, internal=True)
        word = "up" if n > old else "down"
        self.rec.event(d, "Normal", "ScalingReplicaSet", f"Scaled {word} replica set {rs['metadata']['name']} from {old} to {n}", "deployment-controller")

    def _sync_deployment(self, d: dict) -> None:
        md, spec = d["metadata"], d["spec"]
        ns, uid = md["namespace"], md["uid"]
        if md.get("deletionTimestamp"):
            return
        replicas = _spec_replicas(d)
        status_before = copy.deepcopy(d.get("status") or {})
        rss = [copy.deepcopy(rs) for rs in self.store.iter_refs(R.REPLICASETS, ns) if owned_by(rs, uid)]
        h = template_hash(spec.get("template") or {}, (d.get("status") or {}).get("collisionCount"))
        new_rs = next((rs for rs in rss if (rs["metadata"].get("labels") or {}).get("pod-template-hash") == h), None)
        max_rev = max((_rev(rs) for rs in rss), default=0)
        created = False
        paused = bool(spec.get("paused"))
        if new_rs is None and not paused:
            tpl = copy.deepcopy(spec.get("template") or {})
            tpl.setdefault("metadata", {}).setdefault("labels", {})["pod-template-hash"] = h
            sel = copy.deepcopy(spec.get("selector") or {})
            sel.setdefault("matchLabels", {})["pod-template-hash"] = h
            rs = {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "metadata": {
                    "name": f"{md['name']}-{h}",
                    "namespace": ns,
                    "labels": dict(tpl["metadata"]["labels"]),
                    "annotations": {
                        REV: str(max_rev + 1),
                        "deployment.kubernetes.io/desired-replicas": str(replicas),
                        "deployment.kubernetes.io/max-replicas": str(replicas + 1),
                    },
                    "ownerReferences": [controller_ref(d)],
                },
                "spec": {"replicas": 0, "minReadySeconds": spec.get("minReadySeconds", 0), "selector": sel, "template": tpl},
            }
            new_rs = self.store.create(R.REPLICASETS, rs)
            rss.append(new_rs)
            created = True
        elif new_rs is not None and _rev(new_rs) < max_rev:  # rollback to an older template
            new_rs["metadata"].setdefault("annotations", {})[REV] = str(max_rev + 1)
            new_rs = self.store.update(R.REPLICASETS, new_rs, internal=True)
            rss = [new_rs if r["metadata"]["uid"] == new_rs["metadata"]["uid"] else r for r in rss]
        old_rss = sorted((rs for rs in rss if new_rs is None or rs["metadata"]["uid"] != new_rs["metadata"]["uid"]), key=_rev)
        # annotation on the deployment
        if new_rs is not None and (md.get("annotations") or {}).get(REV) != str(_rev(new_rs)):
            cur = self.store.get(R.DEPLOYMENTS, ns, md["name"])
            cur["metadata"].setdefault("annotations", {})[REV] = str(_rev(new_rs))
            d = self.store.update(R.DEPLOYMENTS, cur, internal=True)
            md = d["metadata"]

        strategy = spec.get("strategy") or {}
        stype = strategy.get("type", "RollingUpdate")
        surge = unavail = 0
        if stype == "RollingUpdate":
            ru = strategy.get("rollingUpdate") or {}
            surge = int_or_percent(ru.get("maxSurge"), replicas, True, "spec.strategy.rollingUpdate.maxSurge")
            unavail = int_or_percent(ru.get("maxUnavailable"), replicas, False, "spec.strategy.rollingUpdate.maxUnavailable")
            if surge == 0 and unavail == 0:
                unavail = 1
        if not paused and new_rs is not None:
            if stype == "Recreate":
                for rs in old_rss:
                    self._scale_rs(d, rs, 0)
                if not any(self._pods_of(ns, rs["metadata"]["uid"]) for rs in old_rss):
                    self._scale_rs(d, new_rs, replicas)
            else:
                self._rolling(d, new_rs, old_rss, replicas, surge, unavail)
            self._cleanup_history(d, old_rss)

        # ---- status
        rss = [rs for rs in self.store.iter_refs(R.REPLICASETS, ns) if owned_by(rs, uid)]
        new_rs = next((rs for rs in rss if new_rs is not None and rs["metadata"]["uid"] == new_rs["metadata"]["uid"]), None)
        st = lambda rs, k: int((rs.get("status") or {}).get(k) or 0)  # noqa: E731
        status = copy.deepcopy(status_before)
        status["replicas"] = sum(st(rs, "replicas") for rs in rss)
        status["updatedReplicas"] = st(new_rs, "replicas") if new_rs else 0
        status["readyReplicas"] = sum(st(rs, "readyReplicas") for rs in rss)
        status["availableReplicas"] = sum(st(rs, "availableReplicas") for rs in rss)
        unavailable = max(replicas - status["availableReplicas"], 0)
        if unavailable:
            status["unavailableReplicas"] = unavailable
        else:
            status.pop("unavailableReplicas", None)
        for k in ("replicas", "updatedReplicas", "readyReplicas", "availableReplicas"):
            if not status[k]:
                status.pop(k)
        old_pods = any(st(rs, "replicas") for rs in rss if new_rs is None or rs is not new_rs)
        complete = (
            new_rs is not None
            and st(new_rs, "replicas") == replicas
            and _spec_replicas(new_rs) == replicas
            and st(new_rs, "availableReplicas") == replicas
            and not old_pods
        )
        now = now_iso()
        if status.get("availableReplicas", 0) >= replicas - unavail:
            set_condition(status, "Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability.", now)
        else:
            set_condition(status, "Available", "False", "MinimumReplicasUnavailable", "Deployment does not have minimum availability.", now)
        rsname = new_rs["metadata"]["name"] if new_rs else md["name"]
        counts = ("replicas", "updatedReplicas", "readyReplicas", "availableReplicas", "unavailableReplicas")
        progressed = created or any(status.get(k) != status_before.get(k) for k in counts)
        deadline = spec.get("progressDeadlineSeconds", 600)
        prog = next((c for c in status.get("conditions", []) if c["type"] == "Progressing"), None)
        if paused:
            set_condition(status, "Progressing", "Unknown", "DeploymentPaused", "Deployment is paused", now)
        elif complete:
            set_condition(status, "Progressing", "True", "NewReplicaSetAvailable", f'ReplicaSet "{rsname}" has successfully progressed.', now)
        elif created:
            set_condition(status, "Progressing", "True", "NewReplicaSetCreated", f'Created new replica set "{rsname}"', now, progress=True)
        elif progressed or prog is None or prog.get("reason") in ("NewReplicaSetAvailable", "DeploymentPaused"):
            set_condition(status, "Progressing", "True", "ReplicaSetUpdated", f'ReplicaSet "{rsname}" is progressing.', now, progress=True)
        elif prog.get("status") == "True":
            last = parse_ts(prog.get("lastUpdateTime")) or time.time()
            if last + deadline < time.time():
                set_condition(status, "Progressing", "False", "ProgressDeadlineExceeded", f'ReplicaSet "{rsname}" has timed out progressing.', now)
        prog = next((c for c in status.get("conditions", []) if c["type"] == "Progressing"), None)
        # observedGeneration lags until the rollout is done (or has failed / is paused), so that pollers that
        # compare observedGeneration with generation (kubernetes.core wait) do not pass too early.
        if complete or paused or (prog and prog["status"] == "False"):
            status["observedGeneration"] = md.get("generation", 1)
        # sync.go syncRolloutStatus: the new ReplicaSet's ReplicaFailure (else an old one's) becomes the Deployment's
        failure = next((c for rs in sorted(rss, key=lambda r: new_rs is None or r["metadata"]["uid"] != new_rs["metadata"]["uid"])
                        for c in (rs.get("status") or {}).get("conditions") or [] if c.get("type") == "ReplicaFailure"), None)
        if failure is not None:
            set_condition(status, "ReplicaFailure", failure["status"], failure["reason"], failure["message"], failure["lastTransitionTime"])
        else:
            status["conditions"] = [c for c in status.get("conditions", []) if c["type"] != "ReplicaFailure"]
        status["conditions"] = sorted(status.get("conditions", []), key=lambda c: c["type"] != "Available")
        if status != status_before:
            cur = self.store.get(R.DEPLOYMENTS, ns, md["name"])
            if cur is not None:
                cur["status"] = status
                self.store.update(R.DEPLOYMENTS, cur, internal=True)

    def _rolling(self, d: dict, new_rs: dict, old_rss: list[dict], replicas: int, surge: int, unavail: int) -> None:
        total = sum(_spec_replicas(rs) for rs in old_rss) + _spec_replicas(new_rs)
        new_spec = _spec_replicas(new_rs)
        if new_spec > replicas:
            self._scale_rs(d, new_rs, replicas)
            new_spec = replicas
        elif new_spec < replicas:
            add = max(0, min(replicas + surge - total, replicas - new_spec))
            if add:
                self._scale_rs(d, new_rs, new_spec + add)
                new_spec += add
        live_new = self.store.get_ref(R.REPLICASETS, new_rs["metadata"]["namespace"], new_rs["metadata"]["name"]) or new_rs
        new_available = int((live_new.get("status") or {}).get("availableReplicas") or 0)
        min_available = replicas - unavail
        new_unavailable = max(new_spec - new_available, 0)
        specs = {rs["metadata"]["uid"]: _spec_replicas(rs) for rs in old_rss}
        all_pods = sum(specs.values()) + new_spec
        max_down = all_pods - min_available - new_unavailable
        if max_down <= 0:
            return
        done = 0
        for rs in old_rss:  # unhealthy old replicas first
            spec_n = specs[rs["metadata"]["uid"]]
            avail = int((rs.get("status") or {}).get("availableReplicas") or 0)
            bad = spec_n - avail
            if spec_n == 0 or bad <= 0 or done >= max_down:
                continue
            n = min(bad, max_down - done)
            specs[rs["metadata"]["uid"]] = spec_n - n
            done += n
        available = sum(int((rs.get("status") or {}).get("availableReplicas") or 0) for rs in old_rss) + new_available
        budget = available - min_available
        taken = 0
        for rs in old_rss:
            spec_n = specs[rs["metadata"]["uid"]]
            if budget - taken <= 0:
                break
            if spec_n == 0:
                continue
            n = min(spec_n, budget - taken)
            specs[rs["metadata"]["uid"]] = spec_n - n
            taken += n
        for rs in old_rss:
            self._scale_rs(d, rs, specs[rs["metadata"]["uid"]])

    def _cleanup_history(self, d: dict, old_rss: list[dict]) -> None:
        limit = d["spec"].get("revisionHistoryLimit", 10)
        dead = [rs for rs in old_rss if _spec_replicas(self.store.get_ref(R.REPLICASETS, rs["metadata"]["namespace"], rs["metadata"]["name"]) or rs) == 0
                and not int((rs.get("status") or {}).get("replicas") or 0)]
        for rs in sorted(dead, key=_rev)[: max(len(dead) - limit, 0)]:
            try:
                self.store.delete(R.REPLICASETS, rs["metadata"]["namespace"], rs["metadata"]["name"])
            except ApiError:
                pass

    # ------------------------------------------------------------------ replicasets
    def sync_replicasets(self) -> None:
        now = time.time()
        for rs in list(self.store.iter_refs(R.REPLICASETS)):
            try:
                self._sync_rs(copy.deepcopy(rs), now)
            except ApiError as exc:
                log.debug("replicaset %s: %s", rs["metadata"]["name"], exc.message)

    def _sync_rs(self, rs: dict, now: float) -> None:
        md = rs["metadata"]
        ns = md["namespace"]
        if md.get("deletionTimestamp"):
            return
        pods = self._pods_of(ns, md["uid"])
        active = [p for p in pods if pod_active(p)]
        want = _spec_replicas(rs)
        create_error = None
        if len(active) < want:
            for _ in range(want - len(active)):
                tpl = copy.deepcopy(rs["spec"].get("template") or {})
                pmd = tpl.get("metadata") or {}
                pod = {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {
                        "generateName": f"{md['name']}-",
                        "namespace": ns,
                        "labels": pmd.get("labels") or {},
                        "annotations": pmd.get("annotations") or {},
                        "ownerReferences": [controller_ref(rs)],
                    },
                    "spec": tpl.get("spec") or {},
                }
                if not pod["metadata"]["annotations"]:
                    del pod["metadata"]["annotations"]
                try:
                    created = self.store.create(R.PODS, pod)
                except ApiError as exc:  # e.g. ServiceAccount admission; retried on the next sync
                    create_error = exc
                    self.rec.event(rs, "Warning", "FailedCreate", f"Error creating: {exc.message}", "replicaset-controller")
                    break
                self.rec.event(rs, "Normal", "SuccessfulCreate", f"Created pod: {created['metadata']['name']}", "replicaset-controller")
        elif len(active) > want:
            newest_first = sorted(active, key=lambda p: p["metadata"].get("creationTimestamp", ""), reverse=True)
            ranked = sorted(newest_first, key=lambda p: ((p.get("status") or {}).get("phase") == "Running", pod_ready(p)))
            victims = ranked[: len(active) - want]
            for p in victims:
                self.store.delete(R.PODS, ns, p["metadata"]["name"])
                self.rec.event(rs, "Normal", "SuccessfulDelete", f"Deleted pod: {p['metadata']['name']}", "replicaset-controller")
        pods = [p for p in self._pods_of(ns, md["uid"]) if pod_active(p)]
        min_ready = int(rs["spec"].get("minReadySeconds") or 0)
        status = {
            "replicas": len(pods),
            "fullyLabeledReplicas": len(pods),
            "readyReplicas": sum(1 for p in pods if pod_ready(p)),
            "availableReplicas": sum(1 for p in pods if pod_available(p, min_ready, now)),
            "observedGeneration": md.get("generation", 1),
            "conditions": _replica_failure(rs, create_error),
        }
        status = {k: v for k, v in status.items() if v or k in ("replicas", "observedGeneration")}
        if status != (rs.get("status") or {}):
            cur = self.store.get(R.REPLICASETS, ns, md["name"])
            if cur is not None:
                cur["status"] = status
                self.store.update(R.REPLICASETS, cur, internal=True)

    # ------------------------------------------------------------------ jobs
    def sync_jobs(self) -> None:
        now = time.time()
        for job in list(self.store.iter_refs(R.JOBS)):
            try:
                self._sync_job(copy.deepcopy(job), now)
            except ApiError as exc:
                log.debug("job %s: %s", job["metadata"]["name"], exc.message)

    def _sync_job(self, job: dict, now: float) -> None:
        md, spec = job["metadata"], job["spec"]
        ns, uid = md["namespace"], md["uid"]
        if md.get("deletionTimestamp"):
            return
        status = copy.deepcopy(job.get("status") or {})
        before = copy.deepcopy(status)
        conds = {c["type"]: c for c in status.get("conditions", [])}
        finished = any(conds.get(t, {}).get("status") == "True" for t in ("Complete", "Failed"))
        pods = self._pods_of(ns, uid)
        active = [p for p in pods if pod_active(p)]
        succeeded = sum(1 for p in pods if (p.get("status") or {}).get("phase") == "Succeeded")
        failed = sum(1 for p in pods if (p.get("status") or {}).get("phase") == "Failed")
        completions = spec.get("completions") or 1
        parallelism = spec.get("parallelism", 1)
        backoff_limit = spec.get("backoffLimit", 6)
        tsnow = now_iso()
        status.setdefault("startTime", tsnow)
        if not finished:
            if failed > backoff_limit:
                for p in active:
                    self.store.delete(R.PODS, ns, p["metadata"]["name"])
                msg = "Job has reached the specified backoff limit"
                set_condition(status, "FailureTarget", "True", "BackoffLimitExceeded", msg, tsnow)
                set_condition(status, "Failed", "True", "BackoffLimitExceeded", msg, tsnow)
                self.rec.event(job, "Warning", "BackoffLimitExceeded", msg, "job-controller")
                active = []
            elif succeeded >= completions:
                set_condition(status, "SuccessCriteriaMet", "True", "CompletionsReached", "Reached expected number of succeeded pods", tsnow)
                set_condition(status, "Complete", "True", "CompletionsReached", "Reached expected number of succeeded pods", tsnow)
                status["completionTime"] = tsnow
                self.rec.event(job, "Normal", "Completed", "Job completed", "job-controller")
            elif not spec.get("suspend"):
                want = min(parallelism, completions - succeeded) - len(active)
                key = f"{ns}/{md['name']}"
                if want > 0 and failed and self._job_backoff_until.get(key + f"#{failed}") is None:
                    self._job_backoff_until[key + f"#{failed}"] = now + min(10 * 2 ** (failed - 1), 360)
                if want > 0 and (not failed or now >= self._job_backoff_until.get(key + f"#{failed}", 0)):
                    for _ in range(want):
                        self._create_job_pod(job)
        for k, v in (("active", len([p for p in self._pods_of(ns, uid) if pod_active(p)])), ("succeeded", succeeded), ("failed", failed)):
            if v:
                status[k] = v
            else:
                status.pop(k, None)
        ready = sum(1 for p in self._pods_of(ns, uid) if pod_active(p) and pod_ready(p))
        status["ready"] = ready
        status.setdefault("terminating", 0)
        status["terminating"] = sum(1 for p in pods if p["metadata"].get("deletionTimestamp"))
        if status != before:
            cur = self.store.get(R.JOBS, ns, md["name"])
            if cur is not None:
                cur["status"] = status
                self.store.update(R.JOBS, cur, internal=True)

    def _create_job_pod(self, job: dict) -> None:
        md = job["metadata"]
        tpl = copy.deepcopy(job["spec"].get("template") or {})
        pmd = tpl.get("metadata") or {}
        labels = dict(pmd.get("labels") or {})
        labels.setdefault("batch.kubernetes.io/controller-uid", md["uid"])
        labels.setdefault("batch.kubernetes.io/job-name", md["name"])
        labels.setdefault("controller-uid", md["uid"])
        labels.setdefault("job-name", md["name"])
        pspec = tpl.get("spec") or {}
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"generateName": f"{md['name']}-", "namespace": md["namespace"], "labels": labels,
                         "ownerReferences": [controller_ref(job)]},
            "spec": pspec,
        }
        if pmd.get("annotations"):
            pod["metadata"]["annotations"] = pmd["annotations"]
        try:
            created = self.store.create(R.PODS, pod)
        except ApiError as exc:  # job_controller.go: FailedCreate event, retried on the next sync
            self.rec.event(job, "Warning", "FailedCreate", f"Error creating: {exc.message}", "job-controller")
            raise
        self.rec.event(job, "Normal", "SuccessfulCreate", f"Created pod: {created['metadata']['name']}", "job-controller")
