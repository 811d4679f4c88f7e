# Copyright: (c) 2026, asgard.mlflow contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: which container runs ``mlflow server``, and its command line read flag by flag.

**The one container rule** (:func:`mlflow_container`), used by everything that picks a container (the settings
parser, the patch role, the probe's port and static prefix, verify's log scan, the migration Job): the container
of the pod spec that runs ``mlflow server`` as parsed from its ``command``/``args`` (a list, or a ``sh -c`` script),
or the container named by the caller. No such container, or two, raises :class:`ContainerError` with a finding
code. Sidecars that merely mention MLflow (``tail -F /mlflow/logs/server.log``, ``fluent-bit -c
/etc/mlflow/server.conf``) do not run ``mlflow server`` and are skipped, wherever they are listed.

Command forms: ``mlflow server``, ``python -m mlflow server``, ``/opt/venv/bin/mlflow server``, wrappers such as
``tini --``, ``env VAR=x``, ``exec``; a ``sh -c`` / ``bash -c`` / ``sh -ec`` script in which exactly one simple
command runs ``mlflow server``.

:func:`shell_wrapper`: **the shell-wrapper rule** (finding ``SHELL_WRAPPER_NO_EXEC``, patch target ``shell_exec``):
a ``sh -c`` script that runs ``mlflow server`` without ``exec`` leaves the shell as the container's PID 1; it has
no SIGTERM handler, so the kubelet's SIGTERM is dropped and every pod stop waits the whole grace period.

:func:`parse_command` -> :class:`ServerCommand`: the words after ``server``, where each one is (list element or
script span) and every occurrence of every ``mlflow server`` flag (:class:`Occ`).

