# Copyright: (c) 2026, asgard.mlflow contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: the effective settings of the ``mlflow server`` container of a Deployment, in ONE shape.

:func:`parse_deployment` -> :class:`ParsedServer` (where every setting lives); :func:`server_settings` -> the
plain dict below (the ``asgard.mlflow.mlflow_server_settings`` filter returns it; the patch role and the verify
checks read it). Every key is always present.

Identity:
  ``deployment``, ``namespace``: the Deployment's metadata.
  ``container`` (name), ``container_index``: THE MLflow container (``_server_command.mlflow_container``).
  ``image``; ``mlflow_version`` (``"3.17.2"``, None when unknown); ``version_source``: ``image tag``,
  ``override`` or ``unknown`` (an unknown version counts as the newest).
  ``form``: ``argv`` (command/args lists) or ``script`` (a ``sh -c`` script); ``shell``: the shell argv before the
  script (None for argv); ``script_location``: ``args[0]`` (None for argv).
Effective values (what the server really runs with):
  ``server``: ``gunicorn``, ``uvicorn`` or ``waitress``.
  ``workers`` (int, mlflow's ``--workers``, default 4: it overrides a ``--workers`` inside the server options);
  ``port`` (int, default 5000); ``host`` (default ``127.0.0.1``).
  ``static_prefix``: ``"/prefix"`` or None; ``health_path``: ``{prefix}/health`` from MLflow 3.7, else ``/health``;
  ``root_path``: ``{prefix}/`` or ``/``.
  ``allowed_hosts``: a list of patterns, ``"default"`` (MLflow's defaults), None before MLflow 3.5;
  ``host_check``: False before 3.5 or with ``--disable-security-middleware``.
  ``backend_store_uri``: redacted; None when it comes from a Secret or is not set.
  ``gunicorn`` / ``uvicorn``: the server options of the server that runs (None for the other), each resolved as
  the server resolves it: its default < ``GUNICORN_CMD_ARGS`` / ``UVICORN_<OPTION>`` (env or ConfigMap) < the
  options on its command line (``--gunicorn-opts`` / ``--uvicorn-opts`` or their ``MLFLOW_*`` variable). Keys:
  ``timeout``, ``workers`` (as the options say; mlflow's own ``--workers`` overrides it: ``effective_workers``),
  ``worker_class``, ``keep_alive``, ``threads``, ``graceful_timeout``, ``timeout_keep_alive``, ... (ints where
  numeric), ``other`` (options kept verbatim, redacted), ``effective_workers``, and ``sources``: option ->
  ``{value, source, where[, overridden]}`` with ``source`` ``default``, ``flag``, ``env`` or ``configmap`` and
  ``overridden`` the lower sources that set it too (``[{value, source, where}]``).
Where each setting comes from:
  ``sources``: ``mlflow server`` setting (a key of ``_mlflow_rules.SERVER_OPTIONS``) -> ``{value, source, where}``;
  ``source`` is ``flag``, ``env``, ``configmap``, ``secret`` or ``fieldref``; ``where`` e.g. ``args[0] script line 7
  chars 187-250`` or ``env[2] MLFLOW_WORKERS`` or ``envFrom[0] configmap cfg``; ``shell_expansion``/``resolved``
  for ``${VAR}`` values. Values redacted. Env precedence as Kubernetes applies it: an ``env`` entry over
  ``envFrom``, the last ``envFrom`` source holding a key wins; a flag over its variable (click).
  ``contradictions``: sources that say something else than what the server runs with, each
  ``{setting, value, source, where, effective, effective_where}`` (``setting`` a server setting such as
  ``workers``, or ``gunicorn.timeout`` / ``uvicorn.timeout_keep_alive``): a flag over its env var, a repeated
  flag, ``GUNICORN_CMD_ARGS`` under ``--gunicorn-opts``, a ``--workers`` in the options under mlflow's own.
  ``warnings``: what could not be read (Secret references, ``$EXTRA_ARGS`` on the command line, ...).
Pod stop:
  ``grace_period``: the pod's ``terminationGracePeriodSeconds`` (30 when unset).
  ``shell_wrapper``: None, or the shell-wrapper rule's verdict (``_server_command.shell_wrapper``) when a ``sh -c``
  script runs ``mlflow server`` without ``exec``: the shell is PID 1 and every pod stop waits ``grace_period``;
  ``{shell, where, fixable, insert_at, reason}``.

Pure Python (no Ansible, no Kubernetes client).
"""

from __future__ import annotations

import re

from ansible_collections.asgard.mlflow.plugins.module_utils import _mlflow_rules as R
from ansible_collections.asgard.mlflow.plugins.module_utils._errors import MlflowSettingsError
from ansible_collections.asgard.mlflow.plugins.module_utils._redact import redact
from ansible_collections.asgard.mlflow.plugins.module_utils._server_command import (
    parse_command,
    pod_spec_of,
    server_container,
    shell_wrapper,
)
from ansible_collections.asgard.mlflow.plugins.module_utils._shell import split_opts


class ParsedServer:
    """Everything known about the mlflow server container of a Deployment."""

    def __init__(self):
        self.deployment_name = None
        self.namespace = None
        self.container_index = None
        self.container = None
        self.container_name = None
        self.image = None
        self.version = None
        self.version_source = "unknown"
        self.cmd = None  # _server_command.ServerCommand
        self.env = {}  # env var name -> (index, entry)
        self.env_from = []
        self.configmaps = {}
        self.warnings = []
        self.grace_period = 30  # the pod's terminationGracePeriodSeconds (Kubernetes' default when unset)

    def env_value(self, envvar):
        """(value, source, where) of env var ``envvar`` as the container gets it; None when it is not set.

        Kubernetes: an ``env`` entry wins over ``envFrom`` (the last ``env`` entry of a name wins); among ``envFrom``
        sources the last one holding the key wins. ``source``: ``env`` (a literal), ``configmap`` (value read from a
        ConfigMap that was passed, else ``<from configmap, not read>``), ``secret`` (never read: ``<from secret>``),
        ``fieldref`` (downward API). An empty value is returned as it is ("").
        """
        if envvar in self.env:
            idx, entry = self.env[envvar]
            where = f"env[{idx}] {envvar}"
            vf = entry.get("valueFrom")
            if vf:
                if vf.get("secretKeyRef"):
                    ref = vf["secretKeyRef"]
                    return ("<from secret>", "secret", f"{where} (secret {ref.get('name')}/{ref.get('key')})")
                if vf.get("configMapKeyRef"):
                    ref = vf["configMapKeyRef"]
                    cm = self.configmaps.get(ref.get("name"))
                    cmwhere = f"{where} (configmap {ref.get('name')}/{ref.get('key')})"
                    if cm is None:
                        return ("<from configmap, not read>", "configmap", cmwhere)
                    val = (cm.get("data") or {}).get(ref.get("key"))
                    return None if val is None else (val, "configmap", cmwhere)
                return ("<from " + ",".join(sorted(vf)) + ">", "fieldref", where)
            val = entry.get("value")
            return ("" if val is None else str(val), "env", where)
        for idx in range(len(self.env_from) - 1, -1, -1):
            ef = self.env_from[idx]
            prefix = ef.get("prefix") or ""
            if not envvar.startswith(prefix):
                continue
            key = envvar[len(prefix) :]
            if ef.get("configMapRef"):
                cmname = ef["configMapRef"].get("name")
                cm = self.configmaps.get(cmname)
                if cm is not None and key in (cm.get("data") or {}):
                    return (str(cm["data"][key]), "configmap", f"envFrom[{idx}] configmap {cmname}")
        return None

    def env_setting(self, name):
        """(value, source, where) of the env var behind ``mlflow server`` setting ``name`` (click: empty = unset)."""
        envvar = R.SERVER_OPTIONS[name][2]
        if not envvar:
            return None
        got = self.env_value(envvar)
        if got is None or got[0] == "":
            return None
        return got

    def readable(self, got):
        """True when an ``env_value`` result holds the real value (not a Secret, field or unread ConfigMap)."""
        return got is not None and got[1] in ("env", "configmap") and not got[0].startswith("<from configmap")

    def setting(self, name):
        """(value, source, where, shell expansion) with click semantics: flag wins over env; None when unset."""
        cmd = self.cmd
        occs = cmd.occurrences.get(name) or []
        if occs:
            occ = occs[-1]
            w = cmd.words[occ.value_word if occ.value_word is not None else occ.flag_word]
            return (cmd.flag_value(name), "flag", cmd.where(occ), w.expansion)
        env = self.env_setting(name)
        if env:
            return (env[0], env[1], env[2], False)
        return None


def configmap_names(containers) -> list:
    """Names of the ConfigMaps these containers read env from (``configMapKeyRef``, ``envFrom``), in order, once."""
    names = []
    for c in containers or []:
        refs = [((e.get("valueFrom") or {}).get("configMapKeyRef") or {}).get("name") for e in c.get("env") or []]
        refs += [(ef.get("configMapRef") or {}).get("name") for ef in c.get("envFrom") or []]
        for ref in refs:
            if ref and ref not in names:
                names.append(ref)
    return names


def parse_deployment(deployment, configmaps=None, mlflow_version=None, container=None):
    """Parse the Deployment; returns a :class:`ParsedServer`."""
    if not isinstance(deployment, dict) or not deployment:
        raise MlflowSettingsError(
            "deployment: expected a Deployment object (a dict as returned by kubernetes.core.k8s_info "
            f"resources[0]), got {type(deployment).__name__}"
        )
    kind = deployment.get("kind")
    if kind not in (None, "Deployment"):
        raise MlflowSettingsError(f"deployment: expected kind Deployment, got {kind!r}")
    spec = pod_spec_of(deployment)
    if not spec.get("containers"):
        raise MlflowSettingsError(
            "deployment: spec.template.spec.containers is empty; pass the whole Deployment object"
        )
    p = ParsedServer()
    meta = deployment.get("metadata") or {}
    p.deployment_name = meta.get("name")
    p.namespace = meta.get("namespace")
    idx, c, how = server_container(spec, container)
    p.container_index = idx
    p.container = c
    p.container_name = c.get("name")
    p.image = c.get("image")
    for cm in configmaps or []:
        if isinstance(cm, dict):
            p.configmaps[(cm.get("metadata") or {}).get("name")] = cm
    for eidx, entry in enumerate(c.get("env") or []):
        p.env[entry.get("name")] = (eidx, entry)
    p.env_from = list(c.get("envFrom") or [])
    for ef in p.env_from:
        if ef.get("secretRef"):
            p.warnings.append(
                f"envFrom secret {ef['secretRef'].get('name')!r} may set MLFLOW_* variables that cannot be read"
            )
        elif ef.get("configMapRef") and ef["configMapRef"].get("name") not in p.configmaps:
            p.warnings.append(f"envFrom configmap {ef['configMapRef'].get('name')!r} was not passed; not read")

    if mlflow_version:
        p.version = ".".join(str(x) for x in R.version_tuple(mlflow_version))
        p.version_source = "override"
    else:
        p.version = R.version_from_image(p.image)
        p.version_source = "image tag" if p.version else "unknown"

    grace = spec.get("terminationGracePeriodSeconds")
    if isinstance(grace, int) and not isinstance(grace, bool):
        p.grace_period = grace
    p.cmd = parse_command(c, how)
    p.warnings.extend(p.cmd.warnings)
    return p


def parse_server_opts(opts, table, bools):
    """Parse a gunicorn/uvicorn option string -> (values, words, occurrences)."""
    words = split_opts(opts)
    values = {}
    occ = {}
    other = []
    i = 0
    while i < len(words):
        v = words[i].value
        flag, has_eq, rest = v.partition("=")
        if v.startswith("--") and flag in table:
            key = table[flag]
            if has_eq:
                occ.setdefault(key, []).append((i, i, len(flag) + 1))
                values[key] = rest
            elif i + 1 < len(words):
                occ.setdefault(key, []).append((i, i + 1, 0))
                values[key] = words[i + 1].value
                i += 1
            else:
                other.append(v)
        elif v.startswith("-") and not v.startswith("--") and v[:2] in table:
            key = table[v[:2]]
            if len(v) > 2:
                occ.setdefault(key, []).append((i, i, 2))
                values[key] = v[2:]
            elif i + 1 < len(words):
                occ.setdefault(key, []).append((i, i + 1, 0))
                values[key] = words[i + 1].value
                i += 1
            else:
                other.append(v)
        elif v in bools or (v.startswith("-") and "=" in v):
            other.append(v)
        elif v.startswith("-") and i + 1 < len(words) and not words[i + 1].value.startswith("-"):
            other.append(v + " " + words[i + 1].value)
            i += 1
        else:
            other.append(v)
        i += 1
    for key in R.INT_OPTS:
        if key in values:
            try:
                values[key] = int(values[key])
            except ValueError:
                pass
    if other:
        values["other"] = other
    return values, words, occ


# --------------------------------------------------------------------------------------------------
# Effective values
# --------------------------------------------------------------------------------------------------
def server_kind(p):
    """What the parsed server runs: gunicorn, uvicorn or waitress."""
    return R.server_kind(
        p.version, p.setting("gunicorn_opts") is not None, bool(p.cmd.occurrences.get("waitress_opts"))
    )


def int_or_none(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


_VAR_RE = re.compile(r"^\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))$")


def resolve_expansion(p, value):
    """Resolve a value that is exactly ``$VAR``/``${VAR}`` from literal container env values."""
    m = _VAR_RE.match(value or "")
    if not m:
        return None
    var = m.group(1) or m.group(2)
    if var in p.env:
        entry = p.env[var][1]
        if "value" in entry and not entry.get("valueFrom"):
            return entry.get("value")
    return None


def effective(p, name):
    """The value setting ``name`` takes, when it can be read (not a Secret, a field ref or an unread ConfigMap)."""
    s = p.setting(name)
    if s is None:
        return None
    value, source, _where, expansion = s
    if source in ("secret", "fieldref") or value.startswith("<from configmap"):
        return None
    if expansion:
        return resolve_expansion(p, value)
    return value


def _truthy(v):
    return str(v).lower() in ("1", "true", "yes", "on", "--disable-security-middleware")


# --------------------------------------------------------------------------------------------------
# Server options (gunicorn / uvicorn): every source the server reads, lowest precedence first
# --------------------------------------------------------------------------------------------------
class Layer:
    """One source of server options: ``values`` set there, ``source``/``where`` as in ``sources``.

    ``origin``: ``default`` (the server's own defaults), ``env_args`` (GUNICORN_CMD_ARGS, an options string),
    ``env_option`` (one UVICORN_<OPTION> variable), ``opts`` (--gunicorn-opts/--uvicorn-opts or their MLFLOW_*
    variable: the server's command line), ``mlflow`` (what mlflow itself passes after the options: workers, and
    host/port for uvicorn). ``envvar``/``raw``: the variable and its text, for edits.
    """

    __slots__ = ("values", "source", "where", "origin", "envvar", "raw")

    def __init__(self, values, source, where, origin, envvar=None, raw=None):
        self.values = values
        self.source = source
        self.where = where
        self.origin = origin
        self.envvar = envvar
        self.raw = raw


def _tables(kind):
    if kind == "gunicorn":
        return R.GUNICORN_OPTS, R.GUNICORN_BOOL_OPTS, R.GUNICORN_DEFAULTS
    return R.UVICORN_OPTS, R.UVICORN_BOOL_OPTS, R.UVICORN_DEFAULTS


def option_layers(p, kind):
    """``([Layer], [warning])``: the option sources of the server that runs, lowest precedence first."""
    if kind not in ("gunicorn", "uvicorn"):
        return [], []
    table, bools, defaults = _tables(kind)
    layers = [Layer(dict(defaults), "default", f"{kind}'s default", "default")]
    warns = []
    if kind == "gunicorn":
        got = p.env_value(R.GUNICORN_ENV)
        if got is not None and p.readable(got):
            values = parse_server_opts(got[0], table, bools)[0]
            layers.append(Layer(values, got[1], got[2], "env_args", R.GUNICORN_ENV, got[0]))
        elif got is not None:
            warns.append(f"{R.GUNICORN_ENV} comes from {got[2]} and cannot be read: gunicorn options set there are "
                         "not known (the options on the command line win over it)")
    else:
        for key in sorted(set(table.values())):
            envvar = R.uvicorn_env(key)
            got = p.env_value(envvar)
            if got is None or got[0] == "":  # click: empty = unset
                continue
            if p.readable(got):
                value = int_or_none(got[0]) if key in R.INT_OPTS and int_or_none(got[0]) is not None else got[0]
                layers.append(Layer({key: value}, got[1], got[2], "env_option", envvar, got[0]))
            else:
                warns.append(f"{envvar} comes from {got[2]} and cannot be read (the options on the command line win "
                             "over it)")
    name = f"{kind}_opts"
    s = p.setting(name)
    if s is not None:
        val = effective(p, name)
        if val is None:
            warns.append(f"--{kind}-opts comes from {s[2]} and cannot be read: {kind} options set there are not known")
        else:
            layers.append(Layer(parse_server_opts(val, table, bools)[0], s[1], s[2], "opts",
                                R.SERVER_OPTIONS[name][2], val))
    own = {"workers": int_or_none(effective(p, "workers")) or R.DEFAULT_WORKERS}
    ws = p.setting("workers")
    where = f"mlflow server --workers ({ws[2]})" if ws else "mlflow server --workers (its default)"
    if kind == "uvicorn":
        own["host"] = effective(p, "host") or R.DEFAULT_HOST
        own["port"] = int_or_none(effective(p, "port")) or R.DEFAULT_PORT
        where = "mlflow server --workers/--host/--port"
    layers.append(Layer(own, "mlflow", where, "mlflow"))
    return layers, warns


def resolve_options(layers):
    """``(values, sources)``: each option's value from the highest layer below mlflow's own, with where it comes
    from and the lower sources it ``overridden`` (mlflow's own workers/host/port are reported apart)."""
    values = {}
    sources = {}
    other = []
    for layer in layers:
        if layer.origin == "mlflow":
            continue
        for k, v in layer.values.items():
            if k == "other":
                other.extend(redact(o) for o in v)
                continue
            entry = {"value": redact(v) if isinstance(v, str) else v, "source": layer.source, "where": layer.where}
            prev = sources.get(k)
            if prev and prev["source"] != "default":
                entry["overridden"] = prev.get("overridden", []) + [
                    {x: prev[x] for x in ("value", "source", "where")}
                ]
            values[k] = v
            sources[k] = entry
    if other:
        values["other"] = other
    return values, sources


def _option_contradictions(kind, layers, sources):
    """Sources that set an option to something else than what the server runs with."""
    out = []
    for key, entry in sources.items():
        for lower in entry.get("overridden", []):
            if lower["value"] != entry["value"]:
                out.append({"setting": f"{kind}.{key}", "value": lower["value"], "source": lower["source"],
                            "where": lower["where"], "effective": entry["value"], "effective_where": entry["where"]})
    own = next((la for la in layers if la.origin == "mlflow"), None)
    for key, value in (own.values if own else {}).items():
        entry = sources.get(key)
        if entry and entry["source"] != "default" and str(entry["value"]) != str(value):
            for e in [entry] + entry.get("overridden", []):
                out.append({"setting": f"{kind}.{key}", "value": e["value"], "source": e["source"], "where": e["where"],
                            "effective": value, "effective_where": own.where})
    return out


def _flag_literal(p, occ):
    """The value of a flag occurrence, with a ``$VAR`` resolved from the literal env; None when unknown."""
    w = p.cmd.words[occ.value_word]
    value = w.value[occ.value_offset :]
    return resolve_expansion(p, value) if w.expansion else value


def _setting_contradictions(p):
    """mlflow server settings given twice with different values: a flag over its env var, or a flag repeated."""
    out = []
    cmd = p.cmd
    for name, occs in cmd.occurrences.items():
        if not occs or occs[-1].form == "bool":
            continue
        eff = _flag_literal(p, occs[-1])
        if eff is None:  # a shell expansion that cannot be resolved: nothing to compare
            continue
        where = cmd.where(occs[-1])
        lower = [(_flag_literal(p, occ), "flag", cmd.where(occ)) for occ in occs[:-1]]
        env = p.env_setting(name)
        if env and p.readable(env):
            lower.append(env)
        for value, source, lwhere in lower:
            if value is not None and value != eff:
                out.append({"setting": name, "value": redact(value, name), "source": source, "where": lwhere,
                            "effective": redact(eff, name), "effective_where": where})
    return out


def server_settings(deployment, configmaps=None, mlflow_version=None, container=None):
    """Effective settings with their sources, as plain data (the ``mlflow_server_settings`` filter)."""
    return settings_dict(parse_deployment(deployment, configmaps, mlflow_version, container))


def settings_dict(p):
    """The one settings shape (module docstring) of a :class:`ParsedServer`."""
    sources = {}
    for name in R.SERVER_OPTIONS:
        s = p.setting(name)
        if s is None:
            continue
        value, source, where, expansion = s
        entry = {"value": redact(value, name), "source": source, "where": where}
        if expansion:
            entry["shell_expansion"] = True
            resolved = resolve_expansion(p, value)
            if resolved is not None:
                entry["resolved"] = redact(resolved, name)
        if source == "secret":
            entry["value"] = "<from secret>"
        sources[name] = entry
    kind = server_kind(p)
    eff = {}
    eff["server"] = kind
    eff["workers"] = int_or_none(effective(p, "workers")) or R.DEFAULT_WORKERS
    eff["port"] = int_or_none(effective(p, "port")) or R.DEFAULT_PORT
    eff["host"] = effective(p, "host") or R.DEFAULT_HOST
    prefix = effective(p, "static_prefix")
    eff["static_prefix"] = prefix or None
    eff["health_path"] = R.health_path(prefix, p.version)
    eff["root_path"] = (prefix + "/") if prefix else "/"
    ah = effective(p, "allowed_hosts")
    if p.version is not None and not R.host_check_applies(p.version):
        eff["allowed_hosts"] = None
        eff["host_check"] = False
    else:
        eff["host_check"] = not _truthy(effective(p, "disable_security_middleware"))
        eff["allowed_hosts"] = [h.strip() for h in ah.split(",") if h.strip()] if ah else "default"
    cmd = p.cmd
    result = {
        "deployment": p.deployment_name,
        "namespace": p.namespace,
        "container": p.container_name,
        "container_index": p.container_index,
        "image": p.image,
        "mlflow_version": p.version,
        "version_source": p.version_source,
        "form": cmd.form,
        "shell": cmd.shell,
        "script_location": f"{cmd.script_loc[0]}[{cmd.script_loc[1]}]" if cmd.script_loc else None,
        **eff,
        "backend_store_uri": redact(effective(p, "backend_store_uri")),
        "grace_period": p.grace_period,
        "shell_wrapper": shell_wrapper(cmd, p.version),
        "sources": sources,
        "gunicorn": None,
        "uvicorn": None,
        "warnings": list(p.warnings),
    }
    layers, warns = option_layers(p, kind)
    result["warnings"].extend(warns)
    contradictions = _setting_contradictions(p)
    if kind in ("gunicorn", "uvicorn"):
        values, opt_sources = resolve_options(layers)
        values["effective_workers"] = eff["workers"]
        values["sources"] = opt_sources
        result[kind] = values
        contradictions += _option_contradictions(kind, layers, opt_sources)
    result["contradictions"] = contradictions
    return result
