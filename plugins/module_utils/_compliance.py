# Copyright: (c) 2026, asgard.mlflow contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: compare the MLflow container of a Deployment with target settings; the minimal JSON patch to comply.

:func:`compliance` -> ``{compliant, changed, changes, patch, rollback_patch, annotation, before, after,
before_settings, after_settings, health_path, port, server, mlflow_version, version_source, container,
container_index, sensitive, warnings}`` (the ``asgard.mlflow.mlflow_compliance`` filter). ``patch`` is an RFC 6902
JSON patch guarded by ``test`` operations that applies exactly the minimal edit, plus a pod template annotation
recording what was enforced; ``rollback_patch`` restores the previous template. ``before``/``after`` are redacted
views of the container (``_redact.container_view``); ``sensitive`` says whether the patch itself carries a
credential (the task that sends it is then ``no_log``).

Targets (:data:`DEFAULT_TARGETS`): a target set to None is switched off (left as it is).

Pure Python.
"""

from __future__ import annotations

import copy
import fnmatch
import hashlib
import json
import re

from ansible_collections.asgard.mlflow.plugins.module_utils import _mlflow_rules as R
from ansible_collections.asgard.mlflow.plugins.module_utils._errors import MlflowSettingsError
from ansible_collections.asgard.mlflow.plugins.module_utils._server_command import shell_wrapper
from ansible_collections.asgard.mlflow.plugins.module_utils._redact import container_view, contains_credentials, redact
from ansible_collections.asgard.mlflow.plugins.module_utils._settings import (
    effective,
    int_or_none,
    option_layers,
    parse_deployment,
    parse_server_opts,
    resolve_options,
    server_kind,
    settings_dict,
)
from ansible_collections.asgard.mlflow.plugins.module_utils._settings_edit import (
    Editor,
    align_env,
    ensure_setting,
    opts_edits,
    remove_setting,
)
from ansible_collections.asgard.mlflow.plugins.module_utils._shell import apply_string_edits

DEFAULT_TARGETS = {
    # gunicorn (only when gunicorn is what runs)
    "gunicorn_timeout": 300,
    "gunicorn_timeout_mode": "exact",  # exact | at_least
    "gunicorn_keep_alive": 5,
    "gunicorn_worker_class": None,  # None keeps what is there (gunicorn's default is sync)
    # uvicorn (only when uvicorn is what runs)
    "uvicorn_timeout_keep_alive": 5,
    # both: mlflow's own --workers (what takes effect)
    "workers": R.DEFAULT_WORKERS,
    "workers_mode": "exact",  # exact | at_least
    # "" = no static prefix; "/prefix" = that prefix; None = leave as is
    "static_prefix": "",
    # list of host patterns that must be allowed (None = leave as is); MLflow >= 3.5 only
    "allowed_hosts": None,
    "allowed_hosts_mode": "include",  # include (add the missing ones, keep others) | exact
    "port": R.DEFAULT_PORT,
    "host": None,
    "enable_service_links": False,
    "probes": True,
    # same timings as the deploy role; an existing probe at least as tolerant is kept
    "startup_probe": dict(R.PROBE_TIMINGS["startup_probe"]),
    "readiness_probe": dict(R.PROBE_TIMINGS["readiness_probe"]),
    "liveness_probe": dict(R.PROBE_TIMINGS["liveness_probe"]),
    # True: write `exec ` before the mlflow command of a one-command `sh -c` script (the shell-wrapper rule,
    # _server_command.shell_wrapper); False/None: leave the script's process tree as it is
    "shell_exec": False,
    "mlflow_version": None,  # override when the image tag does not tell (digest, latest)
    "container": None,  # name of the container, when several run mlflow server
    "annotation": "asgard.mlflow/patch",
}


def norm_targets(targets):
    """The targets with defaults filled in, validated; an error names the key and the expected form."""
    t = copy.deepcopy(DEFAULT_TARGETS)
    unknown = sorted(set(targets or {}) - set(DEFAULT_TARGETS))
    if unknown:
        raise MlflowSettingsError(f"targets: unknown keys {unknown}; known keys: {sorted(DEFAULT_TARGETS)}")
    for k, v in (targets or {}).items():
        if isinstance(t.get(k), dict) and isinstance(v, dict):
            t[k].update(v)
        else:
            t[k] = v
    for k in ("gunicorn_timeout", "gunicorn_keep_alive", "uvicorn_timeout_keep_alive", "workers"):
        v = t[k]
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise MlflowSettingsError(f"targets.{k}: expected a positive integer or null (off), got {v!r}")
    if t["shell_exec"] is not None and not isinstance(t["shell_exec"], bool):
        raise MlflowSettingsError(f"targets.shell_exec: expected true, false or null, got {t['shell_exec']!r}")
    if t["port"] is not None and (not isinstance(t["port"], int) or not 1 <= t["port"] <= 65535):
        raise MlflowSettingsError(f"targets.port: expected an integer 1-65535 or null (off), got {t['port']!r}")
    for k in ("gunicorn_timeout_mode", "workers_mode"):
        if t[k] not in ("exact", "at_least"):
            raise MlflowSettingsError(f"targets.{k}: expected 'exact' or 'at_least', got {t[k]!r}")
    if t["allowed_hosts_mode"] not in ("include", "exact"):
        raise MlflowSettingsError(
            f"targets.allowed_hosts_mode: expected 'include' or 'exact', got {t['allowed_hosts_mode']!r}"
        )
    sp = t["static_prefix"]
    if sp not in (None, "") and (not isinstance(sp, str) or not sp.startswith("/") or sp.endswith("/")):
        raise MlflowSettingsError(
            f"targets.static_prefix: expected '' (no prefix), null (leave as is) or a path that starts "
            f"with '/' and does not end with '/', e.g. /mlflow; got {sp!r}"
        )
    ah = t["allowed_hosts"]
    if ah is not None:
        if isinstance(ah, str):
            ah = [h.strip() for h in ah.split(",") if h.strip()]
        if not isinstance(ah, list) or not all(isinstance(h, str) and h and "," not in h for h in ah):
            raise MlflowSettingsError(
                f"targets.allowed_hosts: expected a list of host patterns like 'localhost:*', got {ah!r}"
            )
        t["allowed_hosts"] = ah
    if t["gunicorn_worker_class"] is not None and not re.match(r"^[A-Za-z0-9_.:]+$", str(t["gunicorn_worker_class"])):
        raise MlflowSettingsError(
            f"targets.gunicorn_worker_class: expected a gunicorn worker class such as sync or gthread, "
            f"got {t['gunicorn_worker_class']!r}"
        )
    return t


def enforced_fingerprint(targets):
    """Stable short string recording what was enforced (the pod template annotation value)."""
    t = norm_targets(targets)
    # shell_exec joins the fingerprint only when on (the annotations written before it existed stay the same)
    keys = [k for k in sorted(t) if k not in ("annotation", "container") and not (k == "shell_exec" and not t[k])]
    blob = json.dumps({k: t[k] for k in keys}, sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(blob.encode()).hexdigest()[:12]
    parts = []
    if t["gunicorn_timeout"]:
        parts.append(
            ("timeout>=" if t["gunicorn_timeout_mode"] == "at_least" else "timeout=") + str(t["gunicorn_timeout"])
        )
    if t["workers"]:
        parts.append(("workers>=" if t["workers_mode"] == "at_least" else "workers=") + str(t["workers"]))
    if t["static_prefix"] is not None:
        parts.append("prefix=" + (t["static_prefix"] or "none"))
    if t["port"]:
        parts.append(f"port={t['port']}")
    parts.append("sha=" + digest)
    return ";".join(parts)


def compliance(deployment, targets=None, configmaps=None):
    """Compare the Deployment with the targets; return the minimal JSON patch to comply."""
    t = norm_targets(targets)
    p = parse_deployment(deployment, configmaps, t["mlflow_version"], t["container"])
    before_settings = settings_dict(p)
    ed = Editor(p)
    kind = server_kind(p)
    changes = ed.changes

    # ---- port / host ---------------------------------------------------------------------------
    if t["port"] is not None:
        cur = p.setting("port")
        if cur is None or cur[1] != "flag" or int_or_none(effective(p, "port")) != t["port"]:
            ensure_setting(ed, "port", str(t["port"]), effective(p, "port"), force_flag=True)
        else:
            align_env(ed, "port", str(t["port"]))
    if t["host"] is not None:
        ensure_setting(ed, "host", t["host"], effective(p, "host"))

    # ---- workers (mlflow's own --workers) ------------------------------------------------------
    eff_workers = int_or_none(effective(p, "workers"))
    target_workers = None
    if t["workers"] is not None:
        target_workers = t["workers"]
        if t["workers_mode"] == "at_least" and eff_workers and eff_workers >= t["workers"]:
            target_workers = eff_workers
        ensure_setting(ed, "workers", str(target_workers), eff_workers if eff_workers else None)

    # ---- static prefix -------------------------------------------------------------------------
    prefix_after = effective(p, "static_prefix")
    if t["static_prefix"] is not None:
        want = t["static_prefix"]
        cur = effective(p, "static_prefix")
        if want == "":
            remove_setting(ed, "static_prefix")
            prefix_after = None
        elif cur != want:
            ensure_setting(ed, "static_prefix", want, cur)
            prefix_after = want

    # ---- server options --------------------------------------------------------------------------
    if kind in ("gunicorn", "uvicorn"):
        _enforce_opts(ed, kind, t, target_workers)

    # ---- allowed hosts (MLflow >= 3.5) -------------------------------------------------------------
    if t["allowed_hosts"] is not None and R.host_check_applies(p.version):
        _enforce_allowed_hosts(ed, t, kind)

    # ---- the shell wrapper: `exec ` before the mlflow command, so MLflow (not sh) is PID 1 --------------
    if t["shell_exec"]:
        sw = shell_wrapper(p.cmd, p.version)
        if sw and sw["fixable"]:
            ed.script_edits.append((sw["insert_at"], sw["insert_at"], "exec "))
            changes.append(f"{sw['where']}: `exec ` before the mlflow command ({sw['shell']} no longer stays PID 1: "
                           f"SIGTERM reaches MLflow, a pod stop no longer waits the {p.grace_period} s grace period)")
        elif sw:
            p.warnings.append(f"{sw['where']}: the {sw['shell']} script runs mlflow server without exec and is not "
                              f"rewritten: {sw['reason']}")

    new_c = ed.render_container()

    # ---- probes ------------------------------------------------------------------------------
    port = t["port"] or int_or_none(effective(p, "port")) or R.DEFAULT_PORT
    health = R.health_path(prefix_after, p.version)
    if t["probes"]:
        for field, key in (
            ("startupProbe", "startup_probe"),
            ("readinessProbe", "readiness_probe"),
            ("livenessProbe", "liveness_probe"),
        ):
            want = desired_probe(health, port, t[key])
            have = p.container.get(field)
            if not probe_matches(have, want, p.container):
                new_c[field] = want
                changes.append(f"{field}: {probe_text(have)} -> {probe_text(want)}")

    # ---- pod spec ----------------------------------------------------------------------------
    pod_spec = deployment["spec"]["template"]["spec"]
    pod_changes = {}
    if t["enable_service_links"] is not None and pod_spec.get("enableServiceLinks", True) != t["enable_service_links"]:
        pod_changes["enableServiceLinks"] = t["enable_service_links"]
        changes.append(
            f"enableServiceLinks: {pod_spec.get('enableServiceLinks', 'unset (true)')} -> {t['enable_service_links']}"
        )

    compliant = not changes
    patch, rollback = ([], []) if compliant else _json_patches(deployment, p, new_c, pod_changes, t, targets)

    after_dep = copy.deepcopy(deployment)
    after_dep["spec"]["template"]["spec"]["containers"][p.container_index] = new_c
    after_dep["spec"]["template"]["spec"].update(pod_changes)
    after_settings = settings_dict(parse_deployment(after_dep, configmaps, t["mlflow_version"], p.container_name))
    return {
        "compliant": compliant,
        "changed": not compliant,
        "changes": changes,
        "patch": patch,
        "rollback_patch": rollback,
        "annotation": {t["annotation"]: enforced_fingerprint(targets)},
        "before": container_view(p.container),
        "after": container_view(new_c),
        "before_settings": before_settings,
        "after_settings": after_settings,
        "health_path": health,
        "port": port,
        "server": kind,
        "mlflow_version": p.version,
        "version_source": p.version_source,
        "container": p.container_name,
        "container_index": p.container_index,
        "sensitive": contains_credentials(p.container) or contains_credentials(new_c),
        "warnings": list(p.warnings),
    }


def _json_patches(deployment, p, new_c, pod_changes, t, targets):
    """(patch, rollback): the RFC 6902 patch with its ``test`` guards, and its reverse."""
    cpath = f"/spec/template/spec/containers/{p.container_index}"
    pod_spec = deployment["spec"]["template"]["spec"]
    guard = {"op": "test", "path": cpath + "/name", "value": p.container_name}
    patch = [guard]
    rollback = [guard]
    for field in ("command", "args", "env", "startupProbe", "readinessProbe", "livenessProbe"):
        old = p.container.get(field)
        new = new_c.get(field)
        if old == new:
            continue
        changed = [i for i in range(len(new)) if i >= len(old) or old[i] != new[i]] \
            if isinstance(old, list) and isinstance(new, list) and len(old) == len(new) else None
        if p.cmd.form == "script" and changed == [p.cmd.script_loc[1]] and field == p.cmd.script_loc[0]:
            # only the sh -c script changed (edited in place): test and replace that one element
            i = changed[0]
            patch.append({"op": "test", "path": f"{cpath}/{field}/{i}", "value": old[i]})
            patch.append({"op": "replace", "path": f"{cpath}/{field}/{i}", "value": new[i]})
            rollback.append({"op": "replace", "path": f"{cpath}/{field}/{i}", "value": old[i]})
            continue
        if old is not None:
            patch.append({"op": "test", "path": f"{cpath}/{field}", "value": old})
            patch.append({"op": "replace", "path": f"{cpath}/{field}", "value": new})
            rollback.append({"op": "replace", "path": f"{cpath}/{field}", "value": old})
        else:
            patch.append({"op": "add", "path": f"{cpath}/{field}", "value": new})
            rollback.append({"op": "remove", "path": f"{cpath}/{field}"})
    for k, v in pod_changes.items():
        patch.append({"op": "add", "path": f"/spec/template/spec/{k}", "value": v})
        if k in pod_spec:
            rollback.append({"op": "replace", "path": f"/spec/template/spec/{k}", "value": pod_spec[k]})
        else:
            rollback.append({"op": "remove", "path": f"/spec/template/spec/{k}"})
    template = deployment["spec"]["template"]
    annotations = (template.get("metadata") or {}).get("annotations")
    value = enforced_fingerprint(targets)
    key = t["annotation"].replace("~", "~0").replace("/", "~1")
    if "metadata" not in template:
        patch.append({"op": "add", "path": "/spec/template/metadata", "value": {"annotations": {t["annotation"]: value}}})
        rollback.append({"op": "remove", "path": "/spec/template/metadata/annotations"})
    elif annotations is None:
        patch.append({"op": "add", "path": "/spec/template/metadata/annotations", "value": {t["annotation"]: value}})
        rollback.append({"op": "remove", "path": "/spec/template/metadata/annotations"})
    else:
        patch.append({"op": "add", "path": f"/spec/template/metadata/annotations/{key}", "value": value})
        if t["annotation"] in annotations:
            rollback.append(
                {
                    "op": "replace",
                    "path": f"/spec/template/metadata/annotations/{key}",
                    "value": annotations[t["annotation"]],
                }
            )
        else:
            rollback.append({"op": "remove", "path": f"/spec/template/metadata/annotations/{key}"})
    return patch, rollback


def _desired_options(kind, t, have, target_workers, unreadable):
    """key -> (flag, value, add when missing) for the server options the targets ask for."""
    defaults = R.GUNICORN_DEFAULTS if kind == "gunicorn" else R.UVICORN_DEFAULTS
    wanted = []
    if kind == "gunicorn":
        if t["gunicorn_timeout"] is not None:
            want = t["gunicorn_timeout"]
            cur = have.get("timeout")
            if t["gunicorn_timeout_mode"] == "at_least" and isinstance(cur, int) and cur >= want:
                want = cur
            wanted.append(("timeout", "--timeout", want))
        if t["gunicorn_keep_alive"] is not None:
            wanted.append(("keep_alive", "--keep-alive", t["gunicorn_keep_alive"]))
        if t["gunicorn_worker_class"] is not None:
            wanted.append(("worker_class", "--worker-class", t["gunicorn_worker_class"]))
    elif t["uvicorn_timeout_keep_alive"] is not None:
        wanted.append(("timeout_keep_alive", "--timeout-keep-alive", t["uvicorn_timeout_keep_alive"]))
    # an unreadable source (a Secret) may set anything: then the target is written out even when it is the default
    desired = {key: (flag, value, value != defaults.get(key) or unreadable) for key, flag, value in wanted}
    # a --workers inside the options is overridden by mlflow's own --workers: keep it consistent (never added)
    if target_workers is not None and "workers" in have:
        desired["workers"] = ("--workers", target_workers, False)
    return desired


def _enforce_opts(ed, kind, t, target_workers):
    """Make the server options take the targets, wherever they are set, and align every source that contradicts.

    A value is edited where it takes effect (--gunicorn-opts / --uvicorn-opts, or GUNICORN_CMD_ARGS /
    UVICORN_<OPTION> when only they set it); a missing one is added to the options on the command line, which win.
    A lower source that sets another value is edited too when it is a literal env value; one from a ConfigMap
    cannot be edited here and is reported in ``warnings``.
    """
    p = ed.p
    cmd = p.cmd
    name = f"{kind}_opts"
    table = R.GUNICORN_OPTS if kind == "gunicorn" else R.UVICORN_OPTS
    flag = R.SERVER_OPTIONS[name][0][0]
    envvar = R.SERVER_OPTIONS[name][2]
    layers, warns = option_layers(p, kind)
    have, _sources = resolve_options(layers)
    occs = cmd.occurrences.get(name) or []
    cur_val = None
    where = None
    if occs:
        occ = occs[-1]
        w = cmd.words[occ.value_word]
        cur_val = w.value[occ.value_offset :]
        where = ("flag", occ)
    else:
        env = p.env_setting(name)
        if env and env[1] == "env":
            cur_val = env[0]
            where = ("env", envvar)
        elif env:
            if not p.readable(env):
                p.warnings.append(
                    f"{envvar} comes from {env[2]} and cannot be read; {name} not checked. Set it literally "
                    "or pass the ConfigMap"
                )
                return
            cur_val = env[0]
            where = ("configmap", env)
    opts_values = parse_server_opts(cur_val or "", table, ())[0]
    desired = _desired_options(kind, t, have, target_workers, bool(warns))
    to_opts = {}
    env_edits = {}  # envvar -> (layer, {key: (flag, value, False)})
    for key, (oflag, value, add) in desired.items():
        setters = [la for la in layers if la.origin in ("env_args", "env_option") and key in la.values]
        if key in opts_values:
            to_opts[key] = (oflag, value, False)
        elif setters and setters[-1].source == "env":
            pass  # edited in place below, where it takes effect
        else:
            to_opts[key] = (oflag, value, add or bool(setters))
        for la in setters:
            if str(la.values[key]) == str(value):
                continue
            if la.source == "env":
                env_edits.setdefault(la.envvar, (la, {}))[1][key] = (oflag, value, False)
            else:
                p.warnings.append(
                    f"{la.envvar} from {la.where} sets {oflag} {la.values[key]}, which the {flag} value {value} on the "
                    f"command line overrides; it cannot be edited here: change it there so that no source contradicts"
                )
    for env_name, (la, want) in env_edits.items():
        idx, entry = p.env[env_name]
        if la.origin == "env_args":
            new_val = apply_string_edits(la.raw, opts_edits(la.raw, table, want))
        else:
            new_val = str(next(iter(want.values()))[1])
        if new_val != la.raw:
            ed.env_sets[idx] = dict(entry, value=new_val)
            ed.changes.append(f"env {env_name}: {redact(la.raw)!r} -> {redact(new_val)!r}")
    base = cur_val or ""
    edits = opts_edits(base, table, to_opts)
    if not edits:
        return
    new_val = apply_string_edits(base, edits)
    if where is None:
        ed.add_flag(flag, new_val)
        ed.changes.append(f"{flag}: unset -> {new_val!r} ({kind} options added)")
        return
    if where[0] == "flag":
        occ = where[1]
        # translate option-string edits into edits of the word value
        ed.replace_in_word(occ.value_word, [(a + occ.value_offset, b + occ.value_offset, s) for a, b, s in edits])
        ed.changes.append(f"{flag}: {cur_val!r} -> {new_val!r} ({cmd.where(occ)})")
        for o in occs[:-1]:
            ed.remove_occ(o)
        return
    if where[0] == "env":
        idx, entry = p.env[envvar]
        new = dict(entry)
        new["value"] = new_val
        ed.env_sets[idx] = new
        ed.changes.append(f"env {envvar}: {cur_val!r} -> {new_val!r}")
        return
    # from a ConfigMap: the Deployment cannot edit it; the flag wins over the env var
    ed.add_flag(flag, new_val)
    ed.changes.append(f"{flag}: {cur_val!r} from {where[1][2]} -> {new_val!r} (flag added, overrides the ConfigMap)")


def _enforce_allowed_hosts(ed, t, kind):
    p = ed.p
    cmd = p.cmd
    want = t["allowed_hosts"]
    envvar = "MLFLOW_SERVER_ALLOWED_HOSTS"
    occs = cmd.occurrences.get("allowed_hosts") or []
    cur = effective(p, "allowed_hosts")
    cur_list = [h.strip() for h in (cur or "").split(",") if h.strip()]
    if t["allowed_hosts_mode"] == "exact":
        new_list = list(want)
    else:
        if "*" in cur_list:
            new_list = cur_list
        else:
            new_list = cur_list + [h for h in want if h not in cur_list and not _covered(h, cur_list)]
    new_val = ",".join(new_list)
    if occs and kind == "uvicorn":
        if new_list != cur_list:
            ed.set_value(occs[-1], new_val)
            ed.changes.append(f"--allowed-hosts: {cur!r} -> {new_val!r} ({cmd.where(occs[-1])})")
        return
    for occ in occs:
        # --allowed-hosts cannot be combined with --gunicorn-opts: move it to the env var
        ed.remove_occ(occ)
        ed.changes.append(f"--allowed-hosts: removed ({cmd.where(occ)}); moved to env {envvar}")
    if envvar in p.env and not p.env[envvar][1].get("valueFrom"):
        idx, entry = p.env[envvar]
        if entry.get("value") != new_val:
            new = dict(entry)
            new["value"] = new_val
            ed.env_sets[idx] = new
            ed.changes.append(f"env {envvar}: {entry.get('value')!r} -> {new_val!r}")
        return
    if envvar in p.env:
        idx, entry = p.env[envvar]
        if new_list == cur_list and not occs:
            return
        ed.env_sets[idx] = {"name": envvar, "value": new_val}
        ed.changes.append(f"env {envvar}: from a reference -> {new_val!r}")
        return
    if new_list == cur_list and not occs:
        return
    ed.env_appends.append({"name": envvar, "value": new_val})
    was = repr(cur) if cur else "unset (MLflow defaults)"
    ed.changes.append(f"env {envvar}: {was} -> {new_val!r} (added)")


def _covered(host, patterns):
    return any(fnmatch.fnmatch(host, pat) for pat in patterns)


# --------------------------------------------------------------------------------------------------
# Probes
# --------------------------------------------------------------------------------------------------
def desired_probe(path, port, timing):
    """An HTTP GET probe on ``path``/``port`` with ``timing`` (Kubernetes' defaults for the fields not given)."""
    probe = {"httpGet": {"path": path, "port": port, "scheme": "HTTP"}}
    for k in ("initialDelaySeconds", "periodSeconds", "timeoutSeconds", "successThreshold", "failureThreshold"):
        probe[k] = timing.get(k, R.PROBE_DEFAULTS[k])
    return probe


def probe_matches(have, want, container=None):
    """Same handler (HTTP GET on the path and port) and at least as tolerant as ``want``.

    A named port (``port: http``, as the deploy role writes it) is resolved through the container's ``ports``.

    At least as tolerant: ``timeoutSeconds`` and the failure window (``periodSeconds`` x ``failureThreshold``)
    not smaller, ``initialDelaySeconds``/``successThreshold`` as wanted. So a stricter probe is fixed, a more
    lenient one (e.g. set by the deploy role or by hand) is kept.
    """
    if not have:
        return False
    if any(k in have for k in ("exec", "tcpSocket", "grpc")):
        return False
    hg = have.get("httpGet") or {}
    wg = want["httpGet"]
    if hg.get("path") != wg["path"] or str(hg.get("scheme", "HTTP")).upper() != "HTTP":
        return False
    port = hg.get("port")
    for cp in (container or {}).get("ports") or []:
        if isinstance(port, str) and cp.get("name") == port:
            port = cp.get("containerPort")
    if str(port) != str(wg["port"]):
        return False

    def get(probe, key):
        return probe.get(key, R.PROBE_DEFAULTS[key])

    if get(have, "timeoutSeconds") < get(want, "timeoutSeconds"):
        return False
    window_have = get(have, "periodSeconds") * get(have, "failureThreshold")
    window_want = get(want, "periodSeconds") * get(want, "failureThreshold")
    if window_have < window_want:
        return False
    return get(have, "successThreshold") == get(want, "successThreshold") and get(have, "initialDelaySeconds") >= get(
        want, "initialDelaySeconds"
    )


def probe_text(probe):
    """``GET /health :5000 periodSeconds=10 ...`` for messages; ``none`` when there is no probe."""
    if not probe:
        return "none"
    if "httpGet" in probe:
        h = probe["httpGet"]
        handler = f"GET {h.get('path')} :{h.get('port')}"
    else:
        handler = ",".join(k for k in ("exec", "tcpSocket", "grpc") if k in probe) or "?"
    timing = " ".join(f"{k}={probe[k]}" for k in R.PROBE_DEFAULTS if k in probe)
    return f"{handler} {timing}".strip()
