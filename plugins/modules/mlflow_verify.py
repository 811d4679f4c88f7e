#!/usr/bin/python
# Copyright: (c) 2026, asgard.mlflow contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: mlflow_verify
short_description: One round of the MLflow verify checks (pods, logs, Service, health) and the remediation plan
version_added: 0.2.0
author:
  - Asgard Platform Team (@asgard-platform)
description:
  - "Steps 1-4 of the seed incident's test script in one call: 1 pod status and rollout, with the server settings
    (command, args, env, C(GUNICORN_CMD_ARGS), ConfigMap-sourced env) of THE MLflow container (the container that
    runs C(mlflow server) as parsed, or O(container)); 2 a scan of that container's log (and of its previous instance
    after a restart); 3 the Service, its selector, C(targetPort) and EndpointSlices (Endpoints when the API has none);
    4 health, dashboard, C(/version) and an API call through the API server's port-forward tunnel
    (M(asgard.mlflow.mlflow_probe)'s code, in process); 4b optionally the deep check (O(transaction))."
  - Returns the step results, the findings (codes of the catalogue in docs/verify.md), the server settings and the
    target (redacted), one console line per step in the seed's words, the remediation plan (what the role
    asgard.mlflow.verify then runs as tasks - a migration Job, the asgard.mlflow.patch role, a rollout restart) and a
    RV(state) to hand back as O(state) after the plan's actions ran.
  - With O(state), the call first records what the previous plan's actions did (read from the cluster - a Deployment
    generation, a restart annotation, the migration Job's status), then waits for the rollout they started by
    watching the Deployment (it stops early when a new pod cannot start), then checks again.
  - It reads only. A healthy round costs 6 API requests (Deployment, pods, log, Service, EndpointSlices, tunnel).
    Nothing it returns is a raw API object; every string taken from the cluster is redacted.
  - The deep check (O(transaction)) writes a synthetic run to the tracking server (and deletes it again); in check
    mode it is skipped unless O(transaction_in_check_mode).
  - Bad input (a value out of range, a namespace that does not exist, rejected credentials) fails the task naming the
    option (with O(variable_prefix) in front) and what was expected.
extends_documentation_fragment:
  - kubernetes.core.k8s_auth_options
