# Copyright: (c) 2026, asgard.mlflow contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: a small POSIX shell lexer that keeps track of where every character came from, and quoting helpers.

Used to read (and minimally edit) the ``mlflow server`` command of a container: ``sh -c`` scripts with
backslash continuations, quotes and ``$VAR`` expansions, and server option strings (``--gunicorn-opts``) that
MLflow splits with ``shlex.split``. Every cooked character of a :class:`Word` remembers its raw span and quoting
context, so an edit of a value can be written back with the script's own quoting (``raw_edits``).

Pure Python. Also copied next to the background port forwarder (``_forwarder.RUNTIME_MODULES``).
"""

from __future__ import annotations

import re

from ansible_collections.asgard.mlflow.plugins.module_utils._errors import MlflowSettingsError


class Word:
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
        return f"Word({self.value!r}, {self.start}, {self.end})"


_OPS = ("&&", "||", ";;", ";", "&", "|", "(", ")")
_REDIR_RE = re.compile(r"\d*(<<-?|>>|>&|<&|<>|>\||>|<)")


def lex(text, shell=True):
    """Split ``text`` into words and operators.

    ``shell=True``: POSIX sh rules (operators, newlines, comments, ``$`` expansions kept literally and
    flagged). ``shell=False``: ``shlex.split`` rules as MLflow applies them to ``--gunicorn-opts``.
    Returns a list of tokens: ``Word`` or tuples ``("op", text, start, end)``.
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
        if mark and isinstance(t, Word):
            t.redir_target = True
        mark = False
        out.append(t)
    return out


def _lex_word(text, i, tokens, shell):
    n = len(text)
    w = Word(i)
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
                    f"unterminated single quote at character {i} in {excerpt(text, i)!r}: fix the quoting"
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
                        f"unterminated double quote in {excerpt(text, w.start)!r}: fix the quoting"
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


def excerpt(text, pos, width=60):
    a = max(0, pos - 20)
    return text[a : a + width]


def split_opts(opts):
    """Split a server options string exactly like ``shlex.split`` (MLflow does), keeping spans."""
    return [t for t in lex(opts or "", shell=False) if isinstance(t, Word)]


def literal_word(value):
    w = Word(0)
    w.value = value
    w.end = len(value)
    w.chars = [(k, k + 1, "lit") for k in range(len(value))]
    return w


_SAFE_BARE = re.compile(r"^[A-Za-z0-9_@%+=:,./-]+$")


def sh_quote(value, prefer=None):
    """Quote ``value`` for a POSIX shell, in the preferred style when possible."""
    if value and _SAFE_BARE.match(value) and prefer not in ("dq", "sq"):
        return value
    if prefer != "sq" and not re.search(r'["\\$`]', value):
        return f'"{value}"'
    if "'" not in value:
        return f"'{value}'"
    return "'" + value.replace("'", "'\"'\"'") + "'"


def char_fits(ch, ctx):
    if ctx == "lit":
        return True
    if ctx == "sq":
        return ch != "'"
    if ctx in ("dq", "dqesc"):
        return ch not in '"\\$`'
    # bare / esc
    return bool(_SAFE_BARE.match(ch))


def simple_commands(tokens):
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


def apply_string_edits(value, edits):
    for start, end, new in sorted(edits, key=lambda e: (e[0], e[1]), reverse=True):
        value = value[:start] + new + value[end:]
    return value


def raw_edits(script, w, edits):
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
            if not all(char_fits(ch, ctx) for ch in new):
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
            if not all(char_fits(ch, ctx) for ch in new):
                return None
            out.append((pos, pos, new))
    return out


def shorten(s, n=100):
    s = s.replace("\n", "\\n")
    return s if len(s) <= n else s[: n - 3] + "..."
