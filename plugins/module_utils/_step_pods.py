# Copyright: (c) 2026, asgard.mlflow contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: step 1 of the verify role, pod status and rollout (``kubectl get pods``), from API objects."""

from __future__ import annotations

from datetime import datetime, timezone

from ansible_collections.asgard.mlflow.plugins.module_utils._findings import finding, step_result
from ansible_collections.asgard.mlflow.plugins.module_utils._errors import ContainerError
from ansible_collections.asgard.mlflow.plugins.module_utils._redact import redact
from ansible_collections.asgard.mlflow.plugins.module_utils._server_command import mlflow_container
from ansible_collections.asgard.mlflow.plugins.module_utils._verify_data import as_int, condition, obj, objs, parse_time

_IMAGE_REASONS = {"ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull"}
_CONFIG_REASONS = {"CreateContainerConfigError", "CreateContainerError", "RunContainerError"}


def main_container(pod_or_spec: dict, container: str | None) -> str | None:
    """The name of THE MLflow container (the one rule), None when the rule fails (its finding comes from the
    settings step)."""
    try:
        return mlflow_container(pod_or_spec, container or None)[1].get("name")
    except ContainerError:
        return None


def pod_status(pods, deployment=None, *, container: str | None = None, now=None,
               restart_window_seconds: int = 3600, deployment_name: str = "", namespace: str = "") -> dict:
    """Step 1: phase, readiness, restarts, CrashLoopBackOff, OOMKilled, image pull, Pending, rollout."""
    pods = objs(pods, "pods")
    dep = obj(deployment, "deployment")
    now_dt = parse_time(now) or datetime.now(timezone.utc)
    window = as_int(restart_window_seconds, "restart_window_seconds", 0)
    findings: list[dict] = []
    details: dict = {"pods": [], "rollout": {}}
    name = (dep.get("metadata") or {}).get("name") or deployment_name

    if not dep:
        findings.append(finding("DEPLOYMENT_NOT_FOUND",
                                f"Deployment {deployment_name or '?'} not found in namespace {namespace or '?'}",
                                {"deployment": deployment_name, "namespace": namespace}))
    else:
        details["rollout"] = _rollout(dep, name, findings)

    active = [p for p in pods if not (p.get("metadata") or {}).get("deletionTimestamp")]
    terminating = len(pods) - len(active)
    if dep and not active and (dep.get("spec") or {}).get("replicas", 1) != 0:
        findings.append(finding("NO_PODS", f"no pod of Deployment {name} exists (terminating: {terminating})",
                                {"deployment": name, "terminating": terminating}))

    for pod in active:
        findings.extend(_pod_findings(pod, container, now_dt, window, details))

    ready = sum(1 for p in details["pods"] if p["ready"])
    details["ready_pods"] = ready
    details["terminating_pods"] = terminating
    summary = f"{ready}/{len(details['pods'])} pod(s) ready"
    if details.get("rollout"):
        summary += f", rollout {details['rollout'].get('state')}"
    restarts = sum(p["restarts"] for p in details["pods"])
    if restarts:
        summary += f", {restarts} restart(s)"
    return step_result("pods", findings, summary, details)


def rollout_state(dep: dict) -> dict:
    """The Deployment's rollout numbers and ``state``: complete, progressing, stalled or scaled_to_zero."""
    spec = dep.get("spec") or {}
    st = dep.get("status") or {}
    meta = dep.get("metadata") or {}
    desired = as_int(spec.get("replicas", 1), "deployment.spec.replicas", 0)
    ro = {
        "desired": desired,
        "replicas": st.get("replicas", 0) or 0,
        "updated": st.get("updatedReplicas", 0) or 0,
        "ready": st.get("readyReplicas", 0) or 0,
        "available": st.get("availableReplicas", 0) or 0,
        "unavailable": st.get("unavailableReplicas", 0) or 0,
        "generation": meta.get("generation"),
        "observed_generation": st.get("observedGeneration"),
    }
    progressing = condition(dep, "Progressing")
    if desired == 0:
        ro["state"] = "scaled_to_zero"
    elif progressing.get("reason") == "ProgressDeadlineExceeded":
        ro["state"] = "stalled"
        ro["message"] = redact(progressing.get("message") or "", limit=400)
    elif (ro["observed_generation"] is not None and ro["generation"] is not None
          and ro["observed_generation"] < ro["generation"]) or ro["updated"] < desired \
            or ro["available"] < desired or ro["unavailable"] or ro["replicas"] > desired:
        ro["state"] = "progressing"
    else:
        ro["state"] = "complete"
    return ro


def _rollout(dep: dict, name: str, findings: list) -> dict:
    ro = rollout_state(dep)
    if ro["state"] == "scaled_to_zero":
        findings.append(finding("SCALED_TO_ZERO", f"Deployment {name} is scaled to 0 replicas", {"deployment": name}))
    elif ro["state"] == "stalled":
        findings.append(finding("ROLLOUT_STALLED", f"Deployment {name} rollout exceeded its progress deadline: "
                                f"{ro.get('message', '')}",
                                {"deployment": name, "reason": "ProgressDeadlineExceeded",
                                 "message": ro.get("message", "")}))
    elif ro["state"] == "progressing":
        findings.append(finding("ROLLOUT_INCOMPLETE", f"Deployment {name}: {ro['updated']}/{ro['desired']} updated, "
                                f"{ro['available']}/{ro['desired']} available",
                                {k: ro[k] for k in ("desired", "updated", "ready", "available", "unavailable")}))
    return ro


