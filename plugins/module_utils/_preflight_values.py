# Copyright: (c) 2026, asgard.mlflow contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: how the roles' preflights (_deploy_preflight, _patch_preflight) read a variable as an operator gave it and
show it in a message. Pure Python."""

from __future__ import annotations

import json
import re

_WHOLE = re.compile(r"[0-9]+")


def shown(value) -> str:
    """A value as the roles' messages show it (Ansible's ``to_json``)."""
    return json.dumps(value, default=str)


def full(pattern: re.Pattern, value) -> bool:
    """``value`` is a string and the whole of it matches ``pattern``."""
    return isinstance(value, str) and pattern.fullmatch(value) is not None


def whole(value) -> int | None:
    """The integer an operator gave (a number or its digits as a string, not a boolean), None when it is not one."""
    if isinstance(value, bool):
        return None
    text = str(value)
    return int(text) if _WHOLE.fullmatch(text) else None


def is_list(value) -> bool:
    return isinstance(value, list | tuple)
