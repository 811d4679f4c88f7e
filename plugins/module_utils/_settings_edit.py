# Copyright: (c) 2026, asgard.mlflow contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: minimal edits of the MLflow container (command/args words, script spans, env entries).

:class:`Editor` collects edits on a :class:`_settings.ParsedServer` and renders the new container; everything
not edited stays byte-identical (a script keeps its quoting, continuations and other commands). The helpers
:func:`ensure_setting` / :func:`remove_setting` make an ``mlflow server`` setting take a value, or remove it,
where it lives (flag, literal env var, or a new flag); :func:`opts_edits` edits a server options string.

Pure Python.
"""

from __future__ import annotations

import copy
import re

from ansible_collections.asgard.mlflow.plugins.module_utils._errors import MlflowSettingsError
from ansible_collections.asgard.mlflow.plugins.module_utils._mlflow_rules import SERVER_OPTIONS
from ansible_collections.asgard.mlflow.plugins.module_utils._redact import redact
from ansible_collections.asgard.mlflow.plugins.module_utils._settings import parse_server_opts, resolve_expansion
from ansible_collections.asgard.mlflow.plugins.module_utils._shell import (
    apply_string_edits,
    char_fits,
    raw_edits,
    sh_quote,
)


class Editor:
    """Collects minimal edits on the container and renders them."""

    def __init__(self, p):
        self.p = p
        self.cmd = p.cmd
        self.script_edits = []  # (start, end, text) on cmd.script
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
        cmd = self.cmd
        w = cmd.words[widx]
        if cmd.form == "argv":
            self.list_sets[cmd.word_locs[widx]] = apply_string_edits(w.value, edits)
            return
        raw = raw_edits(cmd.script, w, edits)
        if raw is not None:
            self.script_edits.extend(raw)
            return
        if w.expansion:
            raise MlflowSettingsError(
                f"cannot safely rewrite {cmd.script[w.start : w.end]!r} in the script of container "
                f"{cmd.container_name!r}: it uses shell expansions in a way that needs requoting. "
                "Write this flag value literally, or switch the corresponding target off"
            )
        new_value = apply_string_edits(w.value, edits)
        style = None
        if any(ch[2].startswith("dq") for ch in w.chars):
            style = "dq"
        elif any(ch[2] == "sq" for ch in w.chars):
            style = "sq"
        # keep a literal flag prefix unquoted: --flag="value"
        flag_part = ""
        m = re.match(r"^(--?[A-Za-z0-9-]+=)", new_value)
        if m and cmd.script[w.start : w.start + len(m.group(1))] == m.group(1):
            flag_part = m.group(1)
        self.script_edits.append((w.start, w.end, flag_part + sh_quote(new_value[len(flag_part) :], style)))

    def set_value(self, occ, new_value):
        w = self.cmd.words[occ.value_word]
        old = w.value[occ.value_offset :]
        if old == new_value:
            return
        self.replace_in_word(occ.value_word, [(occ.value_offset, len(w.value), new_value)])

    def remove_occ(self, occ):
        cmd = self.cmd
        idxs = [occ.flag_word]
        if occ.value_word is not None and occ.value_word != occ.flag_word:
            idxs.append(occ.value_word)
        if cmd.form == "argv":
            for i in idxs:
                self.list_removes.add(cmd.word_locs[i])
            return
        last = cmd.words[idxs[-1]]
        # remove the separator before the flag (whitespace/continuations), keep the rest byte-identical
        self.script_edits.append((self._prev_end(idxs[0]), last.end, ""))

    def _prev_end(self, widx):
        cmd = self.cmd
        if widx > 0:
            return cmd.words[widx - 1].end
        return cmd.prog_words[-1].end

    def add_flag(self, flag, value):
        """Append ``flag`` (with ``value`` unless None) after the last mlflow word."""
        cmd = self.cmd
        if cmd.form == "argv":
            if value is None:
                self.list_appends.append(flag)
            elif cmd.flag_style == "split":
                self.list_appends.extend([flag, value])
            else:
                self.list_appends.append(f"{flag}={value}")
            return
        if value is None:
            word = flag
        elif cmd.flag_style == "split":
            word = f"{flag} {sh_quote(value)}"
        else:
            word = f"{flag}={sh_quote(value)}"
        self.script_appends.append(word)

    # ---- rendering ----------------------------------------------------------------------------
    def render_container(self):
        cmd = self.cmd
        c = copy.deepcopy(self.p.container)
        for widx, edits in sorted(self.word_edits.items()):
            self._render_word(widx, edits)
        if cmd.form == "script" and (self.script_edits or self.script_appends):
            edits = list(self.script_edits)
            if self.script_appends:
                last = cmd.words[-1] if cmd.words else cmd.prog_words[-1]
                sep = self._separator()
                edits.append((last.end, last.end, "".join(sep + a for a in self.script_appends)))
            text = cmd.script
            # apply from the end; inserts (zero width) at a point go after removals ending there
            for start, end, new in sorted(edits, key=lambda e: (e[0], e[1]), reverse=True):
                text = text[:start] + new + text[end:]
            field, idx = cmd.script_loc
            c[field][idx] = text
        if cmd.form == "argv" and (self.list_sets or self.list_removes or self.list_appends):
            for (field, idx), val in self.list_sets.items():
                c[field][idx] = val
            for field in ("command", "args"):
                if field in c and c[field] is not None:
                    c[field] = [v for i, v in enumerate(c[field]) if (field, i) not in self.list_removes]
            if self.list_appends:
                field = cmd.word_locs[-1][0] if cmd.word_locs else cmd.argv[-1][0]
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
        cmd = self.cmd
        seq = list(cmd.prog_words) + list(cmd.words)
        for i in range(len(seq) - 1, 0, -1):
            gap = cmd.script[seq[i - 1].end : seq[i].start]
            if "\\\n" in gap:
                return gap
        return " "


def opts_edits(opts, table, desired):
    """Edits on an options string so that option keys get the desired values.

    ``desired``: key -> (flag to add, value, add_if_missing). Existing occurrences are edited in place
    (quoting kept), missing ones appended as ``--flag value``. Returns [(start, end, new)] on ``opts``.
    """
    _values, words, occ = parse_server_opts(opts, table, ())
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
                and all(char_fits(ch, seg[0][2]) for ch in value)
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


def ensure_setting(ed, name, value, current, force_flag=False):
    """Make setting ``name`` take ``value``: edit the flag in place, else the literal env, else add a flag."""
    p = ed.p
    cmd = p.cmd
    occs = cmd.occurrences.get(name) or []
    longf = SERVER_OPTIONS[name][0][0]
    if occs:
        last = occs[-1]
        w = cmd.words[last.value_word]
        old = w.value[last.value_offset :]
        if w.expansion and resolve_expansion(p, old) == value:
            return
        if old != value:
            ed.set_value(last, value)
            ed.changes.append(f"{longf}: {redact(old)} -> {value} ({cmd.where(last)})")
        for occ in occs[:-1]:
            ed.remove_occ(occ)
            ed.changes.append(f"{longf}: removed duplicate occurrence ({cmd.where(occ)})")
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


def remove_setting(ed, name):
    """Remove setting ``name`` everywhere: every flag occurrence, the env var (or override an envFrom one)."""
    p = ed.p
    cmd = p.cmd
    longf = SERVER_OPTIONS[name][0][0]
    for occ in cmd.occurrences.get(name) or []:
        ed.remove_occ(occ)
        ed.changes.append(f"{longf}: {redact(cmd.flag_value(name))} -> removed ({cmd.where(occ)})")
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
