# Copyright: (c) 2025, asgard.mlflow contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters of the verify role: API objects -> findings -> remediation plan -> report."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

try:
    from ansible_collections.asgard.mlflow.plugins.module_utils import _verify as V
    from ansible_collections.asgard.mlflow.plugins.module_utils._plain import plain as _plain
except ImportError:  # pragma: no cover - when loaded outside a collection tree
    from ..module_utils import _verify as V  # type: ignore[no-redef]
    from ..module_utils._plain import plain as _plain  # type: ignore[no-redef]


def _wrap(func):
    def inner(*args, **kwargs):
        args = [_plain(a) for a in args]
        kwargs = {k: _plain(v) for k, v in kwargs.items()}
        try:
            return func(*args, **kwargs)
        except V.VerifyError as exc:
            raise AnsibleFilterError(f"asgard.mlflow.{func.__name__}: {exc}") from exc
    inner.__name__ = func.__name__
    inner.__doc__ = func.__doc__
    return inner


@_wrap
def verify_pod_status(pods, deployment=None, **kw):
    return V.pod_status(pods, deployment, **kw)


@_wrap
def verify_log_scan(logs, patterns=None, **kw):
    return V.log_scan(logs, patterns, **kw)


@_wrap
def verify_service(service, pods=None, deployment=None, endpoints=None, endpoint_slices=None, **kw):
    return V.service_connectivity(service, pods, deployment, endpoints, endpoint_slices, **kw)


@_wrap
def verify_probe(probe):
    return V.probe_result(probe)


# step 4b: the deep check (mlflow_probe transaction: true)
@_wrap
def verify_transaction(probe, skipped_reason=""):
    return V.transaction_result(probe, skipped_reason=skipped_reason or "")


@_wrap
def verify_settings(settings, **kw):
    return V.settings_findings(settings, **kw)


@_wrap
def verify_probe_prefix(probe_step, expected_static_prefix=None):
    return V.probe_expected_prefix(probe_step, expected_static_prefix)


@_wrap
def verify_normalize_settings(settings):
    return V.normalize_settings(settings)


@_wrap
def verify_plan(steps, settings=None, **kw):
    return V.plan(steps, settings, **kw)


@_wrap
def verify_report(before, after=None, **kw):
    return V.build_report(before, after, **kw)


@_wrap
def verify_report_text(report):
    return V.render_text(report)


@_wrap
def verify_report_markdown(report):
    return V.render_markdown(report)


@_wrap
def verify_unattended(hostvars=None, environ=None):
    return V.unattended(environ, hostvars if isinstance(hostvars, dict) else None)


@_wrap
def verify_redact(text, limit=400):
    return V.redact(text, limit)


@_wrap
def verify_configmap_refs(deployment):
    return V.configmap_refs(deployment)


@_wrap
def verify_log_targets(pods, container=None, previous=True):
    return V.log_targets(pods, container or None, previous)


@_wrap
def verify_migration_job(deployment, settings=None, **kw):
    return V.migration_job(deployment, settings, **kw)


@_wrap
def verify_match_labels(deployment):
    return V.match_labels(deployment)


class FilterModule:
    def filters(self):
        return {f.__name__: f for f in (
            verify_pod_status, verify_log_scan, verify_service, verify_probe, verify_settings,
            verify_normalize_settings, verify_plan, verify_report, verify_report_text, verify_report_markdown,
            verify_unattended, verify_redact, verify_configmap_refs, verify_log_targets, verify_migration_job,
            verify_match_labels, verify_transaction, verify_probe_prefix)}
