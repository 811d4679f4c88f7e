#!/usr/bin/python
# Copyright: (c) 2025, asgard.mlflow contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: port_forward
short_description: Keep a managed, persistent port-forward to an MLflow Service or pod
version_added: 0.1.0
author:
  - Asgard Platform Team (@asgard-platform)
description:
  - With O(state=present), starts a background forwarder that listens on O(address):O(local_port) and keeps
    running after the playbook ends. Every new connection is tunnelled through the API server's
    C(pods/portforward) WebSocket to a pod that is Ready at that moment, so the forward survives rollouts
    and pod restarts (a C(kubectl port-forward) does not). No C(kubectl) binary is needed.
  - Idempotent. A running, listening forward for the same target reports C(changed=false); equivalent options
    are the same target (O(remote_port) omitted and the Service's first port, a pod's or selector's port omitted and
    5000, label selectors in another order). One for another target on the same local port is replaced.
  - "A forward that works is only replaced by one that works: the new target is resolved (Service, pod or selector
    to a Ready pod) and a tunnel to it opened B(before) anything is stopped, and every conflict on the port is found
    before anything is stopped. When the new target does not work (a namespace or Service that does not exist, no
    Ready pod, a tunnel that does not open) while a forward or a C(kubectl port-forward) holds the port, the task
    fails, stops nothing, and names what keeps running in RV(kept). With nothing to replace, a target that is only
    temporarily unavailable (no Ready pod yet) still gets its forward, which resolves a pod per connection."
  - Every process stopped is named in RV(stopped) (pid, command line, target, reason), also when the task fails;
    a state file never names a process that is gone. Credentials on a command line (C(--token), C(--password))
    are never shown.
  - "Clean-up: state entries whose forwarder process is gone are removed; a C(kubectl port-forward) process
    holding the local port is stopped when O(cleanup=true); any other process on the port is never killed:
    the task fails naming its PID and command line (found through C(/proc/net/tcp) and C(/proc/*/fd))."
  - "State per forward (pid, target, started, log) is kept in C($XDG_STATE_HOME/asgard-mlflow/port-forwards/)
    (default C(~/.local/state/asgard-mlflow/port-forwards/)) as C(<address>_<port>.json), with the forwarder's
    log C(<address>_<port>.log) beside it. The forwarder's code is copied to C(runtime/) there, so it does not
    depend on the module's temporary directory."
  - The forwarder runs with the Python interpreter that runs the module (on the controller for localhost).
    The Kubernetes credentials reach it through a pipe; tokens from exec or OIDC plugins are taken as they are
    at start, restart the forward (O(state=absent) then O(state=present)) to refresh them.
extends_documentation_fragment:
  - kubernetes.core.k8s_auth_options
  - asgard.mlflow.probe_target
options:
  local_port:
    description:
      - Local TCP port to listen on (1 to 65535).
    type: int
    default: 5000
    version_added: 0.1.0
  address:
    description:
      - Local IP address to listen on. Anything but a loopback address is refused unless O(allow_non_loopback=true).
    type: str
    default: 127.0.0.1
    version_added: 0.1.0
  allow_non_loopback:
    description:
      - Allow O(address) to be a non-loopback address (the MLflow server becomes reachable from the network,
        without authentication).
    type: bool
    default: false
    version_added: 0.1.0
  state:
    description:
      - V(present) starts the forward (or keeps the running one); V(absent) stops it and removes its state.
    type: str
    choices: [present, absent]
    default: present
    version_added: 0.1.0
  cleanup:
    description:
      - Stop a C(kubectl port-forward) process (or an orphaned forwarder of this module) that holds the local port.
      - Other processes are never stopped.
    type: bool
    default: false
    version_added: 0.1.0
attributes:
  check_mode:
    support: full
    description: Reports what would be started or stopped (RV(stopped), RV(would_start)) without doing it; the new
      target is still resolved and a tunnel to it opened (reads only).
  diff_mode:
    support: full
    description: The processes holding the local port before and after (pid, kind, target).
notes:
  - Linux only (reads C(/proc) to find who holds a port).
requirements:
  - kubernetes >= 24.2.0
  - websocket-client
"""

EXAMPLES = r"""
- name: Forward 127.0.0.1:5000 to svc/mlflow-service in asgard, replacing an old kubectl port-forward
  asgard.mlflow.port_forward:
    cleanup: true
  register: fwd

- name: Use it
  ansible.builtin.uri:
    url: "{{ fwd.url }}/health"

- name: Stop it
  asgard.mlflow.port_forward:
    state: absent
"""

RETURN = r"""
url:
  description: Base URL of the forward.
  returned: always
  type: str
  sample: http://127.0.0.1:5000
pid:
  description: Process id of the running forwarder (null after O(state=absent) or in check mode before a start).
  returned: always
  type: int
  sample: 41234
started:
  description: When the running forwarder was started.
  returned: always
  type: str
  sample: "2025-11-27T09:12:01+0000"
log:
  description: The forwarder's log file (one line per connection with the pod used, or the error).
  returned: always
  type: str
  sample: /root/.local/state/asgard-mlflow/port-forwards/127.0.0.1_5000.log
state_file:
  description: The state file of this forward.
  returned: always
  type: str
  sample: /root/.local/state/asgard-mlflow/port-forwards/127.0.0.1_5000.json
pod:
  description: The pod a connection would reach at start time.
  returned: when a forwarder was started
  type: str
  sample: mlflow-deployment-7d9c6b5f4-x2x9q
target:
  description: The target options.
  returned: always
  type: dict
  sample: {namespace: asgard, service: mlflow-service, pod: null, label_selectors: [], remote_port: null}
address:
  description: The local address.
  returned: always
  type: str
  sample: 127.0.0.1
local_port:
  description: The local port.
  returned: always
  type: int
  sample: 5000
stopped:
  description:
    - Processes stopped (or that would be stopped in check mode), each with C(pid), C(cmdline) (credential flags
      masked), C(target) (what it forwarded), C(kind) and C(reason).
    - Also returned when the task fails (then normally empty, as nothing is stopped before the new target works).
  returned: always
  type: list
  elements: dict
  sample:
    - pid: 3120
      cmdline: [kubectl, port-forward, -n, asgard, svc/mlflow-service, "5000:5000"]
      target: svc/mlflow-service 5000:5000 in asgard
      kind: kubectl port-forward
      reason: "kubectl port-forward holding the local port (cleanup: true)"
kept:
  description:
    - On a failure, the processes left running on the local port (C(pid), C(target), C(cmdline), C(kind)), e.g. the
      working forward that a re-target to a target that does not work would have replaced.
  returned: always (empty on success)
  type: list
  elements: dict
  sample:
    - pid: 41234
      target: svc/mlflow-service:5000 in asgard
      kind: asgard.mlflow forwarder
      cmdline: [/usr/bin/python3, -c, "...", /root/.local/state/asgard-mlflow/port-forwards/runtime/0c1d, asgard-mlflow-forwarder, 127.0.0.1_5000]
code:
  description: On a failure because the new target does not work, the finding code (e.g. C(NAMESPACE_NOT_FOUND),
    C(SERVICE_NOT_FOUND), C(NO_READY_POD)).
  returned: on that failure
  type: str
  sample: NAMESPACE_NOT_FOUND
stale_removed:
  description: State entries removed because their forwarder process was gone.
  returned: always
  type: list
  elements: dict
  sample: [{state_file: /root/.local/state/asgard-mlflow/port-forwards/127.0.0.1_5001.json, pid: 2999}]
would_start:
  description: True in check mode when a forwarder would be started.
  returned: in check mode, when a start is needed
  type: bool
  sample: true
holder:
  description: On failure because the port is busy, the process holding it (C(pid), C(cmdline), C(address)).
  returned: on a port conflict
  type: dict
  sample: {pid: 812, cmdline: [python3, -m, http.server, "5000"], address: 127.0.0.1}
"""

import traceback  # noqa: E402

from ansible_collections.asgard.mlflow.plugins.module_utils._forwarder import (  # noqa: E402
    ForwardError,
    ensure,
    validate_forward_params,
)
from ansible_collections.asgard.mlflow.plugins.module_utils._kube import (  # noqa: E402
    KubeError,
    api_from_module,
    kube_argspec,
    kube_module,
)
from ansible_collections.asgard.mlflow.plugins.module_utils._target import (  # noqa: E402
    TARGET_ARG_SPEC,
    validate_target_params,
)


def argspec() -> dict:
    spec = kube_argspec(TARGET_ARG_SPEC)
    spec.update(
        local_port={"type": "int", "default": 5000},
        address={"type": "str", "default": "127.0.0.1"},
        allow_non_loopback={"type": "bool", "default": False},
        state={"type": "str", "default": "present", "choices": ["present", "absent"]},
        cleanup={"type": "bool", "default": False},
    )
    return spec


def main() -> None:
    module = kube_module(argspec(), validators=(validate_target_params, validate_forward_params),
                         mutually_exclusive=[("pod", "label_selectors")])
    params = module.params
    try:
        result = ensure(params, lambda: api_from_module(module), module.check_mode, diff=module._diff)
    except ForwardError as exc:
        module.fail_json(msg=str(exc), **exc.details)
    except (KubeError, OSError, ValueError) as exc:
        module.fail_json(msg=f"port_forward: {exc}", exception=traceback.format_exc())
    except Exception as exc:  # noqa: BLE001 - kubernetes config errors (CoreException, ConfigException)
        module.fail_json(msg=f"port_forward: {exc}", exception=traceback.format_exc())
    module.exit_json(**result)


if __name__ == "__main__":
    main()
