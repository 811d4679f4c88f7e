# Copyright: (c) 2026, asgard.mlflow contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters of playbooks/fleet.yml: the fleet report, its Markdown table and what is published to AWX."""

from __future__ import annotations

try:
    from ansible_collections.asgard.mlflow.plugins.plugin_utils._filters import filter_errors, rules
except ImportError:  # pragma: no cover - when loaded outside a collection tree
    from ..plugin_utils._filters import filter_errors, rules  # type: ignore[no-redef]

# the rules are imported when a filter runs (why: plugin_utils/_filters.py rules()); _fleet_report.FleetReportError
# is a ValueError
_wrap = filter_errors(ValueError, KeyError, TypeError)


@_wrap
def fleet_report(instances, discovery_failures=None, meta=None):
    return rules("_fleet_report").build(instances, discovery_failures, meta)


@_wrap
def fleet_report_markdown(report):
    return rules("_fleet_report").markdown(report)


@_wrap
def fleet_report_failure(report):
    return rules("_fleet_report").failure_message(report)


@_wrap
def fleet_stats(report, query):
    return rules("_fleet_report").stats(report, query)


class FilterModule:
    def filters(self):
        return {
            "fleet_report": fleet_report,
            "fleet_report_markdown": fleet_report_markdown,
            "fleet_report_failure": fleet_report_failure,
            "fleet_stats": fleet_stats,
        }