def _pod_findings(pod: dict, container: str | None, now_dt: datetime, window: int, details: dict) -> list[dict]:
    out = []
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    st = pod.get("status") or {}
    pname = meta.get("name", "?")
    phase = st.get("phase", "Unknown")
    main = main_container(spec, container) if spec.get("containers") else None
    statuses = list(st.get("initContainerStatuses") or []) + list(st.get("containerStatuses") or [])
    ready_cond = condition(pod, "Ready")
    pod_ready = ready_cond.get("status") == "True"
    row = {"name": pname, "phase": phase, "ready": pod_ready, "restarts": 0, "reason": "",
           "node": spec.get("nodeName", ""), "ip": st.get("podIP", ""),
           "created": meta.get("creationTimestamp", "")}
    details["pods"].append(row)
    blocking = False

    if phase == "Failed":
        out.append(finding("POD_FAILED", redact(f"pod {pname} failed: {st.get('reason', '')} "
                                                f"{st.get('message', '')}".strip(), limit=600),
                           {"pod": pname, "reason": st.get("reason", ""),
                            "message": redact(st.get("message") or "", limit=400)}))
        row["reason"] = st.get("reason", "Failed")
        return out
    if phase == "Pending":
        sched = condition(pod, "PodScheduled")
        if sched.get("status") == "False":
            out.append(finding("POD_PENDING", redact(f"pod {pname} is Pending: {sched.get('reason', '')}: "
                                                     f"{sched.get('message', '')}", limit=600),
                               {"pod": pname, "reason": sched.get("reason", ""),
                                "message": redact(sched.get("message") or "", limit=400)}))
            row["reason"] = sched.get("reason", "Pending")
            blocking = True

    for cs in statuses:
        cname = cs.get("name")
        state = cs.get("state") or {}
        last = (cs.get("lastState") or {}).get("terminated") or {}
        waiting = state.get("waiting") or {}
        terminated = state.get("terminated") or {}
        rc = cs.get("restartCount", 0) or 0
        row["restarts"] += rc
        ev = {"pod": pname, "container": cname}
        reason = waiting.get("reason", "")
        wmsg = redact(waiting.get("message") or "", limit=400)
        if reason in _IMAGE_REASONS:
            out.append(finding("IMAGE_PULL_FAILED", f"pod {pname} container {cname}: {reason}: {wmsg}",
                               {**ev, "reason": reason, "image": cs.get("image", ""), "message": wmsg}))
            row["reason"] = reason
            blocking = True
        elif reason in _CONFIG_REASONS:
            out.append(finding("CONTAINER_CONFIG_ERROR", f"pod {pname} container {cname}: {reason}: {wmsg}",
                               {**ev, "reason": reason, "message": wmsg}, step="pods"))
            row["reason"] = reason
            blocking = True
        elif reason == "CrashLoopBackOff" or _between_crashes(cs, last, now_dt, window):
            # a crash loop is also one caught in the second it runs between two back-offs (state running, not
            # ready, restarted more than once, the last run failed within the window)
            reason = "CrashLoopBackOff"
            out.append(finding("CRASH_LOOP", f"pod {pname} container {cname} is crash looping ({rc} restarts, last exit "
                               f"{last.get('exitCode', '?')} {last.get('reason', '')})".replace(" )", ")"),
                               {**ev, "restarts": rc, "exit_code": last.get("exitCode"),
                                "last_reason": last.get("reason", ""), "finished_at": last.get("finishedAt", "")}))
            row["reason"] = reason
            blocking = True
        if last.get("reason") == "OOMKilled" or terminated.get("reason") == "OOMKilled":
            out.append(finding("OOM_KILLED", f"pod {pname} container {cname} was OOMKilled (memory limit too low)",
                               {**ev, "restarts": rc, "finished_at": (last or terminated).get("finishedAt", "")}))
            row["reason"] = row["reason"] or "OOMKilled"
        if rc and reason != "CrashLoopBackOff":
            finished = parse_time(last.get("finishedAt"), "finishedAt") if last.get("finishedAt") else None
            recent = finished is not None and (now_dt - finished).total_seconds() <= window
            out.append(finding("RESTARTS", f"pod {pname} container {cname} restarted {rc} time(s)"
                               + (f", last at {last.get('finishedAt')}" if finished else ""),
                               {**ev, "restarts": rc, "recent": recent, "exit_code": last.get("exitCode"),
                                "last_reason": last.get("reason", ""), "finished_at": last.get("finishedAt", "")},
                               severity="warning" if recent else "info"))

    if not pod_ready and not blocking and phase != "Failed":
        cstat = next((c for c in st.get("containerStatuses") or [] if c.get("name") == main), {})
        rmsg = redact(ready_cond.get("message") or "", limit=400)
        out.append(finding("POD_NOT_READY", f"pod {pname} ({phase}) is not Ready: {ready_cond.get('reason', '')} "
                           f"{rmsg}".strip(),
                           {"pod": pname, "phase": phase, "container": main, "started": cstat.get("started"),
                            "reason": ready_cond.get("reason", ""), "message": rmsg}))
        row["reason"] = row["reason"] or ready_cond.get("reason", "NotReady")
    return out


def _between_crashes(cs: dict, last: dict, now_dt, window: float) -> bool:
    """A container restarted at least twice whose last run failed (exit code != 0) within ``window`` seconds and
    that runs again without being ready: the kubelet's CrashLoopBackOff between two back-offs."""
    if (cs.get("restartCount") or 0) < 2 or cs.get("ready") or "running" not in (cs.get("state") or {}):
        return False
    if last.get("exitCode") in (None, 0) or not last.get("finishedAt"):
        return False
    return (now_dt - parse_time(last["finishedAt"], "finishedAt")).total_seconds() <= window
