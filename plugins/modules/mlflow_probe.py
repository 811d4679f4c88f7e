#!/usr/bin/python
# Copyright: (c) 2025, asgard.mlflow contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: mlflow_probe
short_description: Check an MLflow tracking server through a Kubernetes port-forward tunnel
version_added: 0.1.0
author:
  - Asgard Platform Team (@asgard-platform)
description:
  - Opens the API server's C(pods/portforward) WebSocket to a Ready MLflow pod, in process (no
    C(kubectl), no local listening port), and speaks HTTP/1.1 through it.
  - "Runs separate checks: health (C(/health), or C({prefix}/health) where MLflow >= 3.7 serves a
    static prefix, detected automatically), the root page (status and C(<title>MLflow</title>)),
    C(/version), and optionally an API call that reads the backend store
    (C(/api/2.0/mlflow/experiments/search)) sent with the in-cluster Host header so that a
    403 C(Invalid Host header) is caught."
  - Transient failures (Kubernetes API 429/5xx, tunnel errors, the pod replaced during the probe,
    MLflow 429/502/503/504) are retried with exponential backoff inside O(deadline); after a tunnel
    failure the target is resolved again.
  - All checks share one tunnel while MLflow keeps the connection alive (uvicorn, gunicorn with threads).
    A gunicorn sync worker closes every connection, and one portforward WebSocket carries one connection,
    so there each HTTP request opens a new tunnel (RV(tunnels_opened)).
  - With O(resolved) (a pod the caller has already resolved, for example the RV(resolved) of an earlier run)
    the probe reads neither the Service nor the pods.
  - An unhealthy server is a result (RV(healthy) false with RV(findings)), not a failure. The task fails
    only on bad input (invalid options, unknown namespace, missing Service) or when O(fail_on_unhealthy) is set.
  - Runs on the controller (or wherever the task runs) and honours C(KUBECONFIG) and C(K8S_AUTH_*) like
    kubernetes.core.
extends_documentation_fragment:
  - kubernetes.core.k8s_auth_options
  - asgard.mlflow.probe_target
