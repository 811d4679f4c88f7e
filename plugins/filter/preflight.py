# Copyright: (c) 2026, asgard.mlflow contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters of the deploy and patch roles: their variables checked once, before the first API call, every bad one
reported at once (the rules: plugins/module_utils/_deploy_preflight.py and _patch_preflight.py).

Documentation: deploy_preflight.yml and patch_preflight.yml next to this file (ansible-doc -t filter).
"""

from __future__ import annotations

try:
    from ansible_collections.asgard.mlflow.plugins.plugin_utils._filters import filter_errors, rules
except ImportError:  # pragma: no cover - when loaded outside a collection tree
    from ..plugin_utils._filters import filter_errors, rules  # type: ignore[no-redef]


def _mapping(variables, role):
    if not isinstance(variables, dict):
        raise ValueError(f"expected a mapping of {role}_* variables, got {type(variables).__name__}")
    return variables


@filter_errors(ValueError)
def deploy_preflight(variables, derived=None):
    return rules("_deploy_preflight").errors(_mapping(variables, "deploy"), derived if isinstance(derived, dict) else None)


@filter_errors(ValueError)
def patch_preflight(variables):
    return rules("_patch_preflight").errors(_mapping(variables, "patch"))


class FilterModule:
    def filters(self):
        return {"deploy_preflight": deploy_preflight, "patch_preflight": patch_preflight}
