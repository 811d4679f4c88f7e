"""Reading `ansible-inventory --list` output in tests (the mlflow_servers inventory plugin, unit and lab)."""

from __future__ import annotations

import json


def listing(proc) -> dict:
    """The JSON of an ``ansible-inventory --list`` run (``-v`` prints the version and config before it)."""
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    start = 0 if out.startswith("{") else out.index("\n{") + 1
    return json.loads(out[start:])


def plain(value):
    """ansible-inventory marks values that are not trusted templates as {"__ansible_unsafe": ...}: unwrap them."""
    if isinstance(value, dict):
        if set(value) == {"__ansible_unsafe"}:
            return value["__ansible_unsafe"]
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value
