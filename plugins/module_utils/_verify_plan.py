# Copyright: (c) 2026, asgard.mlflow contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: the remediation plan of one round of checks. Pure: nothing is changed here.

Findings map to actions through the catalogue (``_findings``); the plan adds what only a whole round shows:

- a restart only when nothing explains the failure: no patch or migration planned, no restart blocker present, no
  configuration cause still present after its own remediation in this run, and the restart budget not spent;
  the decision (``restart``, ``restart_reason``, ``restart_blockers``) is made here once and the report reads it;
- a migration that failed in this run cancels the restart it was made for; one that succeeded plans the restart
  that lets the pods pick the new schema up (in the next round);
- an action never runs twice for the same finding in one run (``done``: this run's remediation records);
- a Helm-managed Deployment is not patched (``helm``): HELM_MANAGED names the chart values to set instead;
- Ingress annotations (body size, timeouts) are merge-patched (``ingress_patches``), unless the Ingress is
  Helm-managed: then the values to set are reported;
- ``patch_vars``: the variables handed to the asgard.mlflow.patch role (only the targets a finding names change;
  the others are set to what the server runs now), with ``verify_patch_vars`` on top.
"""

from __future__ import annotations

from ansible_collections.asgard.mlflow.plugins.module_utils import _step_settings as S
from ansible_collections.asgard.mlflow.plugins.module_utils._findings import (
    PATCH_TARGETS,
    RESTART_BLOCKERS,
    finding,
    lookup,
)
from ansible_collections.asgard.mlflow.plugins.module_utils._verify_data import VerifyError, as_int

ACTION_ORDER = ("migrate", "patch", "restart")  # patch_ingress is a patch (verify_remediations: patch)
# the patch role variables verify hands over (verify_patch_vars may override exactly these)
PATCH_VARS = ("patch_workers", "patch_workers_mode", "patch_gunicorn_timeout", "patch_gunicorn_timeout_mode",
              "patch_gunicorn_keep_alive", "patch_uvicorn_timeout_keep_alive", "patch_static_prefix",
              "patch_allowed_hosts_enabled", "patch_probes", "patch_port", "patch_enable_service_links",
              "patch_wait_timeout", "patch_wait_sleep", "patch_allow_helm_managed", "patch_rollback",
              "patch_shell_exec")
# failed requests of the deep check that WORKER_KILLED_DURING_REQUEST explains
_KILLED_REQUEST_CODES = {"WRITE_FAILED", "ARTIFACT_UPLOAD_FAILED", "ARTIFACT_DOWNLOAD_FAILED",
                         "TRANSACTION_READ_FAILED"}


def all_findings(steps: list[dict]) -> list[dict]:
    return [f for st in steps or [] if isinstance(st, dict) for f in st.get("findings") or []]


def validate_patch_vars(value, field: str = "verify_patch_vars") -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise VerifyError(f"{field}: expected a mapping of asgard.mlflow.patch variables, got {type(value).__name__}")
    unknown = sorted(set(value) - set(PATCH_VARS))
    if unknown:
        raise VerifyError(f"{field}: unknown key(s) {', '.join(unknown)}; verify hands these patch role variables "
                          f"over: {', '.join(PATCH_VARS)}")
    return dict(value)


def _done(done) -> tuple[set, int, dict]:
    """(action, code) pairs already run in this run, rollout restarts made, and the last outcome per action."""
    pairs, restarts, outcome = set(), 0, {}
    for d in done or []:
        if not isinstance(d, dict):
            raise VerifyError("done: expected this run's remediation records ({action, reason, ...})")
        for c in d.get("reason") or []:
            pairs.add((d.get("action"), c))
        if d.get("action") == "restart" and d.get("changed"):
            restarts += 1
        outcome[d.get("action")] = d
    return pairs, restarts, outcome


def plan(steps, settings=None, *, max_restarts: int = 1, enabled=None, done=None, expected_static_prefix=None,
         helm: dict | None = None, patch_vars=None, min_workers: int = 4, min_gunicorn_timeout: int = 300,
         rollout_timeout: int = 600, service_links: bool = True) -> dict:
    """Map the findings of one round (``steps``) to remediation actions.

    Returns ``{actions, report_only, patch_targets, patch, patch_vars, ingress_patches, migrate, restart, restart_reason,
    restart_blockers, needed, findings}`` (``findings``: those the plan adds, e.g. HELM_MANAGED).
    ``enabled``: the action kinds allowed (verify_remediations); ``done``: this run's remediation records;
    ``helm``: ``{release, changes}`` when the Deployment is Helm-managed and a patch is not allowed.
    """
    findings = all_findings(steps)
    s = settings or {}
    max_restarts = as_int(max_restarts, "verify_max_restarts", 0)
    done_pairs, restarts_done, outcome = _done(done)
    expected = S.expected_prefix(expected_static_prefix)
    enabled = set(enabled if enabled is not None else ACTION_ORDER)
    server = S.server(s)
    migrated_ok = outcome.get("migrate", {}).get("changed") and not outcome.get("migrate", {}).get("failed")
    targets: list[str] = []
    reasons: dict[str, list[str]] = {}
    report_only: list[dict] = []
    migrate = False
    restart_wanted: list[str] = []
    persisting: list[str] = []  # configuration causes whose action already ran in this run and did not clear them
    added: list[dict] = []
    ingress_patches: dict[str, dict] = {}  # Ingress name -> the annotations to merge-patch
    ingress_reasons: list[str] = []

    def report(f, hint, message=None):
        report_only.append({"code": f["code"], "severity": f["severity"], "message": message or f["message"],
                            "next_step": hint})

    for f in findings:
        code = f["code"]
        entry = lookup(code)
        action, tgts, hint = entry.action, list(entry.targets), entry.next_step
        if f["severity"] == "info" or action == "none":
            continue
        if code == "ROOT_NOT_FOUND" and not S.static_prefix(s):
            action, tgts = "report", []
            hint = "`/` answers 404 without a static prefix: check the image and an Ingress path rewrite"
        elif code in ("ROOT_NOT_FOUND", "STATIC_PREFIX_MISMATCH") and expected:
            # a prefix is wanted: never removed; a different (or missing) one is reported, not guessed
            action, tgts = "report", []
            hint = (f"the dashboard is expected under {expected}/ (verify_expected_static_prefix) but the server runs "
                    f"with {('--static-prefix=' + S.static_prefix(s)) if S.static_prefix(s) else 'no prefix'}: "
                    f"set --static-prefix={expected} (patch role: patch_static_prefix={expected}) or change "
                    "verify_expected_static_prefix")
            if code == "ROOT_NOT_FOUND" and S.static_prefix(s) == expected:
                hint = (f"the server runs with the expected --static-prefix={expected} but {expected}/ does not answer "
                        "with the MLflow UI: read the server log and the probe evidence")
        if code == "SHELL_WRAPPER_NO_EXEC" and not (f.get("evidence") or {}).get("fixable"):
            action, tgts = "report", []  # a script of several commands (or MLflow 2.x) is never rewritten
        if code == "SHORT_WORKER_TIMEOUT" and server not in (None, "gunicorn"):
            continue
        if code in ("WORKER_TIMEOUT", "WORKER_KILLED") and server not in (None, "gunicorn"):
            action, tgts = "report", []
        if code == "WORKER_KILLED_DURING_REQUEST" and server not in (None, "gunicorn"):
            action, tgts = "report", []
            hint = f"the worker serving the deep check was killed on {server}: read the server log (memory limits, OOM)"
        if code in _KILLED_REQUEST_CODES and "patch" in enabled and server in (None, "gunicorn") and any(
                k["code"] == "WORKER_KILLED_DURING_REQUEST"
                and (k.get("evidence") or {}).get("step") == (f.get("evidence") or {}).get("step") for k in findings):
            continue  # explained by WORKER_KILLED_DURING_REQUEST, which is being patched
        if code == "DB_SCHEMA_OUTDATED" and migrated_ok:
            # the migration of this run succeeded: the finding is the pods' log from before it; restart them
            restart_wanted.append(code)
            continue
        if code == "INGRESS_UPLOAD_REFUSED" and not (f.get("evidence") or {}).get("annotation"):
            # the annotation already allows the size (no INGRESS_BODY_TOO_SMALL): the limit is elsewhere
            action = "report"
            hint = ("the Ingress annotation allows the size, yet the endpoint answers 413: check the controller's "
                    "ConfigMap proxy-body-size and any proxy or load balancer in front of it (verify_ingress_url)")
        hint = (f.get("evidence") or {}).get("next_step") or hint
        if action != "report" and (action, code) in done_pairs:
            if action in ("patch", "migrate"):
                persisting.append(code)
            report(f, hint, f"{code}: still present after the {action} of an earlier round of this run (not repeated)")
            continue
        if action == "patch" and "patch" in enabled:
            for t in tgts:
                if t not in targets:
                    targets.append(t)
                reasons.setdefault(t, []).append(code)
        elif action == "patch_ingress" and "patch" in enabled:
            ev = f.get("evidence") or {}
            wanted = ingress_annotations(f)
            if ev.get("helm_release"):
                # a patch would be reverted by the next `helm upgrade` (as HELM_MANAGED for the Deployment)
                report(f, f"Ingress {ev.get('ingress')} is managed by Helm (release {ev['helm_release']}): not "
                          "patched, the next `helm upgrade` would revert it; set these annotations in the chart "
                          "values: " + ", ".join(f"{k}: \"{v}\"" for k, v in wanted.items()))
            else:
                ingress_patches.setdefault(ev.get("ingress"), {}).update(wanted)
                ingress_reasons.append(code)
        elif action == "migrate" and "migrate" in enabled:
            migrate = True
        elif action == "restart" and "restart" in enabled:
            restart_wanted.append(code)
        else:
            report(f, hint)

    targets = [t for t in PATCH_TARGETS if t in targets]
    if targets and helm:
        # a patch would be reverted by the next `helm upgrade`: name the chart values instead, never patch
        codes_ = sorted({c for t in targets for c in reasons[t]})
        changes = "; ".join(helm.get("changes") or []) or ", ".join(PATCH_TARGETS[t] for t in targets)
        msg = (f"Deployment is managed by Helm (release {helm.get('release') or 'unknown'}): not patched, the next "
               f"`helm upgrade` would revert it. Set these in the chart values: {changes}")
        evidence = {"release": helm.get("release"), "changes": helm.get("changes") or [], "for": codes_}
        hf = finding("HELM_MANAGED", msg, evidence, step="remediate")
        added.append(hf)
        report(hf, f"set these in the chart values of release {helm.get('release') or 'unknown'} and run "
                   f"`helm upgrade`: {changes} (or set verify_patch_vars.patch_allow_helm_managed=true to patch anyway)")
        for f in findings:
            if f["code"] in codes_:
                report(f, f"set in the Helm chart values (see HELM_MANAGED): {changes}")
        targets = []

    codes = {f["code"] for f in findings}
    blockers = sorted(codes & RESTART_BLOCKERS)
    # the restart a successful migration of this run needs, when no restart has picked it up yet
    follow_up = (max_restarts > 0 and "DB_SCHEMA_OUTDATED" in restart_wanted
                 and ("restart", "DB_SCHEMA_OUTDATED") not in done_pairs)
    config_cause = bool(targets) or migrate
    restart = False
    restart_reason = ""
    if restart_wanted:
        if config_cause:
            restart_reason = "a configuration change is planned (it rolls the pods itself)"
        elif blockers or persisting:
            restart_reason = (f"not restarted: {', '.join(blockers or sorted(set(persisting)))} explains the failure"
                              + ("" if blockers else " (still present after its remediation in this run)"))
        elif follow_up:
            # the migration is the configuration cause; its pods still run the refused store until restarted (a
            # crash-loop back-off waits up to 5 minutes): once per migration, even when an earlier restart of this
            # run used the budget (verify_max_restarts=0 still means none)
            restart = True
            restart_reason = "DB_SCHEMA_OUTDATED: pick up the migration of this run"
        elif restarts_done >= max_restarts:
            restart_reason = f"restart budget used ({restarts_done}/{max_restarts} per run)"
        else:
            restart = True
            restart_reason = f"{', '.join(sorted(set(restart_wanted)))} with no configuration cause"
        if not restart and not config_cause:
            for f in findings:
                if f["code"] in restart_wanted:
                    report(f, lookup(f["code"]).next_step, f"{f['code']}: {restart_reason}")

    actions = []
    if migrate:
        actions.append({"action": "migrate", "reason": ["DB_SCHEMA_OUTDATED"],
                        "description": "run `mlflow db upgrade` in a Job with the Deployment's image and env"})
    if targets:
        actions.append({"action": "patch", "targets": targets,
                        "reason": sorted({c for t in targets for c in reasons[t]}),
                        "description": "asgard.mlflow.patch: " + ", ".join(PATCH_TARGETS[t] for t in targets)})
    before = _proxy_annotations(steps)
    unserved = _not_serving(findings)
    # "previous": what a rollback restores (None: the annotation was not set); "served": the Ingress served the
    # requests through it before the patch, so a failure after it is the patch's
    ingresses = [{"name": n, "annotations": a, "previous": {k: (before.get(n) or {}).get(k) for k in a},
                  "served": n not in unserved} for n, a in sorted(ingress_patches.items())]
    rollback = _ingress_rollback(done, unserved)
    if rollback:
        actions.append(rollback)
    if ingresses:
        actions.append({"action": "patch_ingress", "reason": sorted(set(ingress_reasons)), "ingresses": ingresses,
                        "description": "merge patch of Ingress annotations: " + "; ".join(
                            f"{i['name']} " + ", ".join(f"{k.rsplit('/', 1)[1]}={v}" for k, v in i["annotations"].items())
                            for i in ingresses)})
    if restart:
        actions.append({"action": "restart", "reason": sorted(set(restart_wanted)),
                        "description": "rollout restart (template annotation kubectl.kubernetes.io/restartedAt)"})
    seen, uniq = set(), []
    for r in report_only:
        if r["code"] not in seen:
            seen.add(r["code"])
            uniq.append(r)
    pv = _patch_vars(targets, s, validate_patch_vars(patch_vars), min_workers=min_workers,
                     min_gunicorn_timeout=min_gunicorn_timeout, rollout_timeout=rollout_timeout,
                     service_links=service_links, ingress_hosts=ingress_hosts(findings)) if targets else {}
    return {"actions": actions, "report_only": uniq, "patch_targets": targets, "patch": bool(targets),
            "patch_vars": pv, "ingress_patches": ingresses + (rollback["ingresses"] if rollback else []),
            "migrate": migrate, "restart": restart, "restart_reason": restart_reason,
            "restart_blockers": blockers, "needed": bool(actions), "findings": added}


def ingress_annotations(f: dict) -> dict:
    """The annotations (name -> string value) that heal an INGRESS_BODY_TOO_SMALL (or the INGRESS_UPLOAD_REFUSED it
    causes) / INGRESS_TIMEOUT_TOO_SHORT."""
    ev = f.get("evidence") or {}
    if f.get("code") in ("INGRESS_BODY_TOO_SMALL", "INGRESS_UPLOAD_REFUSED"):  # one patch heals both
        return {ev["annotation"]: str(ev["wanted"])}
    return {a: str(ev["wanted"]) for a in sorted(ev.get("annotations") or {})}


# what the requests through an Ingress find when it does not serve the server (_ingress_http): an answer that is not
# MLflow's. INGRESS_UNREACHABLE (no connection, no answer) is not one: an annotation patch does not take the
# controller's address away, and a network hiccup between two checks must not undo a good patch
NOT_SERVING = ("INGRESS_HEALTH_FAILED", "INGRESS_ROOT_FAILED")


def _proxy_annotations(steps) -> dict[str, dict]:
    """Ingress name -> the patchable annotations as they are now (the ingress step's details)."""
    step = next((s for s in steps or [] if isinstance(s, dict) and s.get("step") == "ingress"), None) or {}
    return {d.get("name"): dict(d.get("proxy_annotations") or {})
            for d in (step.get("details") or {}).get("ingresses") or [] if isinstance(d, dict)}


def _not_serving(findings: list[dict]) -> dict[str, list[str]]:
    """Ingress name -> the NOT_SERVING codes found for it in this check."""
    out: dict[str, list[str]] = {}
    for f in findings:
        if f.get("code") in NOT_SERVING:
            out.setdefault((f.get("evidence") or {}).get("ingress"), []).append(f["code"])
    return out


def _ingress_rollback(done, unserved: dict[str, list[str]]) -> dict | None:
    """The rollback of this run's Ingress annotation patch, like the Deployment patch's: an Ingress that served the
    requests through it before the patch and does not now gets its previous annotations back (once per run; an
    annotation that was not set is removed: null in the merge patch)."""
    records = [d for d in done or [] if isinstance(d, dict) and d.get("action") == "patch_ingress"]
    rolled = {i.get("name") for d in records if d.get("rollback") for i in d.get("ingresses") or []}
    back, reasons = [], set()
    for d in records:
        if d.get("rollback") or not d.get("changed") or d.get("failed"):
            continue
        for i in d.get("ingresses") or []:
            name = i.get("name")
            if i.get("served") and name in unserved and name not in rolled:
                back.append({"name": name, "annotations": dict(i.get("previous") or {}),
                             "previous": dict(i.get("annotations") or {}), "served": False})
                reasons.update(unserved[name])
                rolled.add(name)
    if not back:
        return None
    restored = "; ".join(f"{i['name']} " + ", ".join(f"{k.rsplit('/', 1)[1]}={'(unset)' if v is None else v}"
                                                     for k, v in i["annotations"].items()) for i in back)
    return {"action": "patch_ingress", "rollback": True, "reason": sorted(reasons), "ingresses": back,
            "description": "rollback of this run's Ingress annotation patch (the Ingress served before it and does "
                           f"not now): {restored}"}


def ingress_hosts(findings: list[dict]) -> list[str]:
    """The Ingress hosts and HTTPRoute hostnames INGRESS_HOST_NOT_ALLOWED / ROUTE_HOST_NOT_ALLOWED name (the
    allowed-hosts patch adds them)."""
    return sorted({h for f in findings if f.get("code") in ("INGRESS_HOST_NOT_ALLOWED", "ROUTE_HOST_NOT_ALLOWED")
                   for h in (f.get("evidence") or {}).get("hosts") or []})


def _patch_vars(targets: list[str], s: dict, overrides: dict, *, min_workers: int, min_gunicorn_timeout: int,
                rollout_timeout: int, service_links: bool, ingress_hosts: list[str] = ()) -> dict:
    """The asgard.mlflow.patch variables: the targets named by a finding are enforced, every other target is set
    to the value the server runs now (so the patch leaves it alone); ``overrides`` (verify_patch_vars) on top."""
    pv = {
        "patch_workers": min_workers if "workers" in targets else (S.workers(s) or 1),
        "patch_workers_mode": "at_least",
        "patch_gunicorn_timeout": min_gunicorn_timeout if "timeout" in targets else (S.gunicorn_timeout(s) or 30),
        "patch_gunicorn_timeout_mode": "at_least",
        "patch_gunicorn_keep_alive": 5 if "timeout" in targets else (
            (S.keep_alive(s) or 2) if S.server(s) == "gunicorn" else 2),
        "patch_uvicorn_timeout_keep_alive": (S.keep_alive(s) or 5) if S.server(s) == "uvicorn" else 5,
        "patch_static_prefix": "" if "static_prefix" in targets else S.static_prefix(s),
        "patch_allowed_hosts_enabled": "allowed_hosts" in targets,
        # the Ingress hosts, with any port (as deploy allows them: _mlflow_rules.allowed_hosts)
        "patch_allowed_hosts_extra": [e for h in ingress_hosts for e in (h, f"{h}:*")]
        if "allowed_hosts" in targets else [],
        "patch_probes": "static_prefix" in targets,
        "patch_port": S.port(s) or 5000,
        "patch_enable_service_links": bool(service_links),
        "patch_wait_timeout": int(rollout_timeout),
        "patch_wait_sleep": 1,
        "patch_allow_helm_managed": False,
        "patch_rollback": True,
        "patch_shell_exec": "shell_exec" in targets,
    }
    pv.update(overrides)
    return pv
