#!/usr/bin/python
# Copyright: (c) 2026, asgard.mlflow contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: mlflow_patch
short_description: Bring the MLflow server settings of a Deployment to targets, in place, with one JSON patch
version_added: 0.1.0
author:
  - Asgard Platform Team (@asgard-platform)
description:
  - The work of the C(asgard.mlflow.patch) role in one typed call. Reads the Deployment and the ConfigMaps its MLflow
    container reads env from, finds THE MLflow container (the one that runs C(mlflow server), or O(container)),
    reads its effective settings wherever they are (C(command)/C(args) lists or a C(sh -c) script, C(MLFLOW_*)
    variables, C(GUNICORN_CMD_ARGS), C(UVICORN_*), ConfigMaps), compares them with O(targets) and applies the
    minimal edit as ONE guarded RFC 6902 JSON patch, with a pod template annotation recording what was enforced.
  - After the patch no source contradicts the fix; a contradicting source the patch cannot edit (a ConfigMap) is
    overridden on the command line and named in the warnings.
  - A compliant Deployment is not written (C(changed=false)). A Helm-managed Deployment is refused (with the chart
    values to set instead) unless O(allow_helm_managed=true).
  - With O(wait=true) waits for the rollout with kubernetes.core's Deployment waiter; when the new pods do not
    become ready in O(wait_timeout) seconds, reads the waiting reasons, events and the MLflow container's last log
    lines, rolls back (O(rollback)) and fails with them.
  - Never returns the Deployment or a credential; values, diffs and messages are redacted.
extends_documentation_fragment:
  - kubernetes.core.k8s_auth_options
options:
  namespace:
    description: Namespace of the Deployment.
    type: str
    default: asgard
  name:
    description: Name of the Deployment.
    type: str
    default: mlflow-deployment
  container:
    description: Name of the MLflow container; empty finds the one container that runs C(mlflow server).
    type: str
  mlflow_version:
    description: MLflow version of the image (C(X.Y[.Z])) when its tag does not tell; empty reads the tag.
    type: str
  read_configmaps:
    description: Read the ConfigMaps the container references, so settings kept there are seen. Secrets are never read.
    type: bool
    default: true
  targets:
    description:
      - The settings to enforce. A target that is null (or the string V(null)) is left as it is. Values may be given
        as strings, as C(-e name=value) passes them; they are converted here.
      - C(gunicorn_timeout), C(gunicorn_keep_alive), C(uvicorn_timeout_keep_alive), C(workers) (integers >= 1),
        C(gunicorn_timeout_mode) and C(workers_mode) (V(exact) or V(at_least)), C(gunicorn_worker_class),
        C(static_prefix) (V("") for none, or C(/prefix)), C(allowed_hosts) (a list of Host patterns) and
        C(allowed_hosts_mode) (V(include) or V(exact)), C(port) (1-65535), C(host), C(enable_service_links) and
        C(probes) (booleans), C(startup_probe), C(readiness_probe), C(liveness_probe) (probe timings), C(annotation),
        C(shell_exec) (boolean, default false).
      - C(shell_exec=true) writes C(exec) before the C(mlflow server) command of a C(sh -c) script that is that one
        simple command (env assignments and redirections allowed; MLflow 3), so MLflow instead of the shell is the
        container's PID 1 and gets the kubelet's SIGTERM; the patch replaces that one C(command)/C(args) element.
        A script of several commands is never rewritten (a warning says what to do).
    type: dict
    default: {}
  option_prefix:
    description: Prefix of the caller's variable names, used in messages (V(patch_) names C(patch_workers)).
    type: str
    default: ""
  allow_helm_managed:
    description: Patch a Helm-managed Deployment anyway (the next C(helm upgrade) reverts the patch).
    type: bool
    default: false
  wait:
    description: Wait until the new pods are ready.
    type: bool
    default: true
  wait_timeout:
    description: Seconds to wait for the rollout.
    type: int
    default: 300
  wait_sleep:
    description: Seconds between two reads of the Deployment while waiting.
    type: int
    default: 2
  rollback:
    description: Roll back when the new pods do not become ready.
    type: bool
    default: true
  rollback_method:
    description: V(patch) applies the exact reverse of the patch; V(k8s_rollback) restores the previous ReplicaSet
      revision's pod template.
    type: str
    choices: [patch, k8s_rollback]
    default: patch
  log_lines:
    description: Last log lines of the MLflow container reported when the rollout fails.
    type: int
    default: 40
attributes:
  check_mode:
    support: full
    description: Reads and compares; reports C(changed) and the diff; writes nothing.
  diff_mode:
    support: full
    description: The MLflow container (command, args, env, probes; credentials masked) and the pod fields before
      and after.
