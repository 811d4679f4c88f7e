# Copyright: (c) 2026, asgard.mlflow contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Turn Ansible's lazy/tagged containers into plain data before module_utils code sees them."""

from __future__ import annotations


def plain(value):
    """Ansible containers (lazy/tagged) -> plain dicts, lists and str."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, str):
        return str(value)
    return value