options:
  resolved:
    description:
      - An already-resolved target, to skip reading the Service and its pods (two API requests per run).
        The tunnel goes straight to this pod; the caller vouches that it is Ready and behind O(service).
      - If the tunnel to it fails (pod gone or replaced), the target is resolved from O(service), O(pod) or
        O(label_selectors) as without this option, so those must still describe the target.
      - Accepts the RV(resolved) of an earlier C(mlflow_probe) run as is.
    type: dict
    version_added: 0.1.0
    suboptions:
      pod:
        description: Name of the pod.
        type: str
        required: true
      port:
        description: The container port MLflow listens on (the Service's C(targetPort) resolved), 1 to 65535.
        type: int
        required: true
      service_port:
        description: The Service port, for the default O(host_header).
        type: int
      uid:
        description: The pod's UID (reported only).
        type: str
      pod_ip:
        description: The pod's IP address (reported only).
        type: str
      static_prefix:
        description:
          - The C(--static-prefix) in the pod's spec, V('') when none. When unset and C(/health) answers 404,
            the pod is read once to find it (with O(static_prefix=auto)).
        type: str
  host_header:
    description:
      - Host header for the API check.
      - Default is the in-cluster Service DNS name with the Service port,
        for example V(mlflow-service.asgard.svc.cluster.local:5000), which MLflow >= 3.5 rejects unless
        it is in its allowed hosts.
      - The other checks send V(localhost:PORT), as a C(kubectl port-forward) user's browser does.
    type: str
    version_added: 0.1.0
  static_prefix:
    description:
      - V(auto) tries C(/health), then C({prefix}/health) with the C(--static-prefix) found in the pod's
        command, args or C(MLFLOW_STATIC_PREFIX), then C(/static/health).
      - An empty string means no prefix; a path such as V(/static) tries C(/static/health) first.
    type: str
    default: auto
    version_added: 0.1.0
  api_check:
    description:
      - Also call C(experiments/search) (touches the backend store) with O(host_header).
    type: bool
    default: true
    version_added: 0.1.0
  timeout:
    description:
      - Seconds allowed for each check (tunnel set-up plus the HTTP exchange).
    type: float
    default: 10
    version_added: 0.1.0
  deadline:
    description:
      - Seconds allowed for the whole probe, retries included.
    type: float
    default: 60
    version_added: 0.1.0
  retries:
    description:
      - Retries per request for transient failures (0 to 20), with exponential backoff from 0.5 s.
    type: int
    default: 3
    version_added: 0.1.0
  fail_on_unhealthy:
    description:
      - Fail the task when RV(healthy) is false. The message lists each error finding with its code and message.
    type: bool
    default: false
    version_added: 0.1.0
  transaction:
    description:
      - Deep check. After the read-only checks, run one synthetic MLflow transaction through the same tunnel and
        with O(host_header) (default the in-cluster Service name) - get or create the experiment
        O(transaction_experiment), create a run, log a param and a metric, upload an artifact of
        O(transaction_artifact_size) bytes through the artifact proxy (C(--serve-artifacts)), list it, download
        it and compare bytes, read the run back, mark it finished, then delete synthetic runs beyond
        O(transaction_keep_runs).
      - Routes are prefixed with the static prefix where MLflow serves them there.
      - Each step is timed in RV(transaction) (C(steps)); failures give the findings C(WRITE_FAILED),
        C(ARTIFACT_UPLOAD_FAILED), C(ARTIFACT_DOWNLOAD_FAILED), C(ARTIFACT_MISMATCH), C(WORKER_KILLED_DURING_REQUEST)
        (a 5xx or broken connection while the pod log shows a gunicorn C(WORKER TIMEOUT) or C(SIGKILL) since
        the transaction started), C(SLOW_UPLOAD), C(TRANSACTION_AUTH_FAILED), C(TRANSACTION_READ_FAILED).
      - It writes to the tracking server, so it is skipped in check mode unless O(transaction_in_check_mode).
    type: bool
    default: false
    version_added: 0.1.0
  transaction_experiment:
    description:
      - Experiment used by the deep check (created when missing, restored when deleted).
    type: str
    default: asgard-synthetic-healthcheck
    version_added: 0.1.0
  transaction_artifact_size:
    description:
      - Size in bytes of the random artifact uploaded and downloaded back (1 to 536870912).
    type: int
    default: 65536
    version_added: 0.1.0
  transaction_keep_runs:
    description:
      - Synthetic runs (tag C(asgard.synthetic=true)) to keep, newest first; older ones are deleted with their
        proxied artifacts. V(0) deletes the run the deep check created.
    type: int
    default: 0
    version_added: 0.1.0
  transaction_username:
    description:
      - User for HTTP basic auth (servers started with C(--app-name basic-auth)). Needs O(transaction_password).
    type: str
    version_added: 0.1.0
  transaction_password:
    description:
      - Password for HTTP basic auth. Never logged.
    type: str
    version_added: 0.1.0
  transaction_min_upload_rate:
    description:
      - Upload throughput in KiB/s below which the finding C(SLOW_UPLOAD) (warning) is reported. V(0) disables it.
    type: float
    default: 64
    version_added: 0.1.0
  transaction_upload_rate_limit:
    description:
      - Send the artifact body at most this fast, in KiB/s, to behave like a slow client. V(0) sends at full speed.
    type: float
    default: 0
    version_added: 0.1.0
  transaction_in_check_mode:
    description:
      - Run the deep check in check mode too (it writes a run and an artifact, then deletes them).
    type: bool
    default: false
    version_added: 0.1.0
attributes:
  check_mode:
    support: full
    description: Runs the same read-only checks in check mode; the deep check (O(transaction)) is skipped unless
      O(transaction_in_check_mode).
  diff_mode:
    support: none
    description: Changes nothing.
notes:
  - Needs C(get) on services, pods (and namespaces, to report an unknown namespace) and C(create) on
    C(pods/portforward) in the namespace.
  - A 401 from the API server (expired or invalid token or certificate) is reported as rejected credentials,
    with what to do; a 403 as a missing RBAC permission.
requirements:
  - kubernetes >= 24.2.0
  - websocket-client
"""

EXAMPLES = r"""
- name: Probe MLflow behind svc/mlflow-service in asgard
  asgard.mlflow.mlflow_probe:
  register: probe

- name: Show what is wrong
  ansible.builtin.debug:
    msg: "{{ probe.findings | map(attribute='code') | list }}"
  when: not probe.healthy

- name: Probe again later without reading the Service and pods (the pod found above is tried first)
  asgard.mlflow.mlflow_probe:
    resolved: "{{ probe.resolved }}"
  when: probe.resolved is defined

- name: Probe a pod directly with a custom Host header and fail if unhealthy
  asgard.mlflow.mlflow_probe:
    namespace: ml
    label_selectors: [app=mlflow]
    remote_port: 5000
    host_header: mlflow.example.com
    fail_on_unhealthy: true
    kubeconfig: ~/.kube/config

- name: Deep check - a synthetic run with a 1 MiB artifact, behind basic auth
  asgard.mlflow.mlflow_probe:
    namespace: asgard
    transaction: true
    transaction_artifact_size: 1048576
    transaction_username: "{{ mlflow_admin_user }}"
    transaction_password: "{{ mlflow_admin_password }}"
  register: deep
"""

RETURN = r"""
healthy:
  description: True when health and the root page answer 200 (with the MLflow title), the API check passes (if enabled) and no finding has severity C(error).
  returned: always
  type: bool
  sample: false
pod:
  description: The pod the checks went to (the last one, if it was replaced during the probe).
  returned: always
  type: str
  sample: mlflow-deployment-7d9c6b5f4-x2x9q
pods_seen:
  description: Every pod used, in order (more than one when the pod was replaced mid-probe).
  returned: always
  type: list
  elements: str
  sample: [mlflow-deployment-7d9c6b5f4-x2x9q]
resolved:
  description:
    - The resolved target (pod, uid, container port, Service port, pod IP, and C(static_prefix), the pod spec's
      C(--static-prefix), V('') for none, null when not known). Can be given back as O(resolved).
  returned: when a pod was resolved
  type: dict
  sample: {pod: mlflow-deployment-7d9c6b5f4-x2x9q, uid: 0b7c..., port: 5000, service_port: 5000, pod_ip: 10.250.0.7,
           static_prefix: ''}
target:
  description: The target options as given.
  returned: always
  type: dict
  sample: {namespace: asgard, service: mlflow-service, pod: null, label_selectors: [], remote_port: null}
checks:
  description:
    - One entry per check, V(health), V(root), V(version), V(api). Each has C(path), C(status) (HTTP status or null),
      C(latency_ms), C(bytes) (body size), C(ok) (null when skipped) and C(skipped) (why) when not run.
    - C(root) has C(title_found); C(version) has C(version); C(api) has C(host_header); C(health) has C(tried).
  returned: always
  type: dict
  sample:
    health: {path: /health, status: 200, latency_ms: 4.1, bytes: 2, ok: true, body: OK, tried: [{path: /health, status: 200}]}
    root: {path: /, status: 200, latency_ms: 7.9, bytes: 1432, ok: true, title_found: true}
    version: {path: /version, status: 200, latency_ms: 2.2, bytes: 6, ok: true, version: 3.17.2}
    api: {path: '/api/2.0/mlflow/experiments/search?max_results=1', status: 403, latency_ms: 3.0, bytes: 66, ok: false,
          host_header: mlflow-service.asgard.svc.cluster.local:5000}
mlflow_version:
  description: Version reported by C(/version) (or C({prefix}/version)).
  returned: always
  type: str
  sample: 3.17.2
server_header:
  description: The HTTP C(Server) header (for example C(uvicorn) or C(gunicorn)).
  returned: always
  type: str
  sample: uvicorn
health_path:
  description: The health path that answered 200 (null when none did). Use it for probes.
  returned: always
  type: str
  sample: /static/health
static_prefix:
  description: The static prefix detected (or given), null when none.
  returned: always
  type: str
  sample: /static
findings:
  description:
    - Machine-readable findings, each with C(code), C(severity) (error, warning, info), C(message) and C(evidence).
    - "Stable codes: HEALTH_FAILED, ROOT_NOT_FOUND, ROOT_NO_TITLE, ROOT_FAILED, VERSION_FAILED, INVALID_HOST, API_FAILED,
      HEALTH_UNDER_PREFIX, NO_READY_POD, POD_NOT_FOUND, POD_REPLACED, TUNNEL_ERROR, TIMEOUT, SERVICE_NOT_FOUND,
      NAMESPACE_NOT_FOUND, PORT_NOT_FOUND, SERVICE_WITHOUT_SELECTOR, KUBE_API_ERROR, RETRIED, AUTH_REQUIRED (HTTP 401
      on C(/), C(/version) or the API check: MLflow C(--app-name basic-auth); this module sends no credentials to them)."
    - "Deep check (O(transaction)): WRITE_FAILED, ARTIFACT_UPLOAD_FAILED, ARTIFACT_DOWNLOAD_FAILED, ARTIFACT_MISMATCH,
      WORKER_KILLED_DURING_REQUEST, TRANSACTION_AUTH_FAILED, TRANSACTION_READ_FAILED (errors), SLOW_UPLOAD,
      TRANSACTION_CLEANUP_FAILED (warnings), TRANSACTION_SKIPPED (info)."
  returned: always
  type: list
  elements: dict
  sample:
    - code: INVALID_HOST
      severity: error
      message: "MLflow rejects Host 'mlflow-service.asgard.svc.cluster.local:5000' with 403 'Invalid Host header'"
      evidence: {host_header: mlflow-service.asgard.svc.cluster.local:5000, status: 403}
transaction:
  description:
    - The deep check (O(transaction=true)). C(ok) (null when skipped), C(skipped) (why), C(experiment),
      C(experiment_id), C(run_id), C(api_base), C(host_header), C(auth), C(failed_step),
      C(artifact) (C(path), C(bytes), C(sha256), C(latency_ms), C(rate_kib_s)), C(deleted_runs), C(kept_runs),
      C(elapsed_ms), C(api_requests) (Kubernetes API requests the deep check cost) and C(steps), each with
      C(name), C(method), C(path), C(status), C(latency_ms), C(bytes_sent), C(bytes_received), C(ok), C(error).
  returned: when O(transaction) is true
  type: dict
  sample:
    ok: true
    experiment: asgard-synthetic-healthcheck
    failed_step: null
    api_requests: 1
    elapsed_ms: 180.2
    artifact: {path: 1/0c1f.../artifacts/asgard-synthetic.bin, bytes: 65536, rate_kib_s: 4200.1}
    steps: [{name: get_experiment, method: GET, status: 200, latency_ms: 6.2, ok: true}]
tunnels_opened:
  description: Portforward WebSockets opened (one per connection; reused while MLflow keeps the connection alive).
  returned: always
  type: int
  sample: 1
api_requests:
  description: Requests sent to the Kubernetes API server (REST and WebSocket).
  returned: always
  type: int
  sample: 3
elapsed_ms:
  description: Wall time of the probe.
  returned: always
  type: float
  sample: 48.2
"""

import traceback  # noqa: E402

from ansible_collections.asgard.mlflow.plugins.module_utils._kube import (  # noqa: E402
    KubeError,
    api_from_module,
    kube_argspec,
    kube_module,
)
from ansible_collections.asgard.mlflow.plugins.module_utils._probe import (  # noqa: E402
    ProbeInputError,
    ProbeOptions,
    run_probe,
    unhealthy_message,
    validate_probe_params,
)
from ansible_collections.asgard.mlflow.plugins.module_utils._target import (  # noqa: E402
    RESOLVED_ARG_SPEC,
    TARGET_ARG_SPEC,
    Target,
    validate_target_params,
)
from ansible_collections.asgard.mlflow.plugins.module_utils._transaction import (  # noqa: E402
    TransactionOptions,
    validate_transaction_params,
)
from ansible_collections.asgard.mlflow.plugins.module_utils._tunnel import TunnelError  # noqa: E402


def argspec() -> dict:
    spec = kube_argspec(TARGET_ARG_SPEC, RESOLVED_ARG_SPEC)
    spec.update(
        host_header={"type": "str"},
        static_prefix={"type": "str", "default": "auto"},
        api_check={"type": "bool", "default": True},
        timeout={"type": "float", "default": 10},
        deadline={"type": "float", "default": 60},
        retries={"type": "int", "default": 3},
        fail_on_unhealthy={"type": "bool", "default": False},
        # deep check
        transaction={"type": "bool", "default": False},
        transaction_experiment={"type": "str", "default": "asgard-synthetic-healthcheck"},
        transaction_artifact_size={"type": "int", "default": 65536},
        transaction_keep_runs={"type": "int", "default": 0},
        transaction_username={"type": "str"},
        transaction_password={"type": "str", "no_log": True},
        transaction_min_upload_rate={"type": "float", "default": 64},
        transaction_upload_rate_limit={"type": "float", "default": 0},
        transaction_in_check_mode={"type": "bool", "default": False},
    )
    return spec


def _transaction_errors(params: dict) -> list[str]:
    return validate_transaction_params(params) if params["transaction"] else []


def main() -> None:
    module = kube_module(argspec(), validators=(validate_target_params, validate_probe_params, _transaction_errors),
                         mutually_exclusive=[("pod", "label_selectors")])
    params = module.params
    try:
        api = api_from_module(module, timeout=min(float(params["timeout"]), 30.0))
        opts = ProbeOptions.from_params(params)
        if params["transaction"]:
            opts.transaction = TransactionOptions.from_params(params)
            if module.check_mode and not params["transaction_in_check_mode"]:
                opts.transaction_skip = "check mode (the deep check writes; set transaction_in_check_mode to run it)"
        result = run_probe(api, Target.from_params(params), opts)
    except ProbeInputError as exc:
        module.fail_json(msg=str(exc), changed=False, **exc.result)
    except (KubeError, TunnelError, OSError, ValueError) as exc:
        module.fail_json(msg=f"mlflow_probe: {exc}", exception=traceback.format_exc())
    except Exception as exc:  # noqa: BLE001 - kubernetes config errors (CoreException, ConfigException)
        module.fail_json(msg=f"mlflow_probe: could not build the Kubernetes client: {exc}",
                         exception=traceback.format_exc())
    if params["fail_on_unhealthy"] and not result["healthy"]:
        module.fail_json(msg=unhealthy_message(result), changed=False, **result)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