"""

EXAMPLES = r"""
- name: The seed incident's fix (gunicorn timeout 300, 4 workers, no static prefix)
  asgard.mlflow.mlflow_patch:
    namespace: asgard
    name: mlflow-deployment
    targets:
      gunicorn_timeout: 300
      workers: 4
      static_prefix: ""
      port: 5000
  register: patched

- name: Only the worker count, at least 4, without waiting
  asgard.mlflow.mlflow_patch:
    targets: {workers: 4, workers_mode: at_least}
    wait: false
"""

RETURN = r"""
compliant:
  description: The Deployment already complied (nothing was written).
  returned: always
  type: bool
  sample: false
changes:
  description: What changed (or would change), with where each setting lives.
  returned: always
  type: list
  elements: str
  sample: ["--gunicorn-opts: '--timeout 120' -> '--timeout 300 --keep-alive 5' (args[0] script line 7 chars 187-250)"]
container:
  description: The MLflow container.
  returned: always
  type: str
  sample: mlflow
container_index:
  description: Its index in the pod template.
  returned: always
  type: int
  sample: 0
server:
  description: V(gunicorn) or V(uvicorn).
  returned: always
  type: str
  sample: gunicorn
mlflow_version:
  description: The MLflow version (null when unknown).
  returned: always
  type: str
  sample: 3.17.2
version_source:
  description: V(image tag), V(override) or V(unknown).
  returned: always
  type: str
  sample: image tag
health_path:
  description: The health endpoint after the patch.
  returned: always
  type: str
  sample: /health
port:
  description: The server port after the patch.
  returned: always
  type: int
  sample: 5000
helm_release:
  description: The Helm release managing the Deployment, null when none.
  returned: always
  type: str
  sample: null
settings_before:
  description: The effective settings before, as P(asgard.mlflow.mlflow_server_settings#filter) returns them (redacted).
  returned: always
  type: dict
  sample: {server: gunicorn, workers: 4, gunicorn: {timeout: 120}}
settings_after:
  description: The effective settings after the patch (redacted).
  returned: always
  type: dict
  sample: {server: gunicorn, workers: 4, gunicorn: {timeout: 300}}
patched:
  description: The JSON patch was sent.
  returned: always
  type: bool
  sample: true
generation:
  description: The Deployment's generation after the patch.
  returned: when patched
  type: int
  sample: 3
rolled_back:
  description: The failed rollout was rolled back.
  returned: always
  type: bool
  sample: false
evidence:
  description: On a failed rollout, C(waiting) reasons, the last C(events) and the last C(log) lines (redacted).
  returned: on a failed rollout
  type: dict
  sample: {waiting: [CrashLoopBackOff], events: [], log: ["Error: class uri 'nosuchworker' invalid or not found"]}
"""

import traceback  # noqa: E402

from ansible_collections.asgard.mlflow.plugins.module_utils._kube import (  # noqa: E402
    KubeError,
    api_from_module,
    kube_argspec,
    kube_module,
)
from ansible_collections.asgard.mlflow.plugins.module_utils._patch import (  # noqa: E402
    PatchFailed,
    kube_waiter,
    run,
)


def argspec() -> dict:
    return kube_argspec({
        "namespace": {"type": "str", "default": "asgard"},
        "name": {"type": "str", "default": "mlflow-deployment"},
        "container": {"type": "str"},
        "mlflow_version": {"type": "str"},
        "read_configmaps": {"type": "bool", "default": True},
        "targets": {"type": "dict", "default": {}},
        "option_prefix": {"type": "str", "default": ""},
        "allow_helm_managed": {"type": "bool", "default": False},
        "wait": {"type": "bool", "default": True},
        "wait_timeout": {"type": "int", "default": 300},
        "wait_sleep": {"type": "int", "default": 2},
        "rollback": {"type": "bool", "default": True},
        "rollback_method": {"type": "str", "default": "patch", "choices": ["patch", "k8s_rollback"]},
        "log_lines": {"type": "int", "default": 40},
    })


def main() -> None:
    module = kube_module(argspec())
    try:
        api = api_from_module(module)
        result = run(api, module.params, check_mode=module.check_mode, diff=module._diff, waiter=kube_waiter(api))
    except PatchFailed as exc:
        _warn(module, exc.result)
        module.fail_json(msg=str(exc), **exc.result)
    except KubeError as exc:
        module.fail_json(msg=f"mlflow_patch: {exc}. Nothing was changed.", exception=traceback.format_exc())
    _warn(module, result)
    module.exit_json(**result)


def _warn(module, result: dict) -> None:
    for text in result.pop("warnings", []):
        module.warn(text)


if __name__ == "__main__":
    main()
