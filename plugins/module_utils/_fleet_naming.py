# Copyright: (c) 2026, asgard.mlflow contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: how the ``asgard.mlflow.mlflow_servers`` inventory names, groups and selects MLflow instances.

- :data:`DEFAULT_HOST_NAME`: the host name expression (Jinja, over the instance facts of ``_discovery``):
  ``<cluster>/<namespace>/<deployment>``.
- :func:`default_groups`: ``mlflow_servers`` (every instance), ``mlflow_cluster_<cluster>``,
  ``mlflow_namespace_<namespace>``, ``mlflow_version_<3_17_2>`` (``unknown`` when the image tag does not say),
  ``mlflow_server_<gunicorn|uvicorn|waitress|unknown>``; :data:`DISCOVERY_FAILED_GROUP` holds one host per
  cluster whose discovery failed (named after the cluster).
- :func:`host_vars`: what the roles need (``verify_namespace``, ``verify_deployment``, ``verify_service``,
  ``verify_service_port``, ``verify_container``, the connection's references) and the other facts as
  ``mlflow_<fact>`` (``mlflow_version`` keeps its name).
- :class:`InstanceFilter`: the ``instance_filter`` option, a JMESPath expression over the facts; an instance is
  kept when it evaluates to a truthy value.

Pure Python (jmespath, one of the collection's requirements).
"""

from __future__ import annotations

import re

DEFAULT_HOST_NAME = "cluster ~ '/' ~ namespace ~ '/' ~ deployment"
ALL_GROUP = "mlflow_servers"
DISCOVERY_FAILED_GROUP = "mlflow_discovery_failed"
_UNSAFE = re.compile(r"[^A-Za-z0-9_]")
# facts -> host variable (the rest of the facts are mlflow_<fact>)
ROLE_FACTS = {"namespace": "verify_namespace", "deployment": "verify_deployment"}


class FilterError(ValueError):
    """A bad ``instance_filter``; the message names the option."""


def group_name(*parts) -> str:
    """``mlflow_<part>_<part>`` with anything but letters, digits and '_' replaced by '_' (Ansible's safe names)."""
    return "_".join(_UNSAFE.sub("_", str(p)) for p in ("mlflow", *parts))


def default_groups(facts: dict) -> list[str]:
    version = facts.get("mlflow_version") or "unknown"
    return [
        ALL_GROUP,
        group_name("cluster", facts["cluster"]),
        group_name("namespace", facts["namespace"]),
        group_name("version", version),
        group_name("server", facts.get("server_kind") or "unknown"),
    ]


def host_vars(facts: dict, references: dict) -> dict:
    """Host variables of one instance. ``references``: the connection's verify_* variables (by reference)."""
    out = {
        "verify_namespace": facts["namespace"],
        "verify_deployment": facts["deployment"],
        # no Service selects the pods: the Deployment's name, so verify reports SERVICE_NOT_FOUND (or a mismatch)
        "verify_service": facts.get("service") or facts["deployment"],
    }
    if facts.get("service_port"):
        out["verify_service_port"] = facts["service_port"]
    if facts.get("container"):
        out["verify_container"] = facts["container"]
    out.update(references)
    for key, value in facts.items():
        if key not in ROLE_FACTS:
            out[key if key.startswith("mlflow_") else f"mlflow_{key}"] = value
    out["mlflow_service_found"] = bool(facts.get("service"))
    return out


class InstanceFilter:
    """``instance_filter``: a JMESPath expression over an instance's facts (None or '' keeps every instance)."""

    def __init__(self, expression):
        self.expression = expression or ""
        self._compiled = None
        if not self.expression:
            return
        if not isinstance(expression, str):
            raise FilterError(f"instance_filter: expected a JMESPath expression (a string), got {type(expression).__name__}")
        try:
            import jmespath
            from jmespath.exceptions import JMESPathError
        except ImportError as exc:  # pragma: no cover - jmespath is in requirements.txt
            raise FilterError("instance_filter needs the Python library jmespath (requirements.txt)") from exc
        try:
            self._compiled = jmespath.compile(self.expression)
        except JMESPathError as exc:
            raise FilterError(f"instance_filter: {self.expression!r} is not a valid JMESPath expression: {exc}") from None

    def keep(self, facts: dict) -> bool:
        if self._compiled is None:
            return True
        from jmespath.exceptions import JMESPathError

        try:
            return bool(self._compiled.search(facts))
        except JMESPathError as exc:  # e.g. keys() of null: the expression does not fit these facts
            raise FilterError(f"instance_filter: {self.expression!r} failed on {facts['cluster']}/"
                              f"{facts['namespace']}/{facts['deployment']}: {exc}") from None