Pure Python. Also copied next to the background port forwarder (``_forwarder.RUNTIME_MODULES``).
"""

from __future__ import annotations

import re

from ansible_collections.asgard.mlflow.plugins.module_utils._errors import ContainerError, MlflowSettingsError
from ansible_collections.asgard.mlflow.plugins.module_utils._mlflow_rules import FLAG_TO_NAME, SERVER_OPTIONS
from ansible_collections.asgard.mlflow.plugins.module_utils._shell import (
    lex,
    literal_word,
    shorten,
    simple_commands,
)

_SHELLS = {"sh", "bash", "dash", "ash", "zsh", "ksh", "busybox"}
_PREFIX_WORDS = {"exec", "nohup", "then", "do", "else", "{", "!", "time", "command", "--"}
_WRAPPERS = {"tini", "dumb-init", "env", "tini-static"}
_ASSIGN_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


# --------------------------------------------------------------------------------------------------
# Does a command run `mlflow server`?
# --------------------------------------------------------------------------------------------------
def _basename(word):
    return word.rsplit("/", 1)[-1]


def match_mlflow(words):
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


def shell_script_index(argv):
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


def _argv(container):
    return [str(a) for a in (container.get("command") or [])] + [str(a) for a in (container.get("args") or [])]


def runs_mlflow_server(container):
    """``(how, why)``: how is ``("argv", None)`` / ``("script", index of the script in argv)`` when the container
    runs ``mlflow server``, else None and ``why`` says what it runs instead (for error messages)."""
    argv = _argv(container)
    if not argv:
        return None, "no command/args (runs the image's entrypoint, which cannot be read from the API)"
    sidx = shell_script_index(argv)
    if sidx is not None:
        script = argv[sidx]
        try:
            tokens = lex(script)
        except MlflowSettingsError as exc:
            if re.search(r"mlflow\S*\s+server", script):
                raise
            return None, f"shell script that could not be read ({exc})"
        hits = [c for c in simple_commands(tokens) if match_mlflow([w.value for w in c]) is not None]
        if hits:
            return ("script", sidx), None
        return None, f"shell script {shorten(script)!r}"
    if match_mlflow(argv) is not None:
        return ("argv", None), None
    return None, f"command {shorten(' '.join(argv))!r}"


# --------------------------------------------------------------------------------------------------
# The shell-wrapper rule: does a shell stay PID 1 between the kubelet and MLflow?
# --------------------------------------------------------------------------------------------------
# bash execs the last simple command of a -c script itself (bash 5.2, measured: `bash -c "sleep 9"`, also after
# `;`/`&&`); dash (Debian's /bin/sh, the MLflow images') and busybox ash keep running as the parent
_EXECING_SHELLS = {"bash"}
_SEPARATORS = {"\n", ";", "&&", "||", "|", "&", ";;", "(", ")"}
# words before which `exec ` cannot be written (keywords, negation, grouping)
_NOT_AFTER_EXEC = {"!", "{", "(", "then", "do", "else", "time", "if", "while", "until"}


def shell_wrapper(cmd, mlflow_version=None):
    """The shell-wrapper rule for a parsed command (:class:`ServerCommand`).

    None when no shell stays between the kubelet and MLflow: a command/args list, a script whose ``mlflow server``
    command starts with ``exec``, or bash running it as the script's last command (bash execs that itself).
    Otherwise ``{shell, where, fixable, insert_at, reason}``: ``fixable`` when the script is one simple command
    (optionally with ``VAR=value`` assignments and redirections): ``exec `` is then inserted at ``insert_at`` (an
    offset in the script, before the program word). A script with ``;``, ``&&``, ``||``, pipes, ``&`` or several
    commands is never rewritten: ``reason`` says why and what to do. MLflow 2.x (``mlflow_version`` < 3) is not
    fixable either: its CLI does not pass SIGTERM on to gunicorn, so ``exec`` alone would not stop it sooner.
    """
    if cmd.form != "script" or not cmd.prog_words:
        return None
    if any(w.value == "exec" for w in cmd.prog_words):
        return None
    tokens = lex(cmd.script)
    cmds = simple_commands(tokens)
    ops = {t[1] for t in tokens if isinstance(t, tuple) and t[1] in _SEPARATORS} - {"\n"}
    shell = _basename(cmd.shell[0]) if cmd.shell else "sh"
    if shell == "busybox":
        shell = "sh"
    is_last = bool(cmds) and cmds[-1][0].start == cmd.prog_words[0].start
    if shell in _EXECING_SHELLS and is_last and not ops & {"|", "&", "(", ")"}:
        return None
    field, idx = cmd.script_loc
    out = {"shell": " ".join(cmd.shell or []), "where": f"{field}[{idx}]", "fixable": False, "insert_at": None,
           "reason": ""}
    first = next((w for w in cmd.prog_words if not _ASSIGN_RE.match(w.value)), None)
    if len(cmds) != 1 or ops - {";"}:
        out["reason"] = ("the script runs more than one command (" + ", ".join(sorted(
            o for o in ops | ({"newline"} if len(cmds) > 1 and not ops else set()))) + "): it is not rewritten. "
            "Write `exec` before `mlflow server` yourself (as the script's last command), or move the other commands "
            "to an init container")
    elif first is None or first.value in _NOT_AFTER_EXEC:
        out["reason"] = "the mlflow command starts with a shell keyword: write `exec` before `mlflow server` yourself"
    elif mlflow_version and _major(mlflow_version) < 3:
        out["reason"] = (f"MLflow {mlflow_version}'s CLI does not pass SIGTERM on to gunicorn: `exec` alone would "
                         "not stop the pod sooner; upgrade to MLflow 3, where the CLI forwards SIGTERM")
    else:
        out["fixable"] = True
        out["insert_at"] = first.start
        out["reason"] = "one simple command: `exec ` is inserted before it"
    return out


def _major(version):
    m = re.match(r"^\s*(\d+)", str(version))
    return int(m.group(1)) if m else 99


# --------------------------------------------------------------------------------------------------
# The one container rule
# --------------------------------------------------------------------------------------------------
def pod_spec_of(obj):
    """The pod spec of a pod spec, a Pod, or a workload with a pod template (Deployment, Job, ...)."""
    if not isinstance(obj, dict):
        raise MlflowSettingsError(
            f"expected a pod spec, a Pod or a Deployment (a mapping as the Kubernetes API returns it), "
            f"got {type(obj).__name__}"
        )
    if "containers" in obj:
        return obj
    spec = obj.get("spec") or {}
    if "containers" in spec:
        return spec
    return (spec.get("template") or {}).get("spec") or {}


def _scan(pod_spec):
    """[(index, container, how)] of the containers that run ``mlflow server``, and why the others do not."""
    found = []
    others = []
    for idx, c in enumerate(pod_spec.get("containers") or []):
        how, why = runs_mlflow_server(c)
        if how:
            found.append((idx, c, how))
        else:
            others.append(f"{c.get('name')!r} (image {c.get('image')!r}): {why}")
    return found, others


def mlflow_container(pod_spec, name=None):
    """``(index, container)`` of THE MLflow container of ``pod_spec`` (a pod spec, Pod or Deployment).

    With ``name``: that container, whatever it runs (``CONTAINER_NOT_FOUND`` when it is not there). Without: the one
    container that runs ``mlflow server`` as parsed; ``NO_MLFLOW_CONTAINER`` when none does,
    ``SEVERAL_MLFLOW_CONTAINERS`` when more than one does. Raises :class:`ContainerError`.
    """
    spec = pod_spec_of(pod_spec)
    containers = spec.get("containers") or []
    names = [c.get("name") for c in containers]
    if name:
        for idx, c in enumerate(containers):
            if c.get("name") == name:
                return idx, c
        raise ContainerError(
            "CONTAINER_NOT_FOUND",
            f"container {name!r} is not in the pod spec (containers: {names}); set the container variable to the "
            "name of the container that runs `mlflow server`, or leave it empty to find it",
            {"container": name, "containers": names},
        )
    idx, c, _how = _the_one(spec, containers, names)
    return idx, c


def _the_one(spec, containers, names):
    if not containers:
        raise ContainerError(
            "NO_MLFLOW_CONTAINER", "the pod spec has no containers; pass the whole Deployment object", {"containers": []}
        )
    found, others = _scan(spec)
    if not found:
        raise ContainerError(
            "NO_MLFLOW_CONTAINER",
            "no container runs `mlflow server`. Found: "
            + "; ".join(others)
            + ". Give the MLflow container an explicit command, e.g. command: [mlflow, server] with flags in "
            "args, or a /bin/sh -c script that runs `mlflow server ...`",
            {"containers": names},
        )
    if len(found) > 1:
        running = [f[1].get("name") for f in found]
        raise ContainerError(
            "SEVERAL_MLFLOW_CONTAINERS",
            "several containers run `mlflow server`: "
            + ", ".join(repr(n) for n in running)
            + "; set the container variable to the one to use",
            {"containers": names, "running_mlflow_server": running},
        )
    return found[0]


def server_container(pod_spec, name=None):
    """``(index, container, how)`` like :func:`mlflow_container`, and the container must run ``mlflow server``
    as parsed (its settings are read from its command): ``NO_MLFLOW_CONTAINER`` for a named one that does not."""
    spec = pod_spec_of(pod_spec)
    containers = spec.get("containers") or []
    names = [c.get("name") for c in containers]
    if not name:
        return _the_one(spec, containers, names)
    idx, c = mlflow_container(spec, name)
    how, why = runs_mlflow_server(c)
    if not how:
        running = [f[1].get("name") for f in _scan(spec)[0]]
        raise ContainerError(
            "NO_MLFLOW_CONTAINER",
            f"container {name!r} does not run `mlflow server` ({why}); running mlflow server: {running}. "
            "Set the container variable to the name of the container that runs `mlflow server`",
            {"container": name, "containers": names, "running_mlflow_server": running},
        )
    return idx, c, how


# --------------------------------------------------------------------------------------------------
# The command line, flag by flag
# --------------------------------------------------------------------------------------------------
class Occ:
    """One occurrence of a server flag on the command line."""

    __slots__ = ("name", "flag", "form", "flag_word", "value_word", "value_offset", "seq")

    def __init__(self, name, flag, form, flag_word, value_word=None, value_offset=0, seq=0):
        self.name = name
        self.flag = flag
        self.form = form  # "eq" (--f=v), "split" (--f v), "attached" (-p5000), "bool"
        self.flag_word = flag_word  # index into ServerCommand.words
        self.value_word = value_word  # index into ServerCommand.words (may equal flag_word)
        self.value_offset = value_offset  # where the value starts inside the cooked value word
        self.seq = seq


class ServerCommand:
    """The ``mlflow server`` command of one container: its words and every flag occurrence."""

    def __init__(self, container_name):
        self.container_name = container_name
        self.form = None  # "argv" | "script"
        self.script_loc = None  # (field, index) of the script string
        self.shell = None
        self.script = None
        self.argv = []  # [(field, index)] for argv form
        self.words = []  # Word list of the mlflow command (after "server")
        self.word_locs = []  # per word: (field, index) for argv form, None for script
        self.prog_words = []  # words up to and including "server"
        self.occurrences = {}  # name -> [Occ]
        self.opaque = []  # words that may inject flags ($EXTRA_ARGS, "$@")
        self.warnings = []
        self.flag_style = "eq"

    def flag_value(self, name):
        """The value of the last occurrence of flag ``name`` (the flag itself for a boolean flag); None if absent."""
        occs = self.occurrences.get(name) or []
        if not occs:
            return None
        occ = occs[-1]
        if occ.form == "bool":
            return occ.flag
        w = self.words[occ.value_word]
        return w.value[occ.value_offset :]

    def where(self, occ):
        """Where an occurrence is, for messages: ``args[2]`` or ``args[0] script line 7 chars 187-250``."""
        w = self.words[occ.flag_word]
        if self.form == "script":
            field, idx = self.script_loc
            line = self.script.count("\n", 0, w.start) + 1
            vw = self.words[occ.flag_word if occ.value_word is None else occ.value_word]
            return f"{field}[{idx}] script line {line} chars {w.start}-{vw.end}"
        field, idx = self.word_locs[occ.flag_word]
        return f"{field}[{idx}]"


def parse_command(container, how):
    """The :class:`ServerCommand` of a container that runs ``mlflow server`` (``how`` from
    :func:`runs_mlflow_server` / :func:`server_container`)."""
    cmd = ServerCommand(container.get("name"))
    locs = [("command", i) for i in range(len(container.get("command") or []))]
    locs += [("args", i) for i in range(len(container.get("args") or []))]
    argv = _argv(container)
    form, sidx = how
    if form == "script":
        cmd.form = "script"
        cmd.script_loc = locs[sidx]
        cmd.shell = argv[:sidx]
        cmd.script = argv[sidx]
        hits = [c for c in simple_commands(lex(cmd.script)) if match_mlflow([w.value for w in c]) is not None]
        if len(hits) > 1:
            raise MlflowSettingsError(
                f"the script in container {cmd.container_name!r} {locs[sidx][0]}[{locs[sidx][1]}] runs "
                f"`mlflow server` {len(hits)} times (e.g. in if/else branches); cannot tell which one is "
                "effective. Keep a single `mlflow server` command in the script"
            )
        words = hits[0]
        start = match_mlflow([w.value for w in words])
        for w in words[:start]:
            if w.cmdsub:
                raise MlflowSettingsError(
                    f"the mlflow command in container {cmd.container_name!r} uses a command substitution "
                    f"({w.value!r}); write the program name literally"
                )
        cmd.prog_words = words[:start]
        cmd.words = words[start:]
        cmd.word_locs = [None] * len(cmd.words)
    else:
        cmd.form = "argv"
        start = match_mlflow(argv)
        cmd.prog_words = [literal_word(a) for a in argv[:start]]
        cmd.argv = locs
        cmd.words = [literal_word(a) for a in argv[start:]]
        cmd.word_locs = locs[start:]
    _parse_flags(cmd)
    return cmd


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
            name = FLAG_TO_NAME.get(flag)
            if name is None:
                p.warnings.append(f"unknown mlflow server flag {flag!r} kept as is")
                if not has_eq and i + 1 < len(words) and not words[i + 1].value.startswith("-"):
                    i += 1
                i += 1
                continue
            takes = SERVER_OPTIONS[name][3]
            if not takes:
                p.occurrences.setdefault(name, []).append(Occ(name, flag, "bool", i, None, 0, seq))
            elif has_eq:
                eq += 1
                p.occurrences.setdefault(name, []).append(Occ(name, flag, "eq", i, i, len(flag) + 1, seq))
            else:
                if i + 1 >= len(words):
                    raise MlflowSettingsError(
                        f"mlflow server flag {flag} has no value at the end of the command in container "
                        f"{p.container_name!r}; give it as {flag}=VALUE"
                    )
                split += 1
                p.occurrences.setdefault(name, []).append(Occ(name, flag, "split", i, i + 1, 0, seq))
                i += 1
            seq += 1
            i += 1
            continue
        if v.startswith("-") and len(v) >= 2:
            flag = v[:2]
            name = FLAG_TO_NAME.get(flag)
            if name is None:
                p.warnings.append(f"unknown mlflow server flag {v!r} kept as is")
                i += 1
                continue
            if len(v) > 2:
                off = 3 if v[2] == "=" else 2
                p.occurrences.setdefault(name, []).append(Occ(name, flag, "attached", i, i, off, seq))
            else:
                if i + 1 >= len(words):
                    raise MlflowSettingsError(f"mlflow server flag {flag} has no value; give it as {flag} VALUE")
                p.occurrences.setdefault(name, []).append(Occ(name, flag, "split", i, i + 1, 0, seq))
                i += 1
            seq += 1
            i += 1
            continue
        p.warnings.append(f"unexpected word {v!r} on the mlflow server command line kept as is")
        i += 1
    p.flag_style = "split" if split > eq else "eq"
