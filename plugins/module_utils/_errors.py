# Copyright: (c) 2026, asgard.mlflow contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: the exceptions of the MLflow settings modules (``_shell``, ``_server_command``, ``_settings``, ...).

Pure Python. Also copied next to the background port forwarder (``_forwarder.RUNTIME_MODULES``).
"""

from __future__ import annotations


class MlflowSettingsError(ValueError):
    """Bad input: the message says what was found and what to do."""


class ContainerError(MlflowSettingsError):
    """The one-container rule failed. ``code`` is a stable finding code.

    ``NO_MLFLOW_CONTAINER`` (no container runs ``mlflow server``, or the named one does not),
    ``SEVERAL_MLFLOW_CONTAINERS`` (more than one does and none was named), ``CONTAINER_NOT_FOUND`` (the named
    container is not in the pod spec).
    """

    def __init__(self, code: str, message: str, evidence: dict | None = None):
        super().__init__(message)
        self.code = code
        self.evidence = evidence or {}
