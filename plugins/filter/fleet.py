# Copyright: (c) 2026, asgard.mlflow contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters of playbooks/fleet.yml: the fleet report, its Markdown table and what is published to AWX."""

from __future__ import annotations

try:
    from ansible_collections.asgard.mlflow.plugins.module_utils import _fleet_report as F
    from ansible_collections.asgard.mlflow.plugins.plugin_utils._filters import filter_errors
except ImportError:  # pragma: no cover - when loaded outside a collection tree
    from ..module_utils import _fleet_report as F  # type: ignore[no-redef]
    from ..plugin_utils._filters import filter_errors  # type: ignore[no-redef]


_wrap = filter_errors(F.FleetReportError, KeyError, TypeError)


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
