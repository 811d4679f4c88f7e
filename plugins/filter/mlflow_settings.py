# Copyright: (c) 2026, asgard.mlflow contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters over plugins/module_utils/_settings.py and _compliance.py: read MLflow server settings, check and patch them.

Documentation of each filter: mlflow_server_settings.yml, mlflow_compliance.yml (ansible-doc -t filter).
"""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

try:
    from ansible_collections.asgard.mlflow.plugins.module_utils._errors import MlflowSettingsError
    from ansible_collections.asgard.mlflow.plugins.module_utils._plain import plain as _plain
    from ansible_collections.asgard.mlflow.plugins.plugin_utils._filters import rules
except ImportError:  # pragma: no cover - when loaded outside a collection tree
    from ..module_utils._errors import MlflowSettingsError  # type: ignore[no-redef]
    from ..module_utils._plain import plain as _plain  # type: ignore[no-redef]
    from ..plugin_utils._filters import rules  # type: ignore[no-redef]

# _settings and _compliance are imported when a filter runs (why: plugin_utils/_filters.py rules())


def _configmaps(configmaps):
    if configmaps is None:
        return []
    if isinstance(configmaps, dict) and "resources" in configmaps:  # a k8s_info result
        configmaps = configmaps["resources"]
    if not isinstance(configmaps, list | tuple):
        raise AnsibleFilterError(
            f"configmaps: expected a list of ConfigMap objects (k8s_info resources), got {type(configmaps).__name__}"
        )
    return _plain(list(configmaps))


def _deployment(deployment):
    if isinstance(deployment, dict) and "resources" in deployment and "spec" not in deployment:
        resources = deployment.get("resources") or []
        if len(resources) != 1:
            raise AnsibleFilterError(
                f"deployment: the k8s_info result holds {len(resources)} objects; expected exactly one Deployment"
            )
        deployment = resources[0]
    return _plain(deployment)


def mlflow_server_settings(deployment, configmaps=None, mlflow_version=None, container=None):
    """Effective `mlflow server` settings of a Deployment, with where each one is set."""
    try:
        return rules("_settings").server_settings(_deployment(deployment), _configmaps(configmaps), mlflow_version, container)
    except MlflowSettingsError as exc:
        raise AnsibleFilterError(f"asgard.mlflow.mlflow_server_settings: {exc}") from exc


def mlflow_compliance(deployment, targets=None, configmaps=None):
    """Compare a Deployment with target settings; the minimal JSON patch that makes it comply."""
    if targets is not None and not isinstance(targets, dict):
        raise AnsibleFilterError(f"targets: expected a dict of target settings, got {type(targets).__name__}")
    try:
        return rules("_compliance").compliance(_deployment(deployment), _plain(targets or {}), _configmaps(configmaps))
    except MlflowSettingsError as exc:
        raise AnsibleFilterError(f"asgard.mlflow.mlflow_compliance: {exc}") from exc


class FilterModule:
    """asgard.mlflow MLflow server-settings filters."""

    def filters(self):
        return {
            "mlflow_server_settings": mlflow_server_settings,
            "mlflow_compliance": mlflow_compliance,
        }