options:
  namespace:
    description: Namespace MLflow runs in (a DNS-1123 label).
    type: str
    default: asgard
  deployment:
    description: The MLflow Deployment.
    type: str
    default: mlflow-deployment
  service:
    description: The MLflow Service (checked in step 3, probed in step 4).
    type: str
    default: mlflow-service
  service_port:
    description: The Service port MLflow must be reachable on (1-65535).
    type: int
    default: 5000
  container:
    description: The container that runs C(mlflow server). Empty finds it from the command (sidecars are skipped).
    type: str
    default: ''
  label_selectors:
    description: Label selectors (C(key=value)) of the pods to check. Empty uses the Deployment's C(matchLabels).
    type: list
    elements: str
    default: []
  restart_window_seconds:
    description: A container restart this recent (seconds) is a warning (RESTARTS); older ones are info.
    type: int
    default: 3600
  min_workers:
    description: Fewer effective workers than this is TOO_FEW_WORKERS.
    type: int
    default: 4
  min_gunicorn_timeout:
    description: A gunicorn C(--timeout) below this (seconds) is SHORT_WORKER_TIMEOUT; V(0) switches it off.
    type: int
    default: 300
  expected_static_prefix:
    description:
      - The C(--static-prefix) the server should run with; empty means none. With a prefix the dashboard is judged at
        C(<prefix>/) and the prefix is never planned away.
    type: str
    default: ''
  log_since_seconds:
    description: Read log lines of the last N seconds only (V(0) = no time bound).
    type: int
    default: 3600
  log_tail_lines:
    description: Read at most the last N lines of each log.
    type: int
    default: 2000
  log_max_samples:
    description: Redacted sample lines kept per pattern.
    type: int
    default: 3
  log_patterns:
    description:
      - Log patterns, each C({code, pattern, severity, message}) (C(pattern) a Python regular expression, C(severity)
        one of critical, warning, info; C(severity) and C(message) default to the catalogue's for a known code).
      - Null uses the built-in patterns (WORKER_TIMEOUT, WORKER_KILLED, INVALID_HOST_HEADER, DB_SCHEMA_OUTDATED,
        DB_SCHEMA_NEWER, TRACEBACK, ERROR_LINES; docs/verify.md).
    type: list
    elements: dict
  probe_host_header:
    description: Host header of the API check. Empty uses the in-cluster Service DNS name.
    type: str
    default: ''
  probe_api_check:
    description: Let the probe call the REST API (touches the backend store).
    type: bool
    default: true
  probe_timeout:
    description: Seconds per probe check (more than 0).
    type: float
    default: 10
  probe_deadline:
    description: Seconds for the whole probe, retries included (at least O(probe_timeout)).
    type: float
    default: 60
  probe_retries:
    description: Probe retries for transient failures (0-20).
    type: int
    default: 3
  transaction:
    description: Run step 4b, the deep check (one synthetic MLflow transaction, see M(asgard.mlflow.mlflow_probe)).
    type: bool
    default: false
  transaction_options:
    description:
      - Options of the deep check, all optional; C(experiment), C(artifact_size) (bytes, 1 - 512 MiB), C(keep_runs)
        (0-1000), C(upload_rate_limit) and C(min_upload_rate) (KiB/s), C(timeout) (seconds per request, default 30),
        C(deadline) (seconds, default 180).
    type: dict
    default: {}
  transaction_username:
    description: User for HTTP basic auth of the deep check. Needs O(transaction_password).
    type: str
    default: ''
  transaction_password:
    description: Password of O(transaction_username). Never logged, never returned.
    type: str
    default: ''
  transaction_in_check_mode:
    description: Run the deep check in check mode too (it writes to the server).
    type: bool
    default: false
  auth_username:
    description:
      - User for HTTP basic auth (MLflow C(--app-name basic-auth)) of step 4 - C(/), C(/version) and the API check;
        C(/health) is always checked without - and of the deep check when O(transaction_username) is empty.
      - Needs a password source, O(auth_secret) or O(auth_password). Empty with O(auth_secret) reads the user from the
        Secret's C(username_key).
      - A 401 with credentials is the finding C(AUTH_REJECTED), without C(AUTH_REQUIRED); both are report-only.
    type: str
    default: ''
  auth_password:
    description: Password of O(auth_username) (vault it). Never logged, never returned. Excludes O(auth_secret).
    type: str
    default: ''
  auth_secret:
    description:
      - The Secret of O(namespace) holding the password, as a dict C({name, key, username_key}), its JSON text,
        V(name=mlflow-auth key=admin_password) or just the Secret's name.
      - C(key) defaults to V(admin_password) and C(username_key) to V(admin_username), the keys asgard.mlflow.deploy
        writes (C(deploy_auth_secret_name), default V(mlflow-auth)).
      - Exactly this one Secret is read (C(get)). A missing Secret or key, or a refused read, fails the task naming the
        option; nothing is changed.
    type: raw
  ingress_name:
    description:
      - The Ingress the ingress step checks; empty means every Ingress of the namespace whose rules or default
        backend route to O(service) (with none the step is ok, with a line saying so).
    type: str
    default: ""
  route_name:
    description:
      - The Gateway API HTTPRoute the ingress step checks beside the Ingresses; empty means every HTTPRoute of the
        namespace whose rules' backendRefs name O(service) (none is fine, as on clusters without the Gateway API).
    type: str
    default: ""
  ingress_min_body_size:
    description:
      - The upload an Ingress must let through (nginx size such as V(100m) or V(5g)). A smaller
        C(nginx.ingress.kubernetes.io/proxy-body-size) is INGRESS_BODY_TOO_SMALL and is patched to this value; an
        unset one is ingress-nginx's C(1m). V(0) asks for no limit at all (any finite limit is too small).
      - An upload of this size is also tried through the Ingress endpoint without sending a body (C(Content-Length)
        with C(Expect) V(100-continue)); a 413 is INGRESS_UPLOAD_REFUSED. With V(0) that request is not sent.
    type: str
    default: "100m"
  ingress_url:
    description:
      - Where to send the requests through the Ingress, as V(http(s\)://host[:port]) without a path, e.g.
        V(https://127.0.0.1:8443) or V(https://lb.example.com). The Ingress host still goes in the Host header and
        (https) the SNI.
      - Empty means the first address of the Ingress' C(status.loadBalancer.ingress) (port 443 with https when the
        Ingress has TLS for the host, else 80); with none the requests are not sent (INGRESS_NO_ENDPOINT, info).
    type: str
    default: ""
  ingress_validate_certs:
    description: Verify the certificate the Ingress endpoint presents (an invalid one is INGRESS_TLS_INVALID).
    type: bool
    default: true
  ingress_ca_cert:
    description: A PEM CA bundle to verify the Ingress endpoint's certificate with; empty means the system's CAs.
    type: path
    default: ""
  tls_min_days:
    description: An Ingress certificate that expires within this many days is INGRESS_TLS_EXPIRING.
    type: int
    default: 14
  remediate:
    description: Plan remediation actions. V(false) plans none (an audit); findings keep their next steps.
    type: bool
    default: true
  remediations:
    description: Kinds of action the plan may use.
    type: list
    elements: str
    choices: [patch, restart, migrate]
    default: [patch, restart, migrate]
  max_restarts:
    description: Rollout restarts the plan may use per run (0-10), over all rounds.
    type: int
    default: 1
  remediation_rounds:
    description: Remediation rounds per run (1-5); after that the plan lists what is left, not needed.
    type: int
    default: 2
  rollout_timeout:
    description: Seconds to wait for a rollout (at least 30); also the patch role's wait in the plan's C(patch_vars).
    type: int
    default: 600
  migration_timeout:
    description: Seconds the migration Job may run (at least 30); returned in the plan's C(migration).
    type: int
    default: 600
  patch_vars:
    description:
      - Overrides of the asgard.mlflow.patch variables in the plan's C(patch_vars) (keys C(patch_workers),
        C(patch_workers_mode), C(patch_gunicorn_timeout), C(patch_gunicorn_timeout_mode), C(patch_gunicorn_keep_alive),
        C(patch_uvicorn_timeout_keep_alive), C(patch_static_prefix), C(patch_allowed_hosts_enabled), C(patch_probes),
        C(patch_port), C(patch_enable_service_links), C(patch_wait_timeout), C(patch_wait_sleep),
        C(patch_allow_helm_managed), C(patch_rollback)).
      - A Helm-managed Deployment is not patched (HELM_MANAGED names the chart values to set) unless
        C(patch_allow_helm_managed) is true.
    type: dict
    default: {}
  run_tags:
    description:
      - The play's C(ansible_run_tags). A step whose tag (C(verify_pods), C(verify_logs), C(verify_service),
        C(verify_probe), C(verify_transaction)) is selected runs; when no step tag is selected every step runs.
        Remediation is planned only when C(verify_remediate) (or C(verify), or all) is selected.
    type: list
    elements: str
    default: [all]
  skip_tags:
    description: The play's C(ansible_skip_tags); skipped step tags (and C(verify_remediate)) are left out.
    type: list
    elements: str
    default: []
  variable_prefix:
    description: Put in front of option names in error messages (the verify role passes V(verify_)).
    type: str
    default: ''
  state:
    description:
      - The RV(state) of the previous call of this run, after the actions of its RV(plan) ran. Without it the call
        is the first round.
    type: dict
  errors:
    description:
      - How the actions of the previous plan failed, by action (C(migrate), C(patch), C(restart)); a message
        (redacted by the caller) or empty. Whether an action changed anything is read from the cluster.
    type: dict
    default: {}
  restart:
    description:
      - Start a new first round even with O(state) (for example after waiting for another run's remediation lock).
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    description: Reads only. The deep check is skipped unless O(transaction_in_check_mode). With O(state) in check
      mode (the previous plan's actions only reported what they would do) the round is recorded without reading.
  diff_mode:
    support: none
    description: Changes nothing.
notes:
  - Needs C(get)/C(list) on deployments, pods, pods/log, services, endpointslices (or endpoints), configmaps and jobs
    (after a migration), C(watch) on deployments (after an action), and C(create) on pods/portforward. The ingress
    step lists ingresses (a 403 is reported as INGRESS_NOT_READABLE, never a failure) and gets the TLS Secrets they
    name (without C(get) on them TLS is not checked). It lists httproutes (gateway.networking.k8s.io; a 403 is
    ROUTE_NOT_READABLE) and gets the Gateways the routes to the Service name (without C(get) on gateways in a
    Gateway's namespace its Programmed condition is not judged).
requirements:
  - kubernetes >= 24.2.0
  - websocket-client
"""

EXAMPLES = r"""
- name: Steps 1-4 of the seed's script against svc/mlflow-service in asgard
  asgard.mlflow.mlflow_verify:
    namespace: asgard
  register: check

- name: One line per step, as the seed's script prints them
  ansible.builtin.debug:
    msg: "{{ check.console }}"

- name: After the plan's actions ran, record them, wait for the rollout and check again
  asgard.mlflow.mlflow_verify:
    namespace: asgard
    state: "{{ check.state }}"
  register: check
  when: check.plan.needed

- name: An audit in a pipeline, failing on a critical finding
  asgard.mlflow.mlflow_verify:
    namespace: ml
    remediate: false
    min_workers: 2
  register: audit
  failed_when: not audit.healthy
"""

RETURN = r"""
round:
  description: Remediation rounds recorded so far (V(0) for the first checks).
  returned: always
  type: int
  sample: 0
healthy:
  description: True when no finding is critical.
  returned: always
  type: bool
  sample: false
steps:
  description:
    - One result per step that ran (C(pods), C(settings), C(logs), C(service), C(probe), C(transaction)), each with
      C(step), C(title), C(status) (ok, warning, failed, skipped), C(summary), C(findings) and C(details).
  returned: always
  type: list
  elements: dict
  sample:
    - {step: pods, title: 1. Pod status, status: ok, summary: "1/1 pod(s) ready, rollout complete", findings: [],
       details: {ready_pods: 1}}
findings:
  description: Every finding of the round, each with C(code), C(severity) (critical, warning, info), C(step),
    C(message) and C(evidence) (redacted).
  returned: always
  type: list
  elements: dict
  sample:
    - {code: ROOT_NOT_FOUND, severity: critical, step: probe, message: "GET / answers 404", evidence: {status: 404}}
console:
  description: One line per step, in the words of the seed's script (C(1. Checks pod status ...)).
  returned: always
  type: list
  elements: str
  sample: ["1. Checks pod status: OK - 1/1 pod(s) ready, rollout complete; server uvicorn, workers 4, static prefix none"]
settings:
  description: The effective server settings of the MLflow container (redacted), null when they could not be read.
  returned: always
  type: dict
  sample: {server: gunicorn, workers: 2, static_prefix: /static, gunicorn: {timeout: 120, keep_alive: 2}}
target:
  description: The pod and port the probe reached (accepted by mlflow_probe's O(asgard.mlflow.mlflow_probe#module:resolved)).
  returned: when step 4 ran and resolved a pod
  type: dict
  sample: {pod: mlflow-deployment-7d9c6b5f4-x2x9q, port: 5000, service_port: 5000, static_prefix: ''}
plan:
  description:
    - The remediation plan. C(needed) (run the actions), C(actions) (each C(action), C(reason), C(description)),
      C(migrate), C(patch), C(restart) (booleans), C(patch_targets), C(patch_vars) (the asgard.mlflow.patch
      variables), C(ingress_patches) (each C(name) and the C(annotations) to merge-patch), C(migration) (C(job),
      C(timeout)), C(restart_reason), C(restart_blockers), C(report_only) (findings with a next step for a human)
      and C(findings) (findings of the plan itself, e.g. HELM_MANAGED).
  returned: always
  type: dict
  sample: {needed: true, patch: true, migrate: false, restart: false, patch_targets: [workers, timeout],
           actions: [{action: patch, reason: [SHORT_WORKER_TIMEOUT], description: "asgard.mlflow.patch: ..."}]}
rollout:
  description: The wait for the rollout started by the previous plan's actions (C(state), C(waited_s), C(reason)).
  returned: always (null when there was nothing to wait for)
  type: dict
  sample: {state: complete, waited_s: 7.4, reason: ''}
state:
  description: What the run remembers (rounds, actions and their outcome, the first and last checks); give it back
    as O(state). No raw API object; redacted.
  returned: always
  type: dict
  sample: {version: 1, round: 1, remediated: [{action: patch, changed: true, failed: false, round: 1}]}
api_requests:
  description: Requests sent to the Kubernetes API server by this call (REST, watch and WebSocket).
  returned: always
  type: int
  sample: 6
elapsed_ms:
  description: Wall time of the call.
  returned: always
  type: float
  sample: 412.5
"""

import traceback  # noqa: E402

from ansible_collections.asgard.mlflow.plugins.module_utils._kube import (  # noqa: E402
    KubeError,
    api_from_module,
    kube_argspec,
    kube_module,
)
from ansible_collections.asgard.mlflow.plugins.module_utils._verify_data import VerifyError  # noqa: E402
from ansible_collections.asgard.mlflow.plugins.module_utils._verify_options import ARG_SPEC, Options  # noqa: E402
from ansible_collections.asgard.mlflow.plugins.module_utils._verify_round import InputError, run_round  # noqa: E402


def argspec() -> dict:
    return kube_argspec(ARG_SPEC)


def _option_errors(params: dict) -> list[str]:
    try:
        Options.from_params(params)
    except VerifyError as exc:
        return str(exc).split("; ")
    return []


def main() -> None:
    module = kube_module(argspec(), validators=(_option_errors,))
    params = module.params
    opts = Options.from_params(params)
    state = None if params["restart"] else params["state"]
    try:
        api = api_from_module(module, timeout=min(float(opts.probe_timeout), 30.0))
        result = run_round(api, opts, state=state, errors=params["errors"], check_mode=module.check_mode)
    except (InputError, VerifyError) as exc:
        module.fail_json(msg=str(exc), changed=False)
    except KubeError as exc:
        module.fail_json(msg=f"mlflow_verify: {exc}", exception=traceback.format_exc())
    except Exception as exc:  # noqa: BLE001 - kubernetes config errors (CoreException, ConfigException)
        module.fail_json(msg=f"mlflow_verify: {exc}", exception=traceback.format_exc())
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
