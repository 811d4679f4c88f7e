#!/usr/bin/python
# Copyright: (c) 2025, asgard.mlflow contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: remediation_lock
short_description: Serialise remediation of an MLflow Deployment with a Kubernetes Lease
version_added: 0.1.0
author:
  - Asgard Platform Team (@asgard-platform)
description:
  - Takes (O(state=acquired)) or gives back (O(state=released)) the C(coordination.k8s.io/v1) Lease
    C(asgard-mlflow-remediation-<deployment>) in the Deployment's namespace, so that two runs (an AWX schedule and
    an operator, two AWX jobs) never remediate the same Deployment at the same time.
  - "The hold: C(holderIdentity) says who (C(<user>@<host> pid <ansible-playbook pid>), plus C(awx-job <JOB_ID>)
    under AWX); C(leaseDurationSeconds) is O(lease_duration); C(acquireTime) and C(renewTime) are MicroTime.
    While held, a detached renewer tied to the ansible-playbook process renews the Lease every
    O(lease_duration)/3 seconds, so remediation may take longer than one duration; it stops when the Lease is
    released or when that process is gone (a crashed run's Lease then expires after one O(lease_duration), and the
    next run takes it over)."
  - "A Lease that is free (no holder), expired, or already held by this run is taken. Every write carries the
    resourceVersion it was read at (optimistic concurrency): when two runs race, the API server accepts one write
    and answers the other 409, and that run reads the Lease again and waits."
  - Held by another run, the module waits up to O(wait_timeout) seconds, then returns RV(acquired=false) with
    RV(held_by) and RV(since), without failing (unless O(fail_when_held=true)) and with C(changed=false).
  - O(state=released) gives back only this run's hold (holder cleared, C(leaseDurationSeconds) 1, the object kept)
    and stops the renewer; a Lease held by another run is left alone.
  - Run it on the controller (C(localhost)), in the same play as the remediation, and release in an C(always:)
    block.
extends_documentation_fragment:
  - kubernetes.core.k8s_auth_options
options:
  namespace:
    description: Namespace of the Deployment (and of its Lease).
    type: str
    default: asgard
    version_added: 0.1.0
  deployment:
    description: The Deployment whose remediation is serialised; the Lease is C(asgard-mlflow-remediation-<deployment>).
    type: str
    default: mlflow-deployment
    version_added: 0.1.0
  state:
    description:
      - V(acquired) takes the Lease (waiting up to O(wait_timeout)) and starts its renewer.
      - V(released) gives this run's hold back and stops the renewer.
    type: str
    choices: [acquired, released]
    default: acquired
    version_added: 0.1.0
  lease_duration:
    description:
      - C(leaseDurationSeconds) of the hold, 10 to 3600. The renewer renews every third of it; a crashed holder's
        Lease is taken over at most this long after its last renewal.
    type: int
    default: 60
    version_added: 0.1.0
  wait_timeout:
    description:
      - Seconds to wait for a Lease held by another run, 0 to 3600 (0 = do not wait).
    type: int
    default: 60
    version_added: 0.1.0
  fail_when_held:
    description:
      - Fail the task when the Lease is still held by another run after O(wait_timeout). By default the result
        says so (RV(acquired=false), RV(held_by), RV(since)) and the play goes on.
    type: bool
    default: false
    version_added: 0.1.0
  owner_pid:
    description:
      - The process whose life bounds the hold (the renewer stops when it is gone), part of the holder identity.
      - Default the ansible-playbook (or ansible) process this module runs under, found through C(/proc).
    type: int
    version_added: 0.1.0
attributes:
  check_mode:
    support: full
    description: Reads the Lease only (no wait) and reports what would happen (RV(would_acquire), RV(would_release)).
  diff_mode:
    support: full
    description: The Lease (holder, times, duration) before and after.
