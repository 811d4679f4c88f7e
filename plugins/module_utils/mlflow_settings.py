# Copyright: (c) 2026, asgard platform team
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Read and minimally edit the settings of an ``mlflow server`` container in a Deployment.

Pure Python (no Ansible or Kubernetes imports), shared by the ``asgard.mlflow`` filters, the patch
role and the verify role.

Entry points:

- :func:`parse_deployment` -> :class:`ParsedServer` (where every setting lives, its effective value).
- :func:`server_settings` -> plain dict of the effective settings with their sources (the
  ``mlflow_server_settings`` filter).
- :func:`compliance` -> ``{compliant, changes, patch, before, after, ...}`` (the ``mlflow_compliance``
  filter); ``patch`` is an RFC 6902 JSON patch that applies exactly the minimal edit.

Errors are raised as :class:`MlflowSettingsError` with a message that says what was found and what to do.

Facts relied on (see shared/reference/mlflow-server-facts.md): flags win over env vars (click);
an empty env var counts as unset; MLflow >= 3.3 runs uvicorn unless ``--gunicorn-opts`` is given (even
empty) or ``MLFLOW_GUNICORN_OPTS`` is non-empty, older versions always run gunicorn; mlflow's own
``--workers`` overrides a ``--workers`` inside the server options; ``--allowed-hosts`` cannot be
combined with ``--gunicorn-opts``; the health path is ``{prefix}/health`` for MLflow >= 3.7.
"""

from __future__ import annotations

import copy
import fnmatch
import hashlib
import json
import re

__all__ = [
    "MlflowSettingsError",
    "DEFAULT_TARGETS",
    "parse_deployment",
    "server_settings",
    "compliance",
    "mlflow_version_from_image",
    "split_opts",
    "redact",
]


class MlflowSettingsError(Exception):
    """Bad input: the message says what was found and what to do."""


# --------------------------------------------------------------------------------------------------
# What `mlflow server` accepts (mlflow/cli/__init__.py, mlflow/utils/cli_args.py)
# --------------------------------------------------------------------------------------------------
# name -> (long flags, short flags, env var, takes a value)
SERVER_OPTIONS = {
    "backend_store_uri": (("--backend-store-uri",), (), "MLFLOW_BACKEND_STORE_URI", True),
    "read_replica_backend_store_uri": (
        ("--read-replica-backend-store-uri",),
        (),
        "MLFLOW_READ_REPLICA_BACKEND_STORE_URI",
        True,
    ),
    "registry_store_uri": (("--registry-store-uri",), (), "MLFLOW_REGISTRY_STORE_URI", True),
    "default_artifact_root": (("--default-artifact-root",), (), "MLFLOW_DEFAULT_ARTIFACT_ROOT", True),
    "serve_artifacts": (("--serve-artifacts", "--no-serve-artifacts"), (), "MLFLOW_SERVE_ARTIFACTS", False),
    "artifacts_only": (("--artifacts-only",), (), "MLFLOW_ARTIFACTS_ONLY", False),
    "artifacts_destination": (("--artifacts-destination",), (), "MLFLOW_ARTIFACTS_DESTINATION", True),
    "host": (("--host",), ("-h",), "MLFLOW_HOST", True),
    "port": (("--port",), ("-p",), "MLFLOW_PORT", True),
    "workers": (("--workers",), ("-w",), "MLFLOW_WORKERS", True),
    "static_prefix": (("--static-prefix",), (), "MLFLOW_STATIC_PREFIX", True),
    "allowed_hosts": (("--allowed-hosts",), (), "MLFLOW_SERVER_ALLOWED_HOSTS", True),
    "cors_allowed_origins": (("--cors-allowed-origins",), (), "MLFLOW_SERVER_CORS_ALLOWED_ORIGINS", True),
    "disable_security_middleware": (
        ("--disable-security-middleware",),
        (),
        "MLFLOW_SERVER_DISABLE_SECURITY_MIDDLEWARE",
        False,
    ),
    "x_frame_options": (("--x-frame-options",), (), "MLFLOW_SERVER_X_FRAME_OPTIONS", True),
    "gunicorn_opts": (("--gunicorn-opts",), (), "MLFLOW_GUNICORN_OPTS", True),
    "waitress_opts": (("--waitress-opts",), (), None, True),
    "uvicorn_opts": (("--uvicorn-opts",), (), "MLFLOW_UVICORN_OPTS", True),
    "dev": (("--dev",), (), None, False),
    "expose_prometheus": (("--expose-prometheus",), (), "MLFLOW_EXPOSE_PROMETHEUS", True),
    "app_name": (("--app-name",), (), None, True),
    "trace_archival_config": (("--trace-archival-config",), (), "MLFLOW_TRACE_ARCHIVAL_CONFIG", True),
    "secrets_cache_ttl": (("--secrets-cache-ttl",), (), None, True),
    "secrets_cache_max_size": (("--secrets-cache-max-size",), (), None, True),
    "workspace_store_uri": (("--workspace-store-uri",), (), "MLFLOW_WORKSPACE_STORE_URI", True),
    "enable_workspaces": (("--enable-workspaces", "--disable-workspaces"), (), None, False),
}
_FLAG_TO_NAME = {}
for _name, (_longs, _shorts, _env, _takes) in SERVER_OPTIONS.items():
    for _f in _longs + _shorts:
        _FLAG_TO_NAME[_f] = _name
_ENV_TO_NAME = {v[2]: k for k, v in SERVER_OPTIONS.items() if v[2]}

# Server option strings: option -> canonical key (value-taking unless listed in *_BOOL)
GUNICORN_OPTS = {
    "--timeout": "timeout",
    "-t": "timeout",
    "--workers": "workers",
    "-w": "workers",
    "--worker-class": "worker_class",
    "-k": "worker_class",
    "--keep-alive": "keep_alive",
    "--threads": "threads",
    "--graceful-timeout": "graceful_timeout",
    "--max-requests": "max_requests",
    "--bind": "bind",
    "-b": "bind",
    "--log-level": "log_level",
}
UVICORN_OPTS = {
    "--workers": "workers",
    "--timeout-keep-alive": "timeout_keep_alive",
    "--timeout-graceful-shutdown": "timeout_graceful_shutdown",
    "--timeout-worker-healthcheck": "timeout_worker_healthcheck",
    "--limit-concurrency": "limit_concurrency",
    "--log-level": "log_level",
    "--log-config": "log_config",
    "--host": "host",
    "--port": "port",
    "--root-path": "root_path",
}
# what the servers use when an option is not given (an absent option equal to the target is compliant)
GUNICORN_DEFAULTS = {"timeout": 30, "keep_alive": 2, "worker_class": "sync"}
UVICORN_DEFAULTS = {"timeout_keep_alive": 5}
UVICORN_BOOL_OPTS = {"--reload", "--proxy-headers", "--no-proxy-headers", "--access-log", "--no-access-log"}
GUNICORN_BOOL_OPTS = {"--preload", "--reload", "--daemon", "-D", "--capture-output", "--check-config"}

DEFAULT_TARGETS = {
    # gunicorn (only when gunicorn is what runs)
    "gunicorn_timeout": 300,
    "gunicorn_timeout_mode": "exact",  # exact | at_least
    "gunicorn_keep_alive": 5,
    "gunicorn_worker_class": None,  # None keeps what is there (gunicorn's default is sync)
    # uvicorn (only when uvicorn is what runs)
    "uvicorn_timeout_keep_alive": 5,
    # both: mlflow's own --workers (what takes effect)
    "workers": 4,
    "workers_mode": "exact",  # exact | at_least
    # "" = no static prefix; "/prefix" = that prefix; None = leave as is
    "static_prefix": "",
    # list of host patterns that must be allowed (None = leave as is); MLflow >= 3.5 only
    "allowed_hosts": None,
    "allowed_hosts_mode": "include",  # include (add the missing ones, keep others) | exact
    "port": 5000,
    "host": None,
    "enable_service_links": False,
    "probes": True,
    # same timings as the deploy role; an existing probe at least as tolerant is kept
    "startup_probe": {"periodSeconds": 5, "timeoutSeconds": 5, "failureThreshold": 36},
    "readiness_probe": {"periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 3},
    "liveness_probe": {"periodSeconds": 20, "timeoutSeconds": 10, "failureThreshold": 6},
    "mlflow_version": None,  # override when the image tag does not tell (digest, latest)
    "container": None,  # name of the container, when several run mlflow server
    "annotation": "asgard.mlflow/patch",
}
_PROBE_DEFAULTS = {
    "initialDelaySeconds": 0,
    "periodSeconds": 10,
    "timeoutSeconds": 1,
    "successThreshold": 1,
    "failureThreshold": 3,
}
ASSUMED_VERSION = (3, 99, 0)


# --------------------------------------------------------------------------------------------------
# A small POSIX shell lexer that keeps track of where every character came from
# --------------------------------------------------------------------------------------------------
class _Word:
    """A word of a shell script (or of an options string) with its raw span and char map."""

    __slots__ = ("value", "start", "end", "chars", "expansion", "cmdsub", "redir_target")

    def __init__(self, start):
        self.value = ""
        self.start = start
        self.end = start
        # per cooked char: (raw_start, raw_end, context) context in bare|sq|dq|esc|lit
        self.chars = []
        self.expansion = False
        self.cmdsub = False
        self.redir_target = False

    def __repr__(self):
        return f"_Word({self.value!r}, {self.start}, {self.end})"


_OPS = ("&&", "||", ";;", ";", "&", "|", "(", ")")
_REDIR_RE = re.compile(r"\d*(<<-?|>>|>&|<&|<>|>\||>|<)")


def _lex(text, shell=True):
    """Split ``text`` into words and operators.

    ``shell=True``: POSIX sh rules (operators, newlines, comments, ``$`` expansions kept literally and
    flagged). ``shell=False``: ``shlex.split`` rules as MLflow applies them to ``--gunicorn-opts``.
    Returns a list of tokens: ``_Word`` or tuples ``("op", text, start, end)``.
    """
    tokens = []
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c in " \t\r" or (not shell and c == "\n"):
            i += 1
            continue
        if c == "\\" and i + 1 < n and text[i + 1] == "\n":
            i += 2
            continue
        if shell:
            if c == "\n":
                tokens.append(("op", "\n", i, i + 1))
                i += 1
                continue
            if c == "#":
                j = text.find("\n", i)
                i = n if j < 0 else j
                continue
            m = _REDIR_RE.match(text, i)
            if m:
                op = m.group(0)
                if op.endswith("<<") or op.endswith("<<-"):
                    raise MlflowSettingsError(
                        "here-documents (<<) are not supported in the container script; "
                        "put the mlflow server command in a plain sh -c script or in command/args lists"
                    )
                tokens.append(("op", op, i, m.end()))
                i = m.end()
                if op.endswith("&"):
                    m2 = re.compile(r"[0-9]+|-").match(text, i)
                    if m2:
                        i = m2.end()
                        continue
                # the next word is the target of the redirection
                tokens.append(("redir", op, i, i))
                continue
            matched = False
            for op in _OPS:
                if text.startswith(op, i):
                    tokens.append(("op", op, i, i + len(op)))
                    i += len(op)
                    matched = True
                    break
            if matched:
                continue
        i = _lex_word(text, i, tokens, shell)
    # attach redirection targets
    out = []
    mark = False
    for t in tokens:
        if isinstance(t, tuple) and t[0] == "redir":
            mark = True
            continue
        if mark and isinstance(t, _Word):
            t.redir_target = True
        mark = False
        out.append(t)
    return out


def _lex_word(text, i, tokens, shell):
    n = len(text)
    w = _Word(i)
    buf = []
    while i < n:
        c = text[i]
        if c in " \t\r\n":
            break
        if shell and (c in ";&|()<>"):
            break
        if c == "\\":
            if i + 1 < n:
                if text[i + 1] == "\n":
                    i += 2
                    continue
                buf.append(text[i + 1])
                w.chars.append((i, i + 2, "esc"))
                i += 2
                continue
            buf.append(c)
            w.chars.append((i, i + 1, "bare"))
            i += 1
            continue
        if c == "'":
            j = text.find("'", i + 1)
            if j < 0:
                raise MlflowSettingsError(
                    f"unterminated single quote at character {i} in {_excerpt(text, i)!r}: fix the quoting"
                )
            for k in range(i + 1, j):
                buf.append(text[k])
                w.chars.append((k, k + 1, "sq"))
            i = j + 1
            continue
        if c == '"':
            i += 1
            while True:
                if i >= n:
                    raise MlflowSettingsError(
                        f"unterminated double quote in {_excerpt(text, w.start)!r}: fix the quoting"
                    )
                d = text[i]
                if d == '"':
                    i += 1
                    break
                if d == "\\" and i + 1 < n:
                    escapable = '$`"\\\n' if shell else '"\\'
                    if text[i + 1] in escapable:
                        if text[i + 1] == "\n":
                            i += 2
                            continue
                        buf.append(text[i + 1])
                        w.chars.append((i, i + 2, "dqesc"))
                        i += 2
                        continue
                if shell and d == "$":
                    w.expansion = True
                    if text.startswith("$(", i):
                        w.cmdsub = True
                if shell and d == "`":
                    w.expansion = True
                    w.cmdsub = True
                buf.append(d)
                w.chars.append((i, i + 1, "dq"))
                i += 1
            continue
        if shell and c == "$":
            w.expansion = True
            if text.startswith("$(", i):
                w.cmdsub = True
                depth = 0
                j = i + 1
                while j < n:
                    if text[j] == "(":
                        depth += 1
                    elif text[j] == ")":
                        depth -= 1
                        if depth == 0:
                            break
                    j += 1
                for k in range(i, min(j + 1, n)):
                    buf.append(text[k])
                    w.chars.append((k, k + 1, "bare"))
                i = j + 1
                continue
        if shell and c == "`":
            w.expansion = True
            w.cmdsub = True
        buf.append(c)
        w.chars.append((i, i + 1, "bare"))
        i += 1
    w.value = "".join(buf)
    w.end = i
    tokens.append(w)
    return i


def _excerpt(text, pos, width=60):
    a = max(0, pos - 20)
    return text[a : a + width]


def split_opts(opts):
    """Split a server options string exactly like ``shlex.split`` (MLflow does), keeping spans."""
    return [t for t in _lex(opts or "", shell=False) if isinstance(t, _Word)]


def _lit_word(value):
    w = _Word(0)
    w.value = value
    w.end = len(value)
    w.chars = [(k, k + 1, "lit") for k in range(len(value))]
    return w


# --------------------------------------------------------------------------------------------------
# Quoting helpers
# --------------------------------------------------------------------------------------------------
_SAFE_BARE = re.compile(r"^[A-Za-z0-9_@%+=:,./-]+$")


def _sh_quote(value, prefer=None):
    """Quote ``value`` for a POSIX shell, in the preferred style when possible."""
    if value and _SAFE_BARE.match(value) and prefer not in ("dq", "sq"):
        return value
    if prefer != "sq" and not re.search(r'["\\$`]', value):
        return f'"{value}"'
    if "'" not in value:
        return f"'{value}'"
    return "'" + value.replace("'", "'\"'\"'") + "'"


def _char_fits(ch, ctx):
    if ctx == "lit":
        return True
    if ctx == "sq":
        return ch != "'"
    if ctx in ("dq", "dqesc"):
        return ch not in '"\\$`'
    # bare / esc
    return bool(_SAFE_BARE.match(ch))


# --------------------------------------------------------------------------------------------------
# Data model
# --------------------------------------------------------------------------------------------------
class _Occ:
    """One occurrence of a server flag on the command line."""

    __slots__ = ("name", "flag", "form", "flag_word", "value_word", "value_offset", "seq")

    def __init__(self, name, flag, form, flag_word, value_word=None, value_offset=0, seq=0):
        self.name = name
        self.flag = flag
        self.form = form  # "eq" (--f=v), "split" (--f v), "attached" (-p5000), "bool"
        self.flag_word = flag_word  # index into ParsedServer.words
        self.value_word = value_word  # index into ParsedServer.words (may equal flag_word)
        self.value_offset = value_offset  # where the value starts inside the cooked value word
        self.seq = seq


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
        self.form = None  # "argv" | "script"
        self.script_loc = None  # (field, index) of the script string
        self.shell = None
        self.script = None
        self.argv = []  # [(field, index)] for argv form
        self.words = []  # _Word list of the mlflow command (after "server")
        self.word_locs = []  # per word: (field, index) for argv form, None for script
        self.prog_words = []  # words up to and including "server"
        self.occurrences = {}  # name -> [_Occ]
        self.opaque = []  # words that may inject flags ($EXTRA_ARGS, "$@")
        self.env = {}  # env var name -> (index, entry)
        self.env_from = []
        self.configmaps = {}
        self.warnings = []
        self.flag_style = "eq"

    # ---- value lookup -------------------------------------------------------------------------
    def flag_value(self, name):
        occs = self.occurrences.get(name) or []
        if not occs:
            return None
        occ = occs[-1]
        if occ.form == "bool":
            return occ.flag
        w = self.words[occ.value_word]
        return w.value[occ.value_offset :]

    def env_setting(self, name):
        """(value, source, where) of the env var behind setting ``name`` (click: empty = unset)."""
        envvar = SERVER_OPTIONS[name][2]
        if not envvar:
            return None
        if envvar in self.env:
            idx, entry = self.env[envvar]
            where = f"env[{idx}] {envvar}"
            if "valueFrom" in entry and entry["valueFrom"]:
                vf = entry["valueFrom"]
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
                    if val in (None, ""):
                        return None
                    return (val, "configmap", cmwhere)
                return ("<from " + ",".join(sorted(vf)) + ">", "fieldref", where)
            val = entry.get("value")
            if val in (None, ""):
                return None
            return (val, "env", where)
        for idx, ef in enumerate(self.env_from):
            prefix = ef.get("prefix") or ""
            if not envvar.startswith(prefix):
                continue
            key = envvar[len(prefix) :]
            if ef.get("configMapRef"):
                cmname = ef["configMapRef"].get("name")
                cm = self.configmaps.get(cmname)
                if cm is not None:
                    val = (cm.get("data") or {}).get(key)
                    if val not in (None, ""):
                        return (val, "configmap", f"envFrom[{idx}] configmap {cmname}")
        return None

    def setting(self, name):
        """(value, source, where) with click semantics: flag wins over env; None when unset."""
        occs = self.occurrences.get(name) or []
        if occs:
            occ = occs[-1]
            w = self.words[occ.value_word if occ.value_word is not None else occ.flag_word]
            return (self.flag_value(name), "flag", self._where(occ), w.expansion)
        env = self.env_setting(name)
        if env:
            return (env[0], env[1], env[2], False)
        return None

    def _where(self, occ):
        w = self.words[occ.flag_word]
        if self.form == "script":
            field, idx = self.script_loc
            line = self.script.count("\n", 0, w.start) + 1
            vw = self.words[occ.flag_word if occ.value_word is None else occ.value_word]
            return f"{field}[{idx}] script line {line} chars {w.start}-{vw.end}"
        field, idx = self.word_locs[occ.flag_word]
        return f"{field}[{idx}]"


# --------------------------------------------------------------------------------------------------
# Finding the mlflow server command
# --------------------------------------------------------------------------------------------------
_SHELLS = {"sh", "bash", "dash", "ash", "zsh", "ksh", "busybox"}
_PREFIX_WORDS = {"exec", "nohup", "then", "do", "else", "{", "!", "time", "command", "--"}
_WRAPPERS = {"tini", "dumb-init", "env", "tini-static"}
_ASSIGN_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def _basename(word):
    return word.rsplit("/", 1)[-1]


def _match_mlflow(words):
    """Index just after ``server`` when ``words`` run ``mlflow server``, else None."""
    i = 0
    n = len(words)
    while i < n:
        w = words[i]
        b = _basename(w)
        if b == "mlflow":
            if i + 1 < n and words[i + 1] == "server":
                return i + 2
            return None
        if re.match(r"^python[0-9.]*$", b):
            j = i + 1
            while j < n and words[j].startswith("-") and words[j] != "-m":
                j += 1
            if j + 2 < n and words[j] == "-m" and words[j + 1] == "mlflow" and words[j + 2] == "server":
                return j + 3
            return None
        if w in _PREFIX_WORDS or b in _WRAPPERS or _ASSIGN_RE.match(w) or (i > 0 and w.startswith("-")):
            i += 1
            continue
        return None
    return None


def _shell_script_index(argv):
    """If argv runs a shell with -c, index of the script in argv, else None."""
    if not argv:
        return None
    if _basename(argv[0]) not in _SHELLS:
        return None
    i = 1
    if _basename(argv[0]) == "busybox" and len(argv) > 1 and argv[1] in _SHELLS:
        i = 2
    while i < len(argv):
        a = argv[i]
        if a.startswith("-") and not a.startswith("--") and "c" in a[1:]:
            return i + 1 if i + 1 < len(argv) else None
        if a in ("-o", "+o"):
            i += 2
            continue
        if a.startswith("-") or a.startswith("+"):
            i += 1
            continue
        return None
    return None


def _simple_commands(tokens):
    cmds = []
    cur = []
    for t in tokens:
        if isinstance(t, tuple):
            if t[1] in ("\n", ";", "&&", "||", "|", "&", ";;", "(", ")"):
                if cur:
                    cmds.append(cur)
                cur = []
            continue
        if t.redir_target:
            continue
        cur.append(t)
    if cur:
        cmds.append(cur)
    return cmds


def _container_runs_mlflow(container):
    """Return ("argv", None) / ("script", idx) / None, and a description for error messages."""
    argv = list(container.get("command") or []) + list(container.get("args") or [])
    if not argv:
        return None, "no command/args (runs the image's entrypoint, which cannot be read from the API)"
    sidx = _shell_script_index(argv)
    if sidx is not None:
        script = argv[sidx]
        try:
            tokens = _lex(script)
        except MlflowSettingsError as exc:
            if re.search(r"mlflow\S*\s+server", script):
                raise
            return None, f"shell script that could not be read ({exc})"
        hits = [c for c in _simple_commands(tokens) if _match_mlflow([w.value for w in c]) is not None]
        if hits:
            return ("script", sidx), None
        return None, f"shell script {_shorten(script)!r}"
    if _match_mlflow(argv) is not None:
        return ("argv", None), None
    return None, f"command {_shorten(' '.join(argv))!r}"


def _shorten(s, n=100):
    s = s.replace("\n", "\\n")
    return s if len(s) <= n else s[: n - 3] + "..."


# --------------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------------
_VERSION_RE = re.compile(r"^v?(\d+)\.(\d+)(?:\.(\d+))?")


def mlflow_version_from_image(image):
    """``"3.17.2"`` from ``ghcr.io/mlflow/mlflow:v3.17.2``; None for digest-only, ``latest``, no tag."""
    if not image:
        return None
    ref = image.split("@", 1)[0]
    last = ref.rsplit("/", 1)[-1]
    if ":" not in last:
        return None
    tag = last.split(":", 1)[1]
    m = _VERSION_RE.match(tag)
    if not m:
        return None
    return f"{m.group(1)}.{m.group(2)}.{m.group(3) or '0'}"


def _vtuple(version):
    if not version:
        return None
    m = _VERSION_RE.match(str(version))
    if not m:
        raise MlflowSettingsError(
            f"mlflow_version {version!r} is not a version: give it as MAJOR.MINOR[.PATCH], e.g. 3.17.2"
        )
    return (int(m.group(1)), int(m.group(2)), int(m.group(3) or 0))


def _find_container(deployment, container_name):
    if not isinstance(deployment, dict) or not deployment:
        raise MlflowSettingsError(
            "deployment: expected a Deployment object (a dict as returned by kubernetes.core.k8s_info "
            f"resources[0]), got {type(deployment).__name__}"
        )
    kind = deployment.get("kind")
    if kind not in (None, "Deployment"):
        raise MlflowSettingsError(f"deployment: expected kind Deployment, got {kind!r}")
    spec = ((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}
    containers = spec.get("containers") or []
    if not containers:
        raise MlflowSettingsError(
            "deployment: spec.template.spec.containers is empty; pass the whole Deployment object"
        )
    found = []
    seen = []
    for idx, c in enumerate(containers):
        how, why = _container_runs_mlflow(c)
        if how:
            found.append((idx, c, how))
        else:
            seen.append(f"{c.get('name')!r} (image {c.get('image')!r}): {why}")
    if container_name:
        for idx, c, how in found:
            if c.get("name") == container_name:
                return idx, c, how
        names = [c.get("name") for c in containers]
        raise MlflowSettingsError(
            f"container {container_name!r} does not run `mlflow server` or does not exist; containers: "
            f"{names}; running mlflow server: {[f[1].get('name') for f in found]}. "
            "Set the container variable to the name of the container that runs `mlflow server`"
        )
    if not found:
        raise MlflowSettingsError(
            "no container runs `mlflow server`. Found: "
            + "; ".join(seen)
            + ". Give the MLflow container an explicit command, e.g. command: [mlflow, server] with flags in "
            "args, or a /bin/sh -c script that runs `mlflow server ...`"
        )
    if len(found) > 1:
        raise MlflowSettingsError(
            "several containers run `mlflow server`: "
            + ", ".join(repr(f[1].get("name")) for f in found)
            + "; set the container variable to the one to use"
        )
    return found[0]


def parse_deployment(deployment, configmaps=None, mlflow_version=None, container=None):
    """Parse the Deployment; returns a :class:`ParsedServer`."""
    p = ParsedServer()
    meta = deployment.get("metadata") or {} if isinstance(deployment, dict) else {}
    p.deployment_name = meta.get("name")
    p.namespace = meta.get("namespace")
    idx, c, how = _find_container(deployment, container)
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
        p.version = ".".join(str(x) for x in _vtuple(mlflow_version))
        p.version_source = "override"
    else:
        p.version = mlflow_version_from_image(p.image)
        p.version_source = "image tag" if p.version else "unknown"

    locs = [("command", i) for i in range(len(c.get("command") or []))]
    locs += [("args", i) for i in range(len(c.get("args") or []))]
    argv = list(c.get("command") or []) + list(c.get("args") or [])
    form, sidx = how
    if form == "script":
        p.form = "script"
        p.script_loc = locs[sidx]
        p.shell = argv[:sidx]
        p.script = argv[sidx]
        cmds = _simple_commands(_lex(p.script))
        hits = [cmd for cmd in cmds if _match_mlflow([w.value for w in cmd]) is not None]
        if len(hits) > 1:
            raise MlflowSettingsError(
                f"the script in container {p.container_name!r} {locs[sidx][0]}[{locs[sidx][1]}] runs "
                f"`mlflow server` {len(hits)} times (e.g. in if/else branches); cannot tell which one is "
                "effective. Keep a single `mlflow server` command in the script"
            )
        cmd = hits[0]
        start = _match_mlflow([w.value for w in cmd])
        for w in cmd[:start]:
            if w.cmdsub:
                raise MlflowSettingsError(
                    f"the mlflow command in container {p.container_name!r} uses a command substitution "
                    f"({w.value!r}); write the program name literally"
                )
        p.prog_words = cmd[:start]
        p.words = cmd[start:]
        p.word_locs = [None] * len(p.words)
    else:
        p.form = "argv"
        start = _match_mlflow(argv)
        p.prog_words = [_lit_word(a) for a in argv[:start]]
        p.argv = locs
        p.words = [_lit_word(a) for a in argv[start:]]
        p.word_locs = locs[start:]
    _parse_flags(p)
    return p


def _parse_flags(p):
    words = p.words
    i = 0
    seq = 0
    eq = split = 0
    while i < len(words):
        w = words[i]
        v = w.value
        if v == "--":
            break
        if p.form == "script" and w.expansion and not v.startswith("-"):
            p.opaque.append(v)
            p.warnings.append(f"{v!r} on the mlflow server command line may add flags that cannot be read")
            i += 1
            continue
        if v.startswith("--"):
            flag, has_eq, _rest = v.partition("=")
            name = _FLAG_TO_NAME.get(flag)
            if name is None:
                p.warnings.append(f"unknown mlflow server flag {flag!r} kept as is")
                if not has_eq and i + 1 < len(words) and not words[i + 1].value.startswith("-"):
                    i += 1
                i += 1
                continue
            takes = SERVER_OPTIONS[name][3]
            if not takes:
                p.occurrences.setdefault(name, []).append(_Occ(name, flag, "bool", i, None, 0, seq))
            elif has_eq:
                eq += 1
                p.occurrences.setdefault(name, []).append(_Occ(name, flag, "eq", i, i, len(flag) + 1, seq))
            else:
                if i + 1 >= len(words):
                    raise MlflowSettingsError(
                        f"mlflow server flag {flag} has no value at the end of the command in container "
                        f"{p.container_name!r}; give it as {flag}=VALUE"
                    )
                split += 1
                p.occurrences.setdefault(name, []).append(_Occ(name, flag, "split", i, i + 1, 0, seq))
                i += 1
            seq += 1
            i += 1
            continue
        if v.startswith("-") and len(v) >= 2:
            flag = v[:2]
            name = _FLAG_TO_NAME.get(flag)
            if name is None:
                p.warnings.append(f"unknown mlflow server flag {v!r} kept as is")
                i += 1
                continue
            if len(v) > 2:
                off = 3 if v[2] == "=" else 2
                p.occurrences.setdefault(name, []).append(_Occ(name, flag, "attached", i, i, off, seq))
            else:
                if i + 1 >= len(words):
                    raise MlflowSettingsError(f"mlflow server flag {flag} has no value; give it as {flag} VALUE")
                p.occurrences.setdefault(name, []).append(_Occ(name, flag, "split", i, i + 1, 0, seq))
                i += 1
            seq += 1
            i += 1
            continue
        p.warnings.append(f"unexpected word {v!r} on the mlflow server command line kept as is")
        i += 1
    p.flag_style = "split" if split > eq else "eq"


def _parse_server_opts(opts, table, bools):
    """Parse a gunicorn/uvicorn option string -> (values, tokens, occurrences)."""
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
    for key in ("timeout", "workers", "keep_alive", "threads", "timeout_keep_alive", "graceful_timeout"):
        if key in values:
            try:
                values[key] = int(values[key])
            except ValueError:
                pass
    if other:
        values["other"] = other
    return values, words, occ


# --------------------------------------------------------------------------------------------------
# Effective settings
# --------------------------------------------------------------------------------------------------
def _server_kind(p):
    v = _vtuple(p.version) or ASSUMED_VERSION
    g = p.setting("gunicorn_opts")
    if p.occurrences.get("waitress_opts"):
        return "waitress"
    if v < (3, 3, 0):
        return "gunicorn"
    if g is not None:
        return "gunicorn"
    return "uvicorn"


def _health_path(prefix, version):
    v = _vtuple(version) or ASSUMED_VERSION
    if prefix and v >= (3, 7, 0):
        return prefix.rstrip("/") + "/health"
    return "/health"


def _int_or_none(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def server_settings(deployment, configmaps=None, mlflow_version=None, container=None):
    """Effective settings with their sources, as plain data (the ``mlflow_server_settings`` filter)."""
    p = parse_deployment(deployment, configmaps, mlflow_version, container)
    return _settings_dict(p)


def _settings_dict(p):
    settings = {}
    for name in SERVER_OPTIONS:
        s = p.setting(name)
        if s is None:
            continue
        value, source, where, expansion = s
        entry = {"value": redact(value, name), "source": source, "where": where}
        if expansion:
            entry["shell_expansion"] = True
            resolved = _resolve_expansion(p, value)
            if resolved is not None:
                entry["resolved"] = redact(resolved, name)
        if source == "secret":
            entry["value"] = "<from secret>"
        settings[name] = entry
    kind = _server_kind(p)
    vt = _vtuple(p.version)
    eff = {}
    eff["server"] = kind
    eff["workers"] = _int_or_none(_effective(p, "workers")) or 4
    eff["port"] = _int_or_none(_effective(p, "port")) or 5000
    eff["host"] = _effective(p, "host") or "127.0.0.1"
    prefix = _effective(p, "static_prefix")
    eff["static_prefix"] = prefix or None
    eff["health_path"] = _health_path(prefix, p.version)
    eff["root_path"] = (prefix + "/") if prefix else "/"
    ah = _effective(p, "allowed_hosts")
    if vt is not None and vt < (3, 5, 0):
        eff["allowed_hosts"] = None
        eff["host_check"] = False
    else:
        eff["host_check"] = not _truthy(_effective(p, "disable_security_middleware"))
        eff["allowed_hosts"] = [h.strip() for h in ah.split(",") if h.strip()] if ah else "default"
    result = {
        "deployment": p.deployment_name,
        "namespace": p.namespace,
        "container": p.container_name,
        "container_index": p.container_index,
        "image": p.image,
        "mlflow_version": p.version,
        "version_source": p.version_source,
        "form": p.form,
        "shell": p.shell,
        "script_location": f"{p.script_loc[0]}[{p.script_loc[1]}]" if p.script_loc else None,
        **eff,
        "backend_store_uri": redact(_effective(p, "backend_store_uri")),
        "sources": settings,
        "gunicorn": None,
        "uvicorn": None,
        "warnings": list(p.warnings),
    }
    if kind == "gunicorn":
        g = _effective(p, "gunicorn_opts") or ""
        values = _parse_server_opts(g, GUNICORN_OPTS, GUNICORN_BOOL_OPTS)[0]
        values["effective_workers"] = eff["workers"]
        for k, v in GUNICORN_DEFAULTS.items():
            values.setdefault(k, v)
        result["gunicorn"] = values
    elif kind == "uvicorn":
        u = _effective(p, "uvicorn_opts") or ""
        values = _parse_server_opts(u, UVICORN_OPTS, UVICORN_BOOL_OPTS)[0]
        values["effective_workers"] = eff["workers"]
        for k, v in UVICORN_DEFAULTS.items():
            values.setdefault(k, v)
        result["uvicorn"] = values
    return result


def _truthy(v):
    return str(v).lower() in ("1", "true", "yes", "on", "--disable-security-middleware")


_VAR_RE = re.compile(r"^\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))$")


def _resolve_expansion(p, value):
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


def _effective(p, name):
    s = p.setting(name)
    if s is None:
        return None
    value, source, _where, expansion = s
    if source in ("secret", "fieldref") or value.startswith("<from configmap"):
        return None
    if expansion:
        return _resolve_expansion(p, value)
    return value


# --------------------------------------------------------------------------------------------------
# Redaction
# --------------------------------------------------------------------------------------------------
_SECRET_NAME = re.compile(r"(PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY|ACCESS_?KEY|PRIVATE|CREDENTIAL)", re.I)
_USERINFO = re.compile(r"(://[^/\s:@'\"]+):([^@\s'\"]+)@")


def redact(value, name=""):
    """Mask credentials: secret-looking env names entirely, ``user:password@`` in URIs."""
    if value is None:
        return None
    if name and _SECRET_NAME.search(name):
        return "<redacted>"
    return _USERINFO.sub(r"\1:<redacted>@", str(value))


def _redact_container_view(c):
    view = {"name": c.get("name")}
    for field in ("command", "args"):
        if field in c:
            view[field] = [redact(a) for a in c.get(field) or []]
    env = []
    for e in c.get("env") or []:
        e2 = dict(e)
        if "value" in e2:
            e2["value"] = redact(e2["value"], e2.get("name", ""))
        env.append(e2)
    if "env" in c:
        view["env"] = env
    for field in ("startupProbe", "readinessProbe", "livenessProbe"):
        if field in c:
            view[field] = c[field]
    return view


def _is_sensitive(c):
    texts = list(c.get("command") or []) + list(c.get("args") or [])
    for e in c.get("env") or []:
        if "value" in e:
            if _SECRET_NAME.search(e.get("name", "")):
                return True
            texts.append(str(e.get("value")))
    return any(_USERINFO.search(t) for t in texts)


# --------------------------------------------------------------------------------------------------
# Editing
# --------------------------------------------------------------------------------------------------
class _Editor:
    """Collects minimal edits on the container and renders them."""

    def __init__(self, p):
        self.p = p
        self.script_edits = []  # (start, end, text) on p.script
        self.list_sets = {}  # (field, idx) -> new string
        self.list_removes = set()  # (field, idx)
        self.list_appends = []  # strings appended after the last mlflow word
        self.script_appends = []  # words appended after the last mlflow word
        self.env_sets = {}  # env index -> new entry
        self.env_removes = set()
        self.env_appends = []
        self.word_edits = {}  # word index -> [(start, end, new)] on the cooked value
        self.changes = []

    # ---- words ---------------------------------------------------------------------------------
    def replace_in_word(self, widx, edits):
        """Queue cooked-value edits [(start, end, new)] on word ``widx`` (rendered minimally later)."""
        self.word_edits.setdefault(widx, []).extend(edits)

    def _render_word(self, widx, edits):
        p = self.p
        w = p.words[widx]
        if p.form == "argv":
            self.list_sets[p.word_locs[widx]] = _apply_string_edits(w.value, edits)
            return
        raw_edits = _raw_edits(p.script, w, edits)
        if raw_edits is not None:
            self.script_edits.extend(raw_edits)
            return
        if w.expansion:
            raise MlflowSettingsError(
                f"cannot safely rewrite {p.script[w.start : w.end]!r} in the script of container "
                f"{p.container_name!r}: it uses shell expansions in a way that needs requoting. "
                "Write this flag value literally, or switch the corresponding target off"
            )
        new_value = _apply_string_edits(w.value, edits)
        style = None
        if any(ch[2].startswith("dq") for ch in w.chars):
            style = "dq"
        elif any(ch[2] == "sq" for ch in w.chars):
            style = "sq"
        # keep a literal flag prefix unquoted: --flag="value"
        flag_part = ""
        m = re.match(r"^(--?[A-Za-z0-9-]+=)", new_value)
        if m and p.script[w.start : w.start + len(m.group(1))] == m.group(1):
            flag_part = m.group(1)
        self.script_edits.append((w.start, w.end, flag_part + _sh_quote(new_value[len(flag_part) :], style)))

    def set_value(self, occ, new_value):
        w = self.p.words[occ.value_word]
        old = w.value[occ.value_offset :]
        if old == new_value:
            return
        self.replace_in_word(occ.value_word, [(occ.value_offset, len(w.value), new_value)])

    def remove_occ(self, occ):
        p = self.p
        idxs = [occ.flag_word]
        if occ.value_word is not None and occ.value_word != occ.flag_word:
            idxs.append(occ.value_word)
        if p.form == "argv":
            for i in idxs:
                self.list_removes.add(p.word_locs[i])
            return
        last = p.words[idxs[-1]]
        # remove the separator before the flag (whitespace/continuations), keep the rest byte-identical
        self.script_edits.append((self._prev_end(idxs[0]), last.end, ""))

    def _prev_end(self, widx):
        p = self.p
        if widx > 0:
            return p.words[widx - 1].end
        return p.prog_words[-1].end

    def add_flag(self, flag, value):
        """Append ``flag`` (with ``value`` unless None) after the last mlflow word."""
        p = self.p
        if p.form == "argv":
            if value is None:
                self.list_appends.append(flag)
            elif p.flag_style == "split":
                self.list_appends.extend([flag, value])
            else:
                self.list_appends.append(f"{flag}={value}")
            return
        if value is None:
            word = flag
        elif p.flag_style == "split":
            word = f"{flag} {_sh_quote(value)}"
        else:
            word = f"{flag}={_sh_quote(value)}"
        self.script_appends.append(word)

    # ---- rendering ----------------------------------------------------------------------------
    def render_container(self):
        p = self.p
        c = copy.deepcopy(p.container)
        for widx, edits in sorted(self.word_edits.items()):
            self._render_word(widx, edits)
        if p.form == "script" and (self.script_edits or self.script_appends):
            edits = list(self.script_edits)
            if self.script_appends:
                last = p.words[-1] if p.words else p.prog_words[-1]
                sep = self._separator()
                edits.append((last.end, last.end, "".join(sep + a for a in self.script_appends)))
            text = p.script
            # apply from the end; inserts (zero width) at a point go after removals ending there
            for start, end, new in sorted(edits, key=lambda e: (e[0], e[1]), reverse=True):
                text = text[:start] + new + text[end:]
            field, idx = p.script_loc
            c[field][idx] = text
        if p.form == "argv" and (self.list_sets or self.list_removes or self.list_appends):
            for (field, idx), val in self.list_sets.items():
                c[field][idx] = val
            for field in ("command", "args"):
                if field in c and c[field] is not None:
                    c[field] = [v for i, v in enumerate(c[field]) if (field, i) not in self.list_removes]
            if self.list_appends:
                field = p.word_locs[-1][0] if p.word_locs else p.argv[-1][0]
                if field == "command" and c.get("args"):
                    field = "args"
                c.setdefault(field, [])
                c[field] = list(c[field]) + self.list_appends
        if self.env_sets or self.env_removes or self.env_appends:
            env = list(c.get("env") or [])
            for i, entry in self.env_sets.items():
                env[i] = entry
            env = [e for i, e in enumerate(env) if i not in self.env_removes]
            env.extend(self.env_appends)
            c["env"] = env
        return c

    def _separator(self):
        """The text between two mlflow flags in the script (e.g. ' \\\\\\n  '), reused for additions."""
        p = self.p
        seq = list(p.prog_words) + list(p.words)
        for i in range(len(seq) - 1, 0, -1):
            gap = p.script[seq[i - 1].end : seq[i].start]
            if "\\\n" in gap:
                return gap
        return " "


def _apply_string_edits(value, edits):
    for start, end, new in sorted(edits, key=lambda e: (e[0], e[1]), reverse=True):
        value = value[:start] + new + value[end:]
    return value


def _raw_edits(script, w, edits):
    """Translate edits of the cooked value into raw script edits; None if unsafe (needs requoting)."""
    out = []
    chars = w.chars
    for start, end, new in edits:
        if end > start:
            seg = chars[start:end]
            ctxs = {c[2] for c in seg}
            raw_start, raw_end = seg[0][0], seg[-1][1]
            # contiguous in the raw text, a single quoting context, and the new text fits it
            if len(ctxs) != 1 or any(seg[k][1] != seg[k + 1][0] for k in range(len(seg) - 1)):
                return None
            ctx = ctxs.pop()
            if ctx in ("esc", "dqesc"):
                return None
            if not all(_char_fits(ch, ctx) for ch in new):
                return None
            out.append((raw_start, raw_end, new))
        else:
            if start > 0:
                ctx = chars[start - 1][2]
                pos = chars[start - 1][1]
            elif chars:
                ctx = chars[0][2]
                pos = chars[0][0]
            else:
                return None
            if ctx in ("esc", "dqesc"):
                return None
            if not all(_char_fits(ch, ctx) for ch in new):
                return None
            out.append((pos, pos, new))
    return out


def _opts_edits(opts, table, desired):
    """Edits on an options string so that option keys get the desired values.

    ``desired``: key -> (flag to add, value, add_if_missing). Existing occurrences are edited in place
    (quoting kept), missing ones appended as ``--flag value``. Returns [(start, end, new)] on ``opts``.
    """
    _values, words, occ = _parse_server_opts(opts, table, ())
    edits = []
    appends = []
    for key, (flag, value, add) in desired.items():
        value = str(value)
        if key not in occ:
            if add:
                appends.append(f"{flag} {value}")
            continue
        for _wi, vi, off in occ[key]:
            vw = words[vi]
            if vw.value[off:] == value:
                continue
            seg = vw.chars[off:]
            simple = (
                seg
                and len({ch[2] for ch in seg}) == 1
                and seg[0][2] != "esc"
                and all(seg[k][1] == seg[k + 1][0] for k in range(len(seg) - 1))
                and all(_char_fits(ch, seg[0][2]) for ch in value)
            )
            if simple:
                edits.append((seg[0][0], seg[-1][1], value))
            else:
                edits.append((vw.start, vw.end, vw.value[:off] + value))
    if appends:
        if words:
            edits.append((words[-1].end, words[-1].end, "".join(" " + a for a in appends)))
        else:
            edits.append((len(opts), len(opts), " ".join(appends)))
    return edits


# --------------------------------------------------------------------------------------------------
# Compliance
# --------------------------------------------------------------------------------------------------
def _norm_targets(targets):
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
    t = _norm_targets(targets)
    keys = [k for k in sorted(t) if k not in ("annotation", "container")]
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
    t = _norm_targets(targets)
    p = parse_deployment(deployment, configmaps, t["mlflow_version"], t["container"])
    before_settings = _settings_dict(p)
    ed = _Editor(p)
    kind = _server_kind(p)
    vt = _vtuple(p.version) or ASSUMED_VERSION
    changes = ed.changes

    # ---- port / host ---------------------------------------------------------------------------
    if t["port"] is not None:
        cur = p.setting("port")
        if cur is None or cur[1] != "flag" or _int_or_none(_effective(p, "port")) != t["port"]:
            _ensure_setting(ed, "port", str(t["port"]), _effective(p, "port"), force_flag=True)
    if t["host"] is not None:
        _ensure_setting(ed, "host", t["host"], _effective(p, "host"))

    # ---- workers (mlflow's own --workers) ------------------------------------------------------
    eff_workers = _int_or_none(_effective(p, "workers"))
    target_workers = None
    if t["workers"] is not None:
        target_workers = t["workers"]
        if t["workers_mode"] == "at_least" and eff_workers and eff_workers >= t["workers"]:
            target_workers = eff_workers
        _ensure_setting(ed, "workers", str(target_workers), eff_workers if eff_workers else None)

    # ---- static prefix -------------------------------------------------------------------------
    prefix_after = _effective(p, "static_prefix")
    if t["static_prefix"] is not None:
        want = t["static_prefix"]
        cur = _effective(p, "static_prefix")
        if want == "":
            _remove_setting(ed, "static_prefix")
            prefix_after = None
        elif cur != want:
            _ensure_setting(ed, "static_prefix", want, cur)
            prefix_after = want

    # ---- server options --------------------------------------------------------------------------
    if kind == "gunicorn":
        _enforce_opts(ed, "gunicorn_opts", GUNICORN_OPTS, t, target_workers)
    elif kind == "uvicorn":
        _enforce_opts(ed, "uvicorn_opts", UVICORN_OPTS, t, target_workers)

    # ---- allowed hosts (MLflow >= 3.5) -------------------------------------------------------------
    if t["allowed_hosts"] is not None and vt >= (3, 5, 0):
        _enforce_allowed_hosts(ed, t, kind)

    new_c = ed.render_container()

    # ---- probes ------------------------------------------------------------------------------
    port = t["port"] or _int_or_none(_effective(p, "port")) or 5000
    health = _health_path(prefix_after, p.version)
    if t["probes"]:
        for field, key in (
            ("startupProbe", "startup_probe"),
            ("readinessProbe", "readiness_probe"),
            ("livenessProbe", "liveness_probe"),
        ):
            want = _desired_probe(health, port, t[key])
            have = p.container.get(field)
            if not _probe_matches(have, want):
                new_c[field] = want
                changes.append(f"{field}: {_probe_text(have)} -> {_probe_text(want)}")

    # ---- pod spec ----------------------------------------------------------------------------
    pod_spec = deployment["spec"]["template"]["spec"]
    pod_changes = {}
    if t["enable_service_links"] is not None and pod_spec.get("enableServiceLinks", True) != t["enable_service_links"]:
        pod_changes["enableServiceLinks"] = t["enable_service_links"]
        changes.append(
            f"enableServiceLinks: {pod_spec.get('enableServiceLinks', 'unset (true)')} -> {t['enable_service_links']}"
        )

    compliant = not changes
    cpath = f"/spec/template/spec/containers/{p.container_index}"
    patch = []
    rollback = []
    if not compliant:
        guard = {"op": "test", "path": cpath + "/name", "value": p.container_name}
        patch.append(guard)
        rollback.append(guard)
        for field in ("command", "args", "env", "startupProbe", "readinessProbe", "livenessProbe"):
            old = p.container.get(field)
            new = new_c.get(field)
            if old == new:
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
            patch.append(
                {"op": "add", "path": "/spec/template/metadata", "value": {"annotations": {t["annotation"]: value}}}
            )
            rollback.append({"op": "remove", "path": "/spec/template/metadata/annotations"})
        elif annotations is None:
            patch.append(
                {"op": "add", "path": "/spec/template/metadata/annotations", "value": {t["annotation"]: value}}
            )
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

    after_dep = copy.deepcopy(deployment)
    after_dep["spec"]["template"]["spec"]["containers"][p.container_index] = new_c
    after_dep["spec"]["template"]["spec"].update(pod_changes)
    after_settings = _settings_dict(parse_deployment(after_dep, configmaps, t["mlflow_version"], p.container_name))
    return {
        "compliant": compliant,
        "changed": not compliant,
        "changes": changes,
        "patch": patch,
        "rollback_patch": rollback,
        "annotation": {t["annotation"]: enforced_fingerprint(targets)},
        "before": _redact_container_view(p.container),
        "after": _redact_container_view(new_c),
        "before_settings": before_settings,
        "after_settings": after_settings,
        "health_path": health,
        "port": port,
        "server": kind,
        "mlflow_version": p.version,
        "version_source": p.version_source,
        "container": p.container_name,
        "container_index": p.container_index,
        "sensitive": _is_sensitive(p.container) or _is_sensitive(new_c),
        "warnings": list(p.warnings),
    }


def _ensure_setting(ed, name, value, current, force_flag=False):
    """Make setting ``name`` take ``value``: edit the flag in place, else the literal env, else add a flag."""
    p = ed.p
    occs = p.occurrences.get(name) or []
    longf = SERVER_OPTIONS[name][0][0]
    if occs:
        last = occs[-1]
        w = p.words[last.value_word]
        old = w.value[last.value_offset :]
        if w.expansion and _resolve_expansion(p, old) == value:
            return
        if old != value:
            ed.set_value(last, value)
            ed.changes.append(f"{longf}: {redact(old)} -> {value} ({p._where(last)})")
        for occ in occs[:-1]:
            ed.remove_occ(occ)
            ed.changes.append(f"{longf}: removed duplicate occurrence ({p._where(occ)})")
        return
    envvar = SERVER_OPTIONS[name][2]
    env = p.env_setting(name)
    if env and env[1] == "env" and not force_flag:
        idx, entry = p.env[envvar]
        if entry.get("value") != value:
            new = dict(entry)
            new["value"] = value
            ed.env_sets[idx] = new
            ed.changes.append(f"env {envvar}: {redact(entry.get('value'))} -> {value}")
        return
    if current is not None and str(current) == value and not force_flag:
        return
    ed.add_flag(longf, value)
    was = f"{redact(env[0])} from {env[2]}" if env else "unset"
    ed.changes.append(f"{longf}: {was} -> {value} (flag added)")


def _remove_setting(ed, name):
    p = ed.p
    longf = SERVER_OPTIONS[name][0][0]
    for occ in p.occurrences.get(name) or []:
        ed.remove_occ(occ)
        ed.changes.append(f"{longf}: {redact(p.flag_value(name))} -> removed ({p._where(occ)})")
    envvar = SERVER_OPTIONS[name][2]
    if envvar and envvar in p.env:
        idx, entry = p.env[envvar]
        if entry.get("value") or entry.get("valueFrom"):
            ed.env_removes.add(idx)
            ed.changes.append(f"env {envvar}: removed (was {redact(entry.get('value')) or 'from a reference'})")
    elif envvar:
        env = p.env_setting(name)
        if env:
            # set through envFrom: override with an empty value (click treats empty as unset)
            ed.env_appends.append({"name": envvar, "value": ""})
            ed.changes.append(f"env {envvar}: {env[0]} from {env[2]} -> overridden with empty value")


def _enforce_opts(ed, name, table, t, target_workers):
    """Edit --gunicorn-opts/--uvicorn-opts (or their env var) in place."""
    p = ed.p
    flag = SERVER_OPTIONS[name][0][0]
    envvar = SERVER_OPTIONS[name][2]
    occs = p.occurrences.get(name) or []
    cur_val = None
    where = None
    if occs:
        occ = occs[-1]
        w = p.words[occ.value_word]
        cur_val = w.value[occ.value_offset :]
        where = ("flag", occ)
    else:
        env = p.env_setting(name)
        if env and env[1] == "env":
            cur_val = env[0]
            where = ("env", envvar)
        elif env:
            if env[1] in ("secret", "fieldref") or env[0].startswith("<from configmap"):
                p.warnings.append(
                    f"{envvar} comes from {env[2]} and cannot be read; {name} not checked. Set it literally "
                    "or pass the ConfigMap"
                )
                return
            cur_val = env[0]
            where = ("configmap", env)
    values = _parse_server_opts(cur_val or "", table, ())[0]
    desired = {}
    if name == "gunicorn_opts":
        if t["gunicorn_timeout"] is not None:
            want = t["gunicorn_timeout"]
            have = values.get("timeout")
            if t["gunicorn_timeout_mode"] == "at_least" and isinstance(have, int) and have >= want:
                want = have
            desired["timeout"] = ("--timeout", want, want != GUNICORN_DEFAULTS["timeout"])
        if t["gunicorn_keep_alive"] is not None:
            desired["keep_alive"] = (
                "--keep-alive",
                t["gunicorn_keep_alive"],
                t["gunicorn_keep_alive"] != GUNICORN_DEFAULTS["keep_alive"],
            )
        if t["gunicorn_worker_class"] is not None:
            desired["worker_class"] = (
                "--worker-class",
                t["gunicorn_worker_class"],
                t["gunicorn_worker_class"] != GUNICORN_DEFAULTS["worker_class"],
            )
    else:
        if t["uvicorn_timeout_keep_alive"] is not None:
            desired["timeout_keep_alive"] = (
                "--timeout-keep-alive",
                t["uvicorn_timeout_keep_alive"],
                t["uvicorn_timeout_keep_alive"] != UVICORN_DEFAULTS["timeout_keep_alive"],
            )
    # a --workers inside the options is overridden by mlflow's own --workers: keep it consistent
    # (same number, never added)
    if target_workers is not None and "workers" in values:
        desired["workers"] = ("--workers", target_workers, False)
    base = cur_val or ""
    edits = _opts_edits(base, table, desired)
    if not edits:
        return
    new_val = _apply_string_edits(base, edits)
    label = "gunicorn" if name == "gunicorn_opts" else "uvicorn"
    if where is None:
        ed.add_flag(flag, new_val)
        ed.changes.append(f"{flag}: unset -> {new_val!r} ({label} options added)")
        return
    if where[0] == "flag":
        occ = where[1]
        # translate option-string edits into edits of the word value
        ed.replace_in_word(occ.value_word, [(a + occ.value_offset, b + occ.value_offset, s) for a, b, s in edits])
        ed.changes.append(f"{flag}: {cur_val!r} -> {new_val!r} ({p._where(occ)})")
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
    want = t["allowed_hosts"]
    envvar = "MLFLOW_SERVER_ALLOWED_HOSTS"
    occs = p.occurrences.get("allowed_hosts") or []
    cur = _effective(p, "allowed_hosts")
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
            ed.changes.append(f"--allowed-hosts: {cur!r} -> {new_val!r} ({p._where(occs[-1])})")
        return
    for occ in occs:
        # --allowed-hosts cannot be combined with --gunicorn-opts: move it to the env var
        ed.remove_occ(occ)
        ed.changes.append(f"--allowed-hosts: removed ({p._where(occ)}); moved to env {envvar}")
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


def _desired_probe(path, port, timing):
    probe = {"httpGet": {"path": path, "port": port, "scheme": "HTTP"}}
    for k in ("initialDelaySeconds", "periodSeconds", "timeoutSeconds", "successThreshold", "failureThreshold"):
        probe[k] = timing.get(k, _PROBE_DEFAULTS[k])
    return probe


def _probe_matches(have, want):
    """Same handler (HTTP GET on the path and port) and at least as tolerant as ``want``.

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
    if str(hg.get("port")) != str(wg["port"]):
        return False

    def get(probe, key):
        return probe.get(key, _PROBE_DEFAULTS[key])

    if get(have, "timeoutSeconds") < get(want, "timeoutSeconds"):
        return False
    window_have = get(have, "periodSeconds") * get(have, "failureThreshold")
    window_want = get(want, "periodSeconds") * get(want, "failureThreshold")
    if window_have < window_want:
        return False
    return get(have, "successThreshold") == get(want, "successThreshold") and get(have, "initialDelaySeconds") >= get(
        want, "initialDelaySeconds"
    )


def _probe_text(probe):
    if not probe:
        return "none"
    if "httpGet" in probe:
        h = probe["httpGet"]
        handler = f"GET {h.get('path')} :{h.get('port')}"
    else:
        handler = ",".join(k for k in ("exec", "tcpSocket", "grpc") if k in probe) or "?"
    timing = " ".join(f"{k}={probe[k]}" for k in _PROBE_DEFAULTS if k in probe)
    return f"{handler} {timing}".strip()
