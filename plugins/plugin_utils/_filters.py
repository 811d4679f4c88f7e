# Copyright: (c) 2026, asgard.mlflow contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What every filter of the collection does around its rule: arguments turned into plain Python values (Ansible's
lazy/tagged types out), and the rule's own errors turned into an AnsibleFilterError that names the filter."""

from __future__ import annotations

import functools

from ansible.errors import AnsibleFilterError

try:
    from ansible_collections.asgard.mlflow.plugins.module_utils._plain import plain
except ImportError:  # pragma: no cover - when loaded outside a collection tree
    from ..module_utils._plain import plain  # type: ignore[no-redef]


def filter_errors(*errors: type[BaseException]):
    """Decorator: call the filter with plain arguments; ``errors`` raised by it become AnsibleFilterError
    ("asgard.mlflow.<filter>: <message>")."""

    def wrap(func):
        @functools.wraps(func)
        def inner(*args, **kwargs):
            args = [plain(a) for a in args]
            kwargs = {k: plain(v) for k, v in kwargs.items()}
            try:
                return func(*args, **kwargs)
            except errors as exc:
                raise AnsibleFilterError(f"asgard.mlflow.{func.__name__}: {exc}") from exc

        return inner

    return wrap