notes:
  - A C(kill -9) of the ansible-playbook process alone stops the renewing (the Lease then expires), but Ansible's
    worker process runs the task in flight to its end (workers detach into sessions of their own); a killed AWX job
    loses its whole container, workers included.
  - Linux only (C(/proc)); needs C(get), C(create) and C(update) on C(leases.coordination.k8s.io) in the namespace
    (C(deploy/rbac/role.yaml) grants them).
  - "Renewer state and log: C($XDG_STATE_HOME/asgard-mlflow/leases/<namespace>_<lease>.{json,log})
    (default C(~/.local/state/...)); the Kubernetes credentials reach the renewer through a pipe."
requirements:
  - kubernetes >= 24.2.0
"""

EXAMPLES = r"""
- name: Remediate only while holding the Deployment's Lease
  block:
    - name: Take the remediation Lease (wait up to 2 minutes for another run)
      asgard.mlflow.remediation_lock:
        namespace: asgard
        deployment: mlflow-deployment
        wait_timeout: 120
      register: lock

    - name: Remediate
      ansible.builtin.include_role:
        name: asgard.mlflow.patch
      when: lock.acquired

    - name: Say who is remediating instead
      ansible.builtin.debug:
        msg: "REMEDIATION_IN_PROGRESS: held by {{ lock.held_by }} since {{ lock.since }}"
      when: not lock.acquired
  always:
    - name: Give the Lease back
      asgard.mlflow.remediation_lock:
        namespace: asgard
        deployment: mlflow-deployment
        state: released
"""

RETURN = r"""
acquired:
  description: True when this run holds the Lease now (O(state=acquired)).
  returned: always
  type: bool
  sample: true
released:
  description: True when this run's hold was given back (O(state=released)).
  returned: always
  type: bool
  sample: false
held_by:
  description: The holder identity of another run that holds the Lease (O(state=acquired) after O(wait_timeout), or
    O(state=released) of a Lease this run does not hold); null otherwise.
  returned: always
  type: str
  sample: "awx@awx-task-7d9 pid 41 awx-job 1234"
since:
  description: When that holder took the Lease (its C(acquireTime)).
  returned: always
  type: str
  sample: "2026-12-03T13:20:09.123456Z"
expires_at:
  description: When that holder's Lease expires unless renewed (C(renewTime) + C(leaseDurationSeconds)).
  returned: always
  type: str
  sample: "2026-12-03T13:21:09.123456Z"
took_over_from:
  description: The holder of an expired Lease that this run took over (a crashed run), null otherwise.
  returned: always
  type: str
  sample: "root@ops-1 pid 3120"
waited:
  description: Seconds spent waiting for the Lease.
  returned: always
  type: float
  sample: 12.4
identity:
  description: This run's holder identity.
  returned: always
  type: str
  sample: "root@ops-1 pid 5121"
lease_name:
  description: Name of the Lease.
  returned: always
  type: str
  sample: asgard-mlflow-remediation-mlflow-deployment
namespace:
  description: Namespace of the Lease.
  returned: always
  type: str
  sample: asgard
lease:
  description: The Lease after the task (in check mode, as it would be), or as read when held by another run.
  returned: always
  type: dict
  sample:
    namespace: asgard
    name: asgard-mlflow-remediation-mlflow-deployment
    holder_identity: root@ops-1 pid 5121
    acquire_time: "2026-12-03T13:20:09.123456Z"
    renew_time: "2026-12-03T13:20:29.130001Z"
    lease_duration_seconds: 60
    lease_transitions: 3
    resource_version: "1843"
before:
  description:
    - The Lease as this task first read it (same keys as RV(lease)), null when there was none. Its
      C(holder_identity) tells whether another run held it when this one asked (that run may have remediated
      meanwhile).
  returned: always
  type: dict
  sample:
    namespace: asgard
    name: asgard-mlflow-remediation-mlflow-deployment
    holder_identity: awx@awx-task-7d9 pid 41 awx-job 1234
    acquire_time: "2026-12-03T13:19:02.000113Z"
    renew_time: "2026-12-03T13:20:02.004410Z"
    lease_duration_seconds: 60
    lease_transitions: 2
    resource_version: "1838"
