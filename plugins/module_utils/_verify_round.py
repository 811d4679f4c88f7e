# Copyright: (c) 2026, asgard.mlflow contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: one round of verify, the service behind ``asgard.mlflow.mlflow_verify``.

A round: (after a remediation) record what the previous plan's actions did and wait for the rollout they started
(a watch); read the cluster once; analyse the steps; plan. Everything the run must remember goes into ``state``,
which the caller hands back to the next round (the role keeps no state machine of its own):

``state`` = ``{version, started_at, meta, round, before, last, plan, remediated, rounds, deployment}`` where
``before``/``last`` are ``{steps, settings}`` of the first and the latest checks, ``round`` the number of remediation
rounds recorded, ``remediated`` every action of this run (``{action, reason, description, changed, failed,
round}``), ``rounds`` per round ``{round, planned, remediated, findings_after}``, and ``deployment`` the generation
and restart annotation the last plan was made on (an action's ``changed`` is read from the cluster, never assumed).
Nothing in it is a raw API object; every string from the cluster is redacted.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

from ansible_collections.asgard.mlflow.plugins.module_utils._findings import PATCH_TARGETS
from ansible_collections.asgard.mlflow.plugins.module_utils._ingress_http import HttpOptions, through_ingresses
from ansible_collections.asgard.mlflow.plugins.module_utils._migration_job import job_name
from ansible_collections.asgard.mlflow.plugins.module_utils._probe import ProbeInputError, ProbeOptions, run_probe
from ansible_collections.asgard.mlflow.plugins.module_utils._step_ingress import ingress_check
from ansible_collections.asgard.mlflow.plugins.module_utils._step_logs import log_scan
from ansible_collections.asgard.mlflow.plugins.module_utils._step_pods import main_container, pod_status
from ansible_collections.asgard.mlflow.plugins.module_utils._step_route import route_check, with_routes
from ansible_collections.asgard.mlflow.plugins.module_utils._step_probe import probe_result, transaction_result
from ansible_collections.asgard.mlflow.plugins.module_utils._step_service import service_connectivity
from ansible_collections.asgard.mlflow.plugins.module_utils._step_settings import settings_findings, static_prefix
from ansible_collections.asgard.mlflow.plugins.module_utils._target import Resolved, Target, pod_ready
from ansible_collections.asgard.mlflow.plugins.module_utils._transaction import TransactionOptions
from ansible_collections.asgard.mlflow.plugins.module_utils._errors import ContainerError
from ansible_collections.asgard.mlflow.plugins.module_utils._redact import redact, redact_deep
from ansible_collections.asgard.mlflow.plugins.module_utils._settings import server_settings
from ansible_collections.asgard.mlflow.plugins.module_utils._verify_auth import resolve as resolve_auth
from ansible_collections.asgard.mlflow.plugins.module_utils._verify_data import VerifyError, helm_release, selector_matches
from ansible_collections.asgard.mlflow.plugins.module_utils._verify_options import Options
from ansible_collections.asgard.mlflow.plugins.module_utils._verify_plan import plan as make_plan
from ansible_collections.asgard.mlflow.plugins.module_utils._verify_reader import Reader, ReadError
from ansible_collections.asgard.mlflow.plugins.module_utils._verify_render import console

STATE_VERSION = 1
RESTART_ANNOTATION = "kubectl.kubernetes.io/restartedAt"
_SETTINGS_ERROR_CODES = ("NO_MLFLOW_CONTAINER", "SEVERAL_MLFLOW_CONTAINERS", "CONTAINER_NOT_FOUND")


class InputError(Exception):
    """Bad input (a namespace that does not exist, 401/403, ...): the module fails with this message."""


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def run_round(api, o: Options, *, state: dict | None = None, errors: dict | None = None, check_mode: bool = False,
              clock=time.monotonic) -> dict:
    """One round; returns the module result (without ``changed``)."""
    t0 = clock()
    reader = Reader(api, o.namespace)
    st = _check_state(state) if state else _new_state(o, check_mode)
    rollout = None
    try:
        _credentials(reader, o)
        if state:
            rolled = _record_actions(reader, o, st, errors or {}, check_mode)
            if check_mode:  # nothing ran: the round is recorded, nothing is read again
                st["plan"] = {**st["plan"], "needed": False}
                return _result(st, st["last"]["steps"], st["last"].get("target"), api, t0, clock, rollout)
            if rolled:
                rollout = reader.wait_rollout(o.deployment, o.rollout_timeout)
        steps_sel = o.steps()
        snap = reader.snapshot(deployment=o.deployment, service=o.service, label_selectors=o.label_selectors,
                               container=o.container or None, steps=steps_sel, log_tail_lines=o.log_tail_lines,
                               log_since_seconds=o.log_since_seconds, ingress_name=o.ingress_name,
                               route_name=o.route_name)
    except ReadError as exc:
        raise InputError(str(exc)) from exc
    if snap.namespace_missing:
        raise InputError(f"{o.n('namespace')}: namespace {o.namespace!r} does not exist (NAMESPACE_NOT_FOUND); "
                         f"set {o.n('namespace')} to the namespace MLflow runs in. Nothing was changed.")
    settings, settings_error = _settings(snap, o)
    # after a rollout the new pod is Ready before MLflow answers (a TCP readiness probe, or none): the probe keeps
    # trying, about once a second, until it serves or verify_probe_deadline ends
    patient = bool(state) and rollout is not None
    steps, target = _analyse(api, o, snap, settings, settings_error, steps_sel, check_mode, patient)
    if not state:
        st["before"] = {"steps": steps, "settings": settings}
    else:
        st["rounds"][-1]["findings_after"] = sorted({f["code"] for s in steps for f in s.get("findings") or []
                                                     if f.get("severity") != "info"})
    st["last"] = {"steps": steps, "settings": settings, "target": target}
    dep = snap.deployment or {}
    st["deployment"] = {"generation": (dep.get("metadata") or {}).get("generation"),
                        "restarted_at": _restarted_at(dep)}
    st["plan"] = _plan(o, st, steps, settings, dep)
    return _result(st, steps, target, api, t0, clock, rollout)


def _credentials(reader: Reader, o: Options) -> None:
    """Resolve the basic-auth credentials once, before anything else is read (bad input changes nothing), into
    ``o.auth`` / ``o.auth_source``: every request of the round to MLflow that needs them takes them from there."""
    creds = resolve_auth(reader.get, o.namespace, o.auth_username, o.auth_password, o.auth_secret, o.n)
    o.auth, o.auth_source = (creds.pair, creds.source) if creds else (None, "")


# ------------------------------------------------------------------------------------------------ state
def _new_state(o: Options, check_mode: bool) -> dict:
    return {"version": STATE_VERSION, "started_at": _now(), "round": 0, "before": {}, "last": {}, "plan": {},
            "remediated": [], "rounds": [], "deployment": {},
            "meta": {"namespace": o.namespace, "deployment": o.deployment, "service": o.service,
                     "check_mode": check_mode, "remediate": o.remediate}}


def _check_state(state: dict) -> dict:
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION or "plan" not in state:
        raise VerifyError(f"state: expected the state returned by an earlier mlflow_verify call of this run "
                          f"(version {STATE_VERSION})")
    return {**state, "rounds": [dict(r) for r in state.get("rounds") or []],
            "remediated": [dict(r) for r in state.get("remediated") or []]}


def _restarted_at(dep: dict) -> str | None:
    tmpl = ((dep.get("spec") or {}).get("template") or {}).get("metadata") or {}
    return (tmpl.get("annotations") or {}).get(RESTART_ANNOTATION)


def _record_actions(reader: Reader, o: Options, st: dict, errors: dict, check_mode: bool) -> bool:
    """Record what the last plan's actions did (read from the cluster); True when pods were rolled."""
    plan = st.get("plan") or {}
    n = st["round"] + 1
    st["round"] = n
    planned = [a.get("action") for a in plan.get("actions") or []]
    records: list[dict] = []
    if not check_mode and planned:
        dep = reader.get(f"Deployment {o.namespace}/{o.deployment}",
                         f"/apis/apps/v1/namespaces/{o.namespace}/deployments/{o.deployment}") or {}
        before = st.get("deployment") or {}
        for a in plan.get("actions") or []:
            err = redact(str(errors.get(a["action"]) or ""), limit=400)
            rec = {"action": a["action"], "reason": list(a.get("reason") or []), "round": n}
            if a["action"] == "migrate":
                job = (plan.get("migration") or {}).get("job") or job_name(o.deployment)
                out = reader.job_outcome(job)
                rec["changed"] = out["found"]
                rec["failed"] = bool(err) or not out["succeeded"]
                rec["description"] = f"mlflow db upgrade in Job {job}" + (
                    f": {err or 'the Job failed'}; last log line: {out['last_line'] or '(no log)'}"
                    if rec["failed"] else "")
            elif a["action"] == "patch":
                rec["targets"] = list(a.get("targets") or [])
                rec["changed"] = (dep.get("metadata") or {}).get("generation") != before.get("generation")
                rec["failed"] = bool(err)
                rec["description"] = a.get("description", "") + (f": FAILED: {err}" if err else "")
            elif a["action"] == "patch_ingress":
                # read back: every annotation the plan asked for is on its Ingress now
                path = f"/apis/networking.k8s.io/v1/namespaces/{o.namespace}/ingresses/"
                now = {}
                for i in a.get("ingresses") or []:
                    ing = reader.get(f"Ingress {o.namespace}/{i['name']}", path + i["name"]) or {}
                    now[i["name"]] = (ing.get("metadata") or {}).get("annotations") or {}
                applied = all(now[i["name"]].get(k) == v for i in a.get("ingresses") or []
                              for k, v in i["annotations"].items())
                rec["ingresses"] = [dict(i) for i in a.get("ingresses") or []]
                rec["rollback"] = bool(a.get("rollback"))
                rec["changed"] = applied
                rec["failed"] = bool(err) or not applied
                rec["description"] = a.get("description", "") + (
                    f": FAILED: {err or 'the annotations are not on the Ingress'}" if rec["failed"] else "")
            else:  # restart
                rec["changed"] = _restarted_at(dep) != before.get("restarted_at")
                rec["failed"] = bool(err)
                rec["description"] = (f"rollout restart of deployment/{o.deployment}"
                                      + (f": {err}" if err else ""))
            records.append(rec)
    st["remediated"] += records
    st["rounds"].append({"round": n, "planned": planned,
                         "remediated": [{k: r.get(k) for k in ("action", "changed", "failed", "reason")}
                                        for r in records],
                         "findings_after": None})
    return any(r["changed"] and r["action"] in ("patch", "restart") for r in records)


# ------------------------------------------------------------------------------------------------ analysis
def _settings(snap, o: Options) -> tuple[dict | None, dict | None]:
    """The server settings (the one settings shape, redacted), or why they cannot be read."""
    if not snap.deployment:
        return None, None
    try:
        return server_settings(snap.deployment, snap.configmaps, None, o.container or None), None
    except ContainerError as exc:
        ev = dict(exc.evidence or {})
        if exc.code == "CONTAINER_NOT_FOUND":
            # bad input: the next step names the variable, the value given and what the pod has
            ev["next_step"] = (f"{o.n('container')} is {ev.get('container')!r}, not a container of the pod "
                               f"(containers: {', '.join(ev.get('containers') or [])}); set it to the container that "
                               "runs `mlflow server`, or leave it empty to find it")
        return None, {"code": exc.code, "message": redact(str(exc), limit=600), "evidence": ev}
    except ValueError as exc:  # the command cannot be read (MlflowSettingsError)
        return None, {"code": "NO_MLFLOW_CONTAINER", "message": redact(str(exc), limit=600), "evidence": {}}


def _analyse(api, o: Options, snap, settings, settings_error, steps_sel: set, check_mode: bool,
             patient: bool = False):
    steps: list[dict] = []
    pods_step = None
    if "pods" in steps_sel:
        pods_step = pod_status(snap.pods, snap.deployment, container=o.container or None,
                               restart_window_seconds=o.restart_window_seconds, deployment_name=o.deployment,
                               namespace=o.namespace)
        steps.append(pods_step)
        steps.append(settings_findings(settings, min_workers=o.min_workers, min_gunicorn_timeout=o.min_gunicorn_timeout,
                                       expected_static_prefix=o.expected_static_prefix, error=settings_error))
    if "logs" in steps_sel:
        steps.append(log_scan(snap.logs, o.log_patterns, max_samples=o.log_max_samples,
                              pods=pods_step or pod_status(snap.pods, snap.deployment, container=o.container or None)))
    if "service" in steps_sel:
        steps.append(service_connectivity(snap.service, snap.pods, snap.deployment, snap.endpoints,
                                          snap.endpoint_slices, expected_port=o.service_port,
                                          container=o.container or None,
                                          server_port=(settings or {}).get("port"), service_name=o.service,
                                          namespace=o.namespace))
    target = None
    health_path = None
    if "probe" in steps_sel:
        hint = _resolved(snap, o, settings)
        probe = _probe(api, o, hint, patient=patient)
        health_path = probe.get("health_path")
        steps.append(probe_result(probe, o.expected_static_prefix))
        target = probe.get("resolved")
        if "transaction" in steps_sel:
            if check_mode and not o.transaction_in_check_mode:
                steps.append(transaction_result(None, skipped_reason=(
                    "check mode: the deep check writes to the tracking server; set "
                    f"{o.n('transaction_in_check_mode')}=true to run it anyway")))
            else:
                steps.append(transaction_result(_probe(api, o, target or hint, transaction=True)))
    if "ingress" in steps_sel and snap.deployment is not None:
        steps.append(ingress_check(snap.ingresses, snap.service, settings, snap.tls_secrets, service_name=o.service,
                                   namespace=o.namespace, ingress_name=o.ingress_name,
                                   min_body_size=o.ingress_min_body_size, min_gunicorn_timeout=o.min_gunicorn_timeout,
                                   tls_min_days=o.tls_min_days, read_error=snap.ingress_error,
                                   secrets_error=snap.secrets_error))
        steps[-1] = with_routes(steps[-1], route_check(
            snap.routes, snap.service, settings, snap.gateways, service_name=o.service, namespace=o.namespace,
            route_name=o.route_name, min_gunicorn_timeout=o.min_gunicorn_timeout, read_error=snap.route_error,
            gateway_errors=snap.gateway_errors))
        # through the Ingress endpoint, from here, with the round's basic-auth credentials (verify_auth_*)
        steps[-1] = through_ingresses(steps[-1], snap.ingresses, service=o.service,
                                      static_prefix=static_prefix(settings), health_path=health_path,
                                      o=HttpOptions(url=o.ingress_url, validate_certs=o.ingress_validate_certs,
                                                    ca_cert=o.ingress_ca_cert, timeout=o.probe_timeout,
                                                    min_body_size=o.ingress_min_body_size, auth=o.auth))
    return steps, target


def _resolved(snap, o: Options, settings) -> dict | None:
    """The pod the Service resolves to now (newest Ready pod its selector matches) and its container port, as the
    probe's ``resolved``: the probe then reads neither the Service nor the pods."""
    svc = snap.service or {}
    spec = svc.get("spec") or {}
    selector = spec.get("selector") or {}
    sport = next((p for p in spec.get("ports") or [] if p.get("port") == o.service_port), None)
    if not selector or sport is None:
        return None
    ready = [p for p in snap.pods if pod_ready(p) and selector_matches(selector, (p.get("metadata") or {}).get("labels"))]
    if not ready:
        return None
    pod = max(ready, key=lambda p: ((p.get("metadata") or {}).get("creationTimestamp") or "", p["metadata"]["name"]))
    tport = sport.get("targetPort", sport.get("port"))
    if isinstance(tport, str) and not tport.isdigit():
        name = main_container(pod.get("spec") or {}, o.container or None)
        cports = [cp for c in (pod.get("spec") or {}).get("containers") or [] if c.get("name") == name
                  for cp in c.get("ports") or []]
        tport = next((cp.get("containerPort") for cp in cports if cp.get("name") == tport), None)
        if tport is None:
            return None
    hint = {"pod": pod["metadata"]["name"], "uid": pod["metadata"].get("uid") or "", "port": int(tport),
            "service_port": o.service_port, "pod_ip": (pod.get("status") or {}).get("podIP")}
    if settings is not None:
        hint["static_prefix"] = (settings.get("static_prefix") or "").rstrip("/")
    return hint


def _probe(api, o: Options, hint: dict | None, transaction: bool = False, patient: bool = False) -> dict:
    """run_probe in process (the module mlflow_probe's code): step 4, or with ``transaction`` step 4b. ``patient``:
    retry transient failures (connection refused while MLflow starts) every second until the deadline."""
    if transaction:
        t = o.transaction_options
        opts = ProbeOptions(host_header=o.probe_host_header or None, api_check=False,
                            timeout=float(t.get("timeout", 30)), deadline=float(t.get("deadline", 180)),
                            retries=o.probe_retries)
        keys = ("experiment", "artifact_size", "keep_runs", "upload_rate_limit", "min_upload_rate")
        params = {f"transaction_{k}": t[k] for k in keys if k in t}
        # the deep check's own credentials first (verify_transaction_username/password), else the round's
        user, pw = ((o.transaction_username, o.transaction_password) if o.transaction_username
                    else (o.auth or (None, None)))
        params.update(transaction_username=user or None, transaction_password=pw or None)
        opts.transaction = TransactionOptions.from_params(params)
        opts.auth = (user, pw) if user else None
        opts.auth_source = o.n("transaction_password") if o.transaction_username else o.auth_source
    else:
        opts = ProbeOptions(host_header=o.probe_host_header or None, api_check=o.probe_api_check,
                            timeout=o.probe_timeout, deadline=o.probe_deadline, retries=o.probe_retries)
        opts.auth, opts.auth_source = o.auth, o.auth_source
        if patient:
            opts.retries, opts.max_backoff = max(o.probe_retries, int(o.probe_deadline) + 1), 1.0
    target = Target(namespace=o.namespace, service=o.service, remote_port=o.service_port,
                    hint=Resolved.from_given(hint, o.namespace) if hint else None)
    try:
        return run_probe(api, target, opts)
    except ProbeInputError as exc:
        return {**exc.result, "healthy": False, "error": str(exc)}


# ------------------------------------------------------------------------------------------------ plan
def _helm(dep: dict) -> dict | None:
    release = helm_release(dep)
    return None if release is None else {"release": release or None}


def _chart_values(targets: list[str], pv: dict, o: Options) -> list[str]:
    """What to set in the chart values for the patch targets (the settings the patch role would enforce)."""
    out = []
    if "workers" in targets:
        out.append(f"mlflow server --workers {pv['patch_workers']} (or more)")
    if "timeout" in targets:
        out.append(f"gunicorn --timeout {pv['patch_gunicorn_timeout']} (or more) and --keep-alive "
                   f"{pv['patch_gunicorn_keep_alive']} in --gunicorn-opts")
    if "static_prefix" in targets:
        out.append("no --static-prefix (and the probes on /health)")
    if "allowed_hosts" in targets:
        svc = f"{o.service}.{o.namespace}.svc.cluster.local:{o.service_port}"
        hosts = "".join(f", {h}" for h in pv.get("patch_allowed_hosts_extra") or [])
        out.append(f"MLFLOW_SERVER_ALLOWED_HOSTS including localhost:*, 127.0.0.1:*, {o.service}:{o.service_port}, "
                   f"{svc}{hosts} (and the other Service DNS names with the port)")
    return out


def _plan(o: Options, st: dict, steps: list[dict], settings: dict | None, dep: dict) -> dict:
    enabled = o.remediation_enabled()
    spec = ((dep.get("spec") or {}).get("template") or {}).get("spec") or {}
    common = {"max_restarts": o.max_restarts, "enabled": enabled, "done": st["remediated"],
              "expected_static_prefix": o.expected_static_prefix, "patch_vars": o.patch_vars,
              "min_workers": o.min_workers, "min_gunicorn_timeout": o.min_gunicorn_timeout,
              "rollout_timeout": o.rollout_timeout, "service_links": spec.get("enableServiceLinks", True)}
    helm = _helm(dep)
    allow_helm = bool((o.patch_vars or {}).get("patch_allow_helm_managed"))
    p = make_plan(steps, settings, **common)
    if helm and not allow_helm and p["patch"]:
        helm["changes"] = _chart_values(p["patch_targets"], p["patch_vars"], o)
        p = make_plan(steps, settings, helm=helm, **common)
    p["migration"] = {"job": job_name(o.deployment), "timeout": o.migration_timeout} if p["migrate"] else {}
    if st["round"] >= o.remediation_rounds and p["needed"]:
        p["needed"] = False
        p["not_applied"] = f"{o.n('remediation_rounds')} ({o.remediation_rounds}) reached"
    p["targets_text"] = ", ".join(PATCH_TARGETS[t] for t in p["patch_targets"])
    return p


def _result(st: dict, steps: list[dict], target, api, t0: float, clock, rollout) -> dict:
    findings = [f for s in steps for f in s.get("findings") or []] + list((st.get("plan") or {}).get("findings") or [])
    # everything returned goes through the one redaction once more: a value the settings parser keeps verbatim (a
    # gunicorn option with a URI, say) must not reach the output at any verbosity
    return redact_deep({
        "round": st["round"],
        "healthy": not any(f.get("severity") == "critical" for f in findings),
        "steps": steps,
        "findings": findings,
        "console": console(steps),
        "settings": (st.get("last") or {}).get("settings"),
        "target": target,
        "plan": st.get("plan") or {},
        "rollout": rollout,
        "state": st,
        "api_requests": getattr(api, "requests", 0),
        "elapsed_ms": round((clock() - t0) * 1000.0, 1),
    })
