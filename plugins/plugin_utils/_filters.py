# Copyright: (c) 2026, asgard.mlflow contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What every filter of the collection does around its rule: arguments turned into plain Python values (Ansible's
lazy/tagged types out), and the rule's own errors turned into an AnsibleFilterError that names the filter; and how a
filter file reaches its rules (``rules``)."""

from __future__ import annotations

import functools
import importlib

from ansible.errors import AnsibleFilterError

try:
    from ansible_collections.asgard.mlflow.plugins.module_utils._plain import plain
except ImportError:  # pragma: no cover - when loaded outside a collection tree
    from ..module_utils._plain import plain  # type: ignore[no-redef]


def rules(name: str):
    """The collection's ``module_utils/<name>``, imported when a filter runs, not when its filter file is loaded.

    To find one filter, Ansible loads every filter file of the collection (ansible-core's Jinja2Loader walks the
    whole ``plugins/filter`` package), in every process that templates one (the play and each task's worker), and
    its collection loader compiles module_utils from source each time (it keeps no bytecode). With the rules
    imported at the top of the filter files, every deploy, patch or verify run compiled the rules of all three roles
    and the fleet in each of those processes: ~0.26 cpu-s of an idempotent deploy.yml, ~0.15 of a healthy verify.yml.
    """
    return importlib.import_module(f"..module_utils.{name}", __package__)


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