renewer:
  description: The renewer process of this run's hold (C(pid), C(log)), or the pid stopped on release.
  returned: when O(state=acquired) and acquired outside check mode, or when O(state=released) stopped one
  type: dict
  sample: {pid: 5190, log: /root/.local/state/asgard-mlflow/leases/asgard_asgard-mlflow-remediation-mlflow-deployment.log}
would_acquire:
  description: In check mode, true when the Lease would be taken now.
  returned: in check mode, when the Lease is free, expired or ours
  type: bool
  sample: true
would_release:
  description: In check mode, true when this run's hold would be given back.
  returned: in check mode, when this run holds the Lease
  type: bool
  sample: true
"""

import traceback  # noqa: E402

from ansible_collections.asgard.mlflow.plugins.module_utils._kube import (  # noqa: E402
    KubeError,
    api_from_module,
    kube_argspec,
    kube_module,
)
from ansible_collections.asgard.mlflow.plugins.module_utils._lease import (  # noqa: E402
    LeaseError,
    acquire,
    find_owner,
    holder_identity,
    release,
    running_renewer,
    start_renewer,
    state_dir,
    stop_renewer,
    validate_lock_params,
)


def argspec() -> dict:
    return kube_argspec({
        "namespace": {"type": "str", "default": "asgard"},
        "deployment": {"type": "str", "default": "mlflow-deployment"},
        "state": {"type": "str", "default": "acquired", "choices": ["acquired", "released"]},
        "lease_duration": {"type": "int", "default": 60},
        "wait_timeout": {"type": "int", "default": 60},
        "fail_when_held": {"type": "bool", "default": False},
        "owner_pid": {"type": "int"},
    })


def run(module) -> dict:
    p = module.params
    owner = p["owner_pid"] or find_owner()
    if owner is None:
        module.fail_json(msg="owner_pid: no ansible-playbook process found above this module (is it running on a "
                             "remote host?); run it on the controller (localhost) or give owner_pid")
    identity = holder_identity(owner)
    api = api_from_module(module)
    sdir = state_dir()
    ns = p["namespace"]
    if p["state"] == "released":
        out = release(api, ns, p["deployment"], identity, check_mode=module.check_mode)
        if not module.check_mode and (out["released"] or out["held_by"] is None):
            stopped = stop_renewer(sdir, ns, out["lease_name"])
            if stopped:
                out["renewer"] = {"pid": stopped}
        out.setdefault("acquired", False)
    else:
        out = acquire(api, ns, p["deployment"], identity, p["lease_duration"],
                      0 if module.check_mode else p["wait_timeout"], check_mode=module.check_mode)
        out.setdefault("released", False)
        if out["acquired"]:
            pid = running_renewer(sdir, ns, out["lease_name"], identity)
            if pid is None:
                stop_renewer(sdir, ns, out["lease_name"])  # another run's renewer on this machine: its hold is gone
                out["renewer"] = start_renewer(api, sdir, ns, out["lease_name"], identity, p["lease_duration"], owner)
            else:
                out["renewer"] = {"pid": pid}
    if module._diff:
        out["diff"] = {"before": out["before"] or {}, "after": out["lease"] or {}}
    return out


def main() -> None:
    module = kube_module(argspec(), validators=(validate_lock_params,))
    try:
        result = run(module)
    except (LeaseError, KubeError) as exc:
        module.fail_json(msg=f"remediation_lock: {exc}", exception=traceback.format_exc())
    except Exception as exc:  # noqa: BLE001 - kubernetes config errors (CoreException, ConfigException)
        module.fail_json(msg=f"remediation_lock: {exc}", exception=traceback.format_exc())
    if module.params["state"] == "acquired" and not result["acquired"] and not module.check_mode \
            and module.params["fail_when_held"]:
        module.fail_json(msg=f"REMEDIATION_IN_PROGRESS: the Lease {result['namespace']}/{result['lease_name']} is "
                             f"held by {result['held_by']} since {result['since']} (waited {result['waited']}s; it "
                             f"expires at {result['expires_at']} unless renewed)", **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
