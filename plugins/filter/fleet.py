# Copyright: (c) 2026, asgard.mlflow contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters of playbooks/fleet.yml: the fleet report, its Markdown table and what is published to AWX."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

try:
    from ansible_collections.asgard.mlflow.plugins.module_utils import _fleet_report as F
    from ansible_collections.asgard.mlflow.plugins.module_utils._plain import plain as _plain
except ImportError:  # pragma: no cover - when loaded outside a collection tree
    from ..module_utils import _fleet_report as F  # type: ignore[no-redef]
    from ..module_utils._plain import plain as _plain  # type: ignore[no-redef]


def _wrap(func):
    def inner(*args, **kwargs):
        args = [_plain(a) for a in args]
        kwargs = {k: _plain(v) for k, v in kwargs.items()}
        try:
            return func(*args, **kwargs)
        except (F.FleetReportError, KeyError, TypeError) as exc:
            raise AnsibleFilterError(f"asgard.mlflow.{func.__name__}: {exc}") from exc
    inner.__name__ = func.__name__
    inner.__doc__ = func.__doc__
    return inner


@_wrap
def fleet_report(instances, discovery_failures=None, meta=None):
    return F.build(instances, discovery_failures, meta)


@_wrap
def fleet_report_markdown(report):
    return F.markdown(report)


@_wrap
def fleet_report_failure(report):
    return F.failure_message(report)


@_wrap
def fleet_stats(report, query):
    return F.stats(report, query)


class FilterModule:
    def filters(self):
        return {
            "fleet_report": fleet_report,
            "fleet_report_markdown": fleet_report_markdown,
            "fleet_report_failure": fleet_report_failure,
            "fleet_stats": fleet_stats,
        }
