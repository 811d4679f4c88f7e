# Copyright: (c) 2025, asgard.mlflow contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters of the verify role: the report at the end of a run, its renderers, and three helpers the role needs
(redaction, AWX/CI detection, the migration Job). The checks and the plan are the module asgard.mlflow.mlflow_verify.

Documentation of each filter: verify_*.yml next to this file (ansible-doc -t filter).
"""

from __future__ import annotations

try:
    from ansible_collections.asgard.mlflow.plugins.plugin_utils._filters import filter_errors, rules
except ImportError:  # pragma: no cover - when loaded outside a collection tree
    from ..plugin_utils._filters import filter_errors, rules  # type: ignore[no-redef]

# the rules are imported when a filter runs (why: plugin_utils/_filters.py rules()); _verify_data.VerifyError is a
# ValueError
_wrap = filter_errors(ValueError)


@_wrap
def verify_report(result, port_forward=None, lock=None, port_forward_enabled=True, fail_when_unhealthy=True,
                  address="127.0.0.1", local_port=5000):
    return rules("_verify_finish").finish(result, port_forward=port_forward, lock=lock,
                                          port_forward_enabled=port_forward_enabled,
                                          fail_when_unhealthy=fail_when_unhealthy, address=address,
                                          local_port=local_port)


@_wrap
def verify_report_text(report):
    return rules("_verify_render").render_text(report)


@_wrap
def verify_report_markdown(report):
    return rules("_verify_render").render_markdown(report)


@_wrap
def verify_redact(text, limit=400):
    return rules("_redact").redact("" if text is None else str(text), limit=int(limit)) or ""


@_wrap
def verify_unattended(hostvars=None, environ=None):
    return rules("_verify_env").unattended(environ, hostvars if isinstance(hostvars, dict) else None)


@_wrap
def verify_migration_job(deployment, container=None, name="", active_deadline_seconds=None):
    return rules("_migration_job").migration_job(deployment, container=container or None, name=name or "",
                                                 active_deadline_seconds=active_deadline_seconds)


class FilterModule:
    def filters(self):
        return {f.__name__: f for f in (verify_report, verify_report_text, verify_report_markdown, verify_redact,
                                        verify_unattended, verify_migration_job)}
