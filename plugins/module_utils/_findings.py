# Copyright: (c) 2026, asgard.mlflow contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: the one catalogue of finding codes (mlflow_probe, its deep check, mlflow_verify, the plan, the report).

Every code is defined here once: the step that detects it, its severity (one vocabulary: ``critical`` - the server is
not usable, ``warning`` - a known cause of trouble, ``info`` - context), the remediation action (``patch`` with the
settings it targets, ``patch_ingress``, ``migrate``, ``restart`` or ``report``), whether it blocks a rollout restart (a restart cannot help
while it is present), what it means, the next step for a human, and the condition text of the documentation.
docs/verify.md's finding table is generated from ``CATALOGUE`` (``scripts/gen-docs.py``; a unit test fails when the
page differs).

Old codes renamed when near-duplicates were merged stay valid as ``ALIASES`` (``canonical()`` maps them).
"""

from __future__ import annotations

from dataclasses import dataclass

SEVERITIES = ("critical", "warning", "info")
SEVERITY_RANK = {"critical": 0, "warning": 1, "info": 2}
# patch_ingress: a merge patch of the Ingress annotations a finding names (counted as a ``patch`` remediation)
ACTIONS = ("patch", "patch_ingress", "migrate", "restart", "report", "none")
# the settings the patch role can enforce, in the order the report names them
PATCH_TARGETS = {"workers": "workers", "timeout": "gunicorn timeout/keep-alive",
                 "static_prefix": "remove the static prefix", "allowed_hosts": "allowed hosts",
                 "shell_exec": "exec before mlflow server in the shell script"}
STEP_TITLES = {
    "pods": "1. Pod status",
    "settings": "1b. Server settings",
    "logs": "2. Log scan",
    "service": "3. Service connectivity",
    "probe": "4. Health endpoint (mlflow_probe)",
    "transaction": "4b. Deep check (synthetic MLflow transaction)",
    "cleanup": "5. Port-forward clean-up",
    "ingress": "4c. Ingress in front of the Service",
    "port_forward": "6. Port-forward to the dashboard",
    "remediate": "Remediation",
}


@dataclass(frozen=True)
class Code:
    """One finding code. ``steps``: where it is detected (the first is its home)."""

    code: str
    steps: tuple
    severity: str
    action: str
    meaning: str
    next_step: str
    targets: tuple = ()
    restart_blocker: bool = False
    docs: str = ""  # the conditions/bounds column of the documentation (empty: the action says it all)


def _c(code, steps, severity, action, meaning, next_step, targets=(), blocker=False, docs=""):
    steps = (steps,) if isinstance(steps, str) else tuple(steps)
    return Code(code, steps, severity, action, meaning, next_step, tuple(targets), blocker, docs)


_ENTRIES = (
    # ------------------------------------------------------------------------------------------ step 1: pods
    _c("DEPLOYMENT_NOT_FOUND", "pods", "critical", "report", "the Deployment named by verify_deployment does not exist",
       "deploy MLflow (playbooks/deploy.yml) or set verify_deployment", blocker=True),
    _c("NAMESPACE_NOT_FOUND", ("pods", "probe"), "critical", "report", "the namespace does not exist",
       "set verify_namespace to the namespace MLflow runs in", blocker=True,
       docs="mlflow_verify fails at once (bad input), naming the namespace; nothing is read further"),
    _c("SCALED_TO_ZERO", "pods", "critical", "report", "the Deployment is scaled to 0 replicas",
       "kubectl scale deployment --replicas=1", blocker=True),
    _c("ROLLOUT_STALLED", "pods", "critical", "restart", "the rollout exceeded its progress deadline",
       "kubectl rollout status / describe the new ReplicaSet"),
    _c("ROLLOUT_INCOMPLETE", "pods", "warning", "report", "the rollout is still in progress",
       "wait for the rollout: kubectl rollout status"),
    _c("NO_PODS", "pods", "critical", "report", "no pod of the Deployment exists",
       "kubectl describe deployment / replicaset: pods are not being created", blocker=True),
    _c("POD_FAILED", "pods", "critical", "report", "a pod is in phase Failed (evicted, node pressure)",
       "kubectl describe pod (evicted? node pressure?)"),
    _c("POD_PENDING", "pods", "critical", "report", "a pod cannot be scheduled",
       "the pod cannot be scheduled: free resources, fix selectors/tolerations or the PVC", blocker=True),
    _c("IMAGE_PULL_FAILED", "pods", "critical", "report", "the image cannot be pulled",
       "fix the image reference or imagePullSecrets", blocker=True),
    _c("CONTAINER_CONFIG_ERROR", ("pods", "logs"), "critical", "report",
       "the container cannot start with its configuration: a missing Secret/ConfigMap/key, or a bad flag or option "
       "in its args (a usage error in the log of a container that exited with code 2 or crash loops)",
       "the container cannot start with its configuration (a missing Secret/ConfigMap/key, or a bad flag/option in "
       "its args): kubectl describe pod, fix the pod template", blocker=True,
       docs="the offending log line is the evidence; the CRASH_LOOP it causes is not restarted either"),
    _c("CRASH_LOOP", "pods", "critical", "restart", "a container is in CrashLoopBackOff",
       "read the previous container log: kubectl logs --previous",
       docs="only with no configuration cause (no patch or migration planned, no restart blocker present)"),
    _c("OOM_KILLED", "pods", "critical", "report", "a container was OOMKilled",
       "raise resources.limits.memory of the mlflow container (4 workers need ~1.5 GiB)", blocker=True),
    _c("RESTARTS", "pods", "warning", "report", "a container restarted (info when the last restart is older than "
       "verify_restart_window_seconds)", "read the previous container log: kubectl logs --previous"),
    _c("POD_NOT_READY", "pods", "critical", "restart", "a pod is running but not Ready",
       "kubectl describe pod; check the readiness probe path and the log",
       docs="only with no configuration cause (no patch or migration planned, no restart blocker present)"),
    _c("NO_MLFLOW_CONTAINER", "pods", "critical", "report",
       "no container of the pod template runs `mlflow server` (as parsed from its command, args and script)",
       "set verify_container to the container that runs `mlflow server`, or give it an explicit command",
       docs="settings and logs are not read (they would be guessed); the probe still runs"),
    _c("SEVERAL_MLFLOW_CONTAINERS", "pods", "critical", "report", "more than one container runs `mlflow server`",
       "set verify_container to the one to verify",
       docs="settings and logs are not read (they would be guessed); the probe still runs"),
    _c("CONTAINER_NOT_FOUND", "pods", "critical", "report",
       "verify_container names a container that does not exist or does not run `mlflow server`",
       "set verify_container to the container that runs `mlflow server` (or empty to find it)"),
    # --------------------------------------------------------------------------- step 1b: server settings
    _c("TOO_FEW_WORKERS", "settings", "warning", "patch", "the server runs fewer workers than verify_min_workers",
       "set mlflow server --workers to at least the minimum", targets=("workers",),
       docs="mlflow's `--workers` (at least verify_min_workers); the patch role is a no-op when compliant"),
    _c("WORKERS_INCONSISTENT", "settings", "warning", "patch",
       "--gunicorn-opts/--uvicorn-opts ask for a worker count that mlflow's own --workers overrides",
       "set the worker count once, with mlflow server --workers", targets=("workers",)),
    _c("SHORT_WORKER_TIMEOUT", "settings", "warning", "patch",
       "gunicorn --timeout is below verify_min_gunicorn_timeout (gunicorn only)",
       "set gunicorn --timeout to at least the minimum", targets=("timeout",),
       docs="gunicorn `--timeout` at least verify_min_gunicorn_timeout, keep-alive 5; not reported on uvicorn"),
    _c("STATIC_PREFIX_MISMATCH", "settings", "warning", "patch",
       "the server's --static-prefix is not verify_expected_static_prefix",
       "remove --static-prefix (no prefix is expected: verify_expected_static_prefix is empty) or set "
       "verify_expected_static_prefix", targets=("static_prefix",),
       docs="patched away only when no prefix is expected (the default); with a prefix expected it is reported, "
            "never guessed"),
    _c("STATIC_PREFIX_SET", "settings", "info", "none",
       "the server runs with the expected --static-prefix: the dashboard is under the prefix", "none"),
    _c("SHELL_WRAPPER_NO_EXEC", "settings", "warning", "patch",
       "a `sh -c` script runs `mlflow server` without `exec`: the shell is the container's PID 1, has no SIGTERM "
       "handler and drops the kubelet's SIGTERM, so every pod stop (rollout, restart, heal, delete) waits the whole "
       "terminationGracePeriodSeconds",
       "write `exec mlflow server ...` in the script (or give mlflow server as command/args lists)",
       targets=("shell_exec",),
       docs="`exec ` is inserted before the mlflow command only when the script is that one simple command (env "
            "assignments and redirections allowed) and MLflow is 3.x; a script with `;`, `&&`, `||`, pipes or "
            "several commands, or MLflow 2.x (whose CLI does not pass SIGTERM on), is reported with the next step. "
            "The patch rolls the pods once (that rollout still waits the grace period); bash execs a lone last "
            "command itself and is not reported"),
    # -------------------------------------------------------------------------------------- step 2: logs
    _c("WORKER_TIMEOUT", "logs", "warning", "patch", "gunicorn killed a worker that exceeded its timeout",
       "raise gunicorn --timeout and --workers", targets=("workers", "timeout"),
       docs="gunicorn only (reported on uvicorn)"),
    _c("WORKER_KILLED", "logs", "warning", "patch", "a worker was sent SIGKILL (timeout or out of memory)",
       "check memory limits and gunicorn --timeout", targets=("workers", "timeout"),
       docs="gunicorn only (reported on uvicorn)"),
    _c("INVALID_HOST_HEADER", "logs", "warning", "patch", "requests were rejected by MLflow's Host header check",
       "add the client's Host to MLFLOW_SERVER_ALLOWED_HOSTS", targets=("allowed_hosts",),
       docs="allowed hosts include localhost, 127.0.0.1, the Service DNS names with port and pod ranges; existing "
            "entries are kept"),
    _c("DB_SCHEMA_OUTDATED", "logs", "critical", "migrate",
       "the backend store schema is older than the server (mlflow db upgrade needed)",
       "run `mlflow db upgrade <backend-store-uri>` with the server's image",
       docs="a Job `<deployment>-verify-db-upgrade` runs `mlflow db upgrade` with the Deployment's image, env and "
            "volumes; the next round restarts the pods when it succeeded; a failed Job is reported (its last log "
            "line) and nothing is restarted"),
    _c("DB_SCHEMA_NEWER", "logs", "critical", "report",
       "the backend store was migrated by a newer MLflow than this image (a rollback?): no migration can fix it",
       "run the MLflow image that migrated the store (or a newer one), or restore the backend store's backup taken "
       "before that upgrade; `mlflow db upgrade` cannot downgrade", blocker=True),
    _c("TRACEBACK", "logs", "warning", "report", "Python tracebacks in the log",
       "read the tracebacks in the log samples"),
    _c("ERROR_LINES", "logs", "info", "report", "ERROR/CRITICAL lines in the log", "read the log samples"),
    # ----------------------------------------------------------------------------------- step 3: service
    _c("SERVICE_NOT_FOUND", ("service", "probe"), "critical", "report", "the Service does not exist",
       "create the Service (playbooks/deploy.yml) or set verify_service", blocker=True),
    _c("SERVICE_PORT_MISSING", ("service", "probe"), "critical", "report",
       "the Service does not expose verify_service_port",
       "add the expected port to the Service or set verify_service_port", blocker=True),
    _c("SERVICE_NO_SELECTOR", ("service", "probe"), "critical", "report",
       "the Service has no selector: its endpoints are managed by hand and it cannot be resolved to a pod",
       "give the Service a selector matching the MLflow pods", blocker=True),
    _c("SERVICE_SELECTOR_MISMATCH", "service", "critical", "report",
       "the Service selector matches none of the MLflow pods",
       "make the Service selector match the pod template labels", blocker=True),
    _c("TARGET_PORT_MISMATCH", ("service", "probe"), "critical", "report",
       "the Service's targetPort is not the port the MLflow container listens on",
       "make the Service targetPort match the container port / --port", blocker=True),
    _c("NO_READY_ENDPOINTS", "service", "critical", "report", "the Service has no ready endpoint",
       "the Service has no ready pod behind it: see step 1"),
    # -------------------------------------------------------------------------------------- step 4: probe
    _c("HEALTH_FAILED", "probe", "critical", "restart", "the health path does not answer 200",
       "check the health path (under --static-prefix on MLflow >= 3.7) and the log",
       docs="only with no configuration cause"),
    _c("HEALTH_UNDER_PREFIX", "probe", "info", "none", "health answers under the static prefix (MLflow >= 3.7)",
       "none"),
    _c("ROOT_NOT_FOUND", "probe", "critical", "patch", "`/` answers 404",
       "remove --static-prefix or open the dashboard under the prefix", targets=("static_prefix",),
       docs="patch (remove `--static-prefix`; probes follow `/health`) only when the server runs a prefix and none is "
            "expected; without a prefix, or with verify_expected_static_prefix set, reported and never guessed"),
    _c("ROOT_UNDER_PREFIX", "probe", "info", "none",
       "the dashboard answers under the expected static prefix (GET / 404 is expected with a prefix)", "none"),
    _c("ROOT_NO_TITLE", "probe", "warning", "report", "`/` answers without the MLflow UI title",
       "`/` answers without the MLflow UI: check an Ingress/proxy in front or the image"),
    _c("ROOT_FAILED", "probe", "critical", "restart", "`/` fails", "`/` fails: read the server log",
       docs="HTTP 401 is AUTH_REQUIRED or AUTH_REJECTED instead"),
    _c("VERSION_FAILED", "probe", "warning", "report", "`/version` fails", "`/version` fails: read the server log"),
    _c("INVALID_HOST", "probe", "critical", "patch",
       "MLflow rejects the in-cluster Service DNS name with 403 Invalid Host header",
       "add the client's Host to MLFLOW_SERVER_ALLOWED_HOSTS", targets=("allowed_hosts",),
       docs="allowed hosts include localhost, 127.0.0.1, the Service DNS names with port and pod ranges; existing "
            "entries are kept"),
    _c("API_FAILED", "probe", "critical", "report", "the REST API call that reads the backend store fails",
       "the REST API fails: check the backend store (database reachable, schema)"),
    _c("AUTH_REQUIRED", "probe", "warning", "report",
       "MLflow asks for credentials (HTTP 401 on `/`, `/version` or the API; --app-name basic-auth) and verify sent none",
       "set verify_auth_username and verify_auth_secret ({name: mlflow-auth} as the deploy role writes it) or a "
       "vaulted verify_auth_password, so that step 4 checks the dashboard and the API as a user", blocker=True,
       docs="report-only, never restarted: `/health` answers without credentials, the rest was not checked"),
    _c("AUTH_REJECTED", "probe", "critical", "report",
       "MLflow refuses the credentials verify sent (HTTP 401 with verify_auth_username and its password)",
       "check verify_auth_username and the password source (the Secret and key named by verify_auth_secret, or "
       "verify_auth_password); MLflow keeps the admin password in its auth database from the first start, so a "
       "Secret changed later does not change it", blocker=True,
       docs="report-only, never restarted; the password is never printed"),
    _c("NO_READY_POD", "probe", "critical", "report", "no Ready pod behind the target",
       "no ready pod behind the Service: see step 1"),
    _c("POD_NOT_FOUND", "probe", "critical", "report", "the pod named in the probe target does not exist",
       "the pod named in the probe target does not exist"),
    _c("POD_REPLACED", "probe", "info", "none", "the pod was replaced during the probe; the probe followed it", "none"),
    _c("RETRIED", "probe", "info", "none", "transient failures were retried", "none"),
    _c("TUNNEL_ERROR", "probe", "critical", "report", "the API server's pods/portforward tunnel failed",
       "the API server portforward failed: check RBAC pods/portforward and the node", blocker=True),
    _c("TIMEOUT", "probe", "critical", "restart", "the server does not answer in time",
       "the server does not answer in time: check CPU/memory and the log", docs="only with no configuration cause"),
    _c("KUBE_API_ERROR", ("probe", "pods"), "critical", "report", "a Kubernetes API request failed",
       "the Kubernetes API failed: check credentials/RBAC and retry", blocker=True),
    _c("PROBE_ERROR", "probe", "critical", "report", "mlflow_probe could not run",
       "mlflow_probe could not run: see its message"),
    _c("PROBE_UNHEALTHY", "probe", "critical", "restart", "mlflow_probe reports the server unhealthy",
       "read the probe checks in the report", docs="only with no configuration cause"),
    # ------------------------------------------------------------------------ step 4b: deep check (transaction)
    _c("WORKER_KILLED_DURING_REQUEST", "transaction", "critical", "patch",
       "gunicorn killed the worker serving a request of the deep check (5xx or broken connection while the log "
       "shows WORKER TIMEOUT/SIGKILL)",
       "gunicorn killed the worker serving the deep check's request: raise gunicorn --timeout above the longest "
       "upload/download (or run uvicorn), then re-run verify.yml with verify_transaction=true", targets=("timeout",),
       docs="gunicorn only (on uvicorn reported: read the log, memory limits); the failed request it explains is "
            "not reported separately; step 4b then runs again with the same size and pacing"),
    _c("WRITE_FAILED", "transaction", "critical", "report", "the backend store refuses writes",
       "the backend store refuses writes: check the database (read-only file or volume, permissions, disk full, "
       "database user grants) and the server log"),
    _c("ARTIFACT_UPLOAD_FAILED", "transaction", "critical", "report", "the artifact proxy refuses uploads",
       "the artifact proxy refuses uploads: check --serve-artifacts, --artifacts-destination (writable volume, "
       "object-store credentials) and the log"),
    _c("ARTIFACT_DOWNLOAD_FAILED", "transaction", "critical", "report", "the artifact proxy fails downloads",
       "the artifact proxy fails downloads: check --artifacts-destination and the server log"),
    _c("ARTIFACT_MISMATCH", "transaction", "critical", "report", "the artifact came back different",
       "the artifact came back different: check the artifact store and any proxy between clients and MLflow (body "
       "size limits, rewriting)"),
    _c("TRANSACTION_AUTH_FAILED", "transaction", "critical", "report", "MLflow refused the deep check (401/403)",
       "MLflow refused the deep check: set verify_transaction_username / verify_transaction_password to a user "
       "allowed to create experiments and runs"),
    _c("TRANSACTION_READ_FAILED", "transaction", "critical", "report",
       "the run written by the deep check could not be read back",
       "the run written by the deep check could not be read back: check the backend store and the server log"),
    _c("TRANSACTION_CLEANUP_FAILED", "transaction", "warning", "report", "synthetic runs could not be deleted",
       "delete the synthetic runs of the deep check's experiment by hand (they are tagged asgard.synthetic)"),
    _c("SLOW_UPLOAD", "transaction", "warning", "report", "artifact uploads are slower than min_upload_rate",
       "artifact uploads are slow: check the network path, CPU limits of the server and the artifact store's "
       "throughput"),
    _c("TRANSACTION_SKIPPED", "transaction", "info", "none",
       "the deep check did not run (check mode, unless verify_transaction_in_check_mode)", "none"),
    _c("TRANSACTION_ERROR", "transaction", "critical", "report", "the deep check could not run",
       "the deep check could not run: see its message"),
    # ------------------------------------------------------------------------------- step 4c: ingress
    _c("INGRESS_NOT_READABLE", "ingress", "info", "none",
       "the Ingresses (or their TLS Secrets) could not be read: the credentials lack list ingresses (get secrets)",
       "grant list on ingresses.networking.k8s.io (get on secrets for TLS) in the namespace to check the Ingress",
       docs="never a failure: the rest of the checks run"),
    _c("INGRESS_NOT_FOUND", "ingress", "warning", "report", "the Ingress named by verify_ingress_name does not exist",
       "create the Ingress (deploy_ingress_enabled) or set verify_ingress_name (empty: the Ingresses that route to "
       "verify_service)"),
    _c("INGRESS_BACKEND_MISMATCH", "ingress", "critical", "report",
       "an Ingress routes to a port the Service does not expose (503 through it)",
       "set the Ingress backend's service port to a port of the Service (verify_service_port)"),
    _c("INGRESS_PATH_MISMATCH", "ingress", "critical", "report",
       "an Ingress path does not fit the server's static prefix (404 through it)",
       "make the Ingress path / when the server runs without --static-prefix, or the prefix (deploy_static_prefix) "
       "when it runs with one; or add a rewrite-target",
       docs="paths with a rewrite-target annotation are not judged"),
    _c("INGRESS_HOST_NOT_ALLOWED", "ingress", "critical", "patch",
       "an Ingress host is not in the server's allowed hosts (MLflow >= 3.5 answers 403 Invalid Host header)",
       "add the Ingress host to MLFLOW_SERVER_ALLOWED_HOSTS", targets=("allowed_hosts",),
       docs="the patch adds the host (and host:*) to the allowed hosts; existing entries are kept"),
    _c("INGRESS_BODY_TOO_SMALL", "ingress", "warning", "patch_ingress",
       "the Ingress' proxy-body-size (ingress-nginx default 1m) is below verify_ingress_min_body_size: larger "
       "artifact uploads get 413",
       "set the annotation nginx.ingress.kubernetes.io/proxy-body-size on the Ingress to verify_ingress_min_body_size "
       "(deploy_ingress_body_size)",
       docs="a merge patch of proxy-body-size only (check mode and diff); a Helm-managed Ingress is reported with the "
            "value to set; patched to verify_ingress_min_body_size (default 100m: a deliberate 500m is kept; '0' asks for no "
            "limit)"),
    _c("INGRESS_TIMEOUT_TOO_SHORT", "ingress", "warning", "patch_ingress",
       "the Ingress' proxy-read/send-timeout (ingress-nginx default 60 s) is below the server's worker timeout: "
       "longer requests get 504",
       "set nginx.ingress.kubernetes.io/proxy-read-timeout and proxy-send-timeout on the Ingress to the worker "
       "timeout (deploy_proxy_timeout)",
       docs="a merge patch of the short timeout annotations only (a Helm-managed Ingress is reported); the worker "
            "timeout: gunicorn's --timeout, at least verify_min_gunicorn_timeout (on uvicorn that minimum)"),
    _c("INGRESS_TLS_MISSING", "ingress", "warning", "report",
       "the Ingress' TLS Secret is not named, absent, not of type kubernetes.io/tls or holds no certificate",
       "create the kubernetes.io/tls Secret named in the Ingress (kubectl create secret tls)"),
    _c("INGRESS_TLS_EXPIRING", "ingress", "warning", "report",
       "the Ingress' certificate does not cover its host or expires within verify_tls_min_days (critical once "
       "expired)",
       "renew the certificate in the TLS Secret (covering every host of the Ingress)"),
    # through the Ingress endpoint (_ingress_http): requests from where verify runs
    _c("INGRESS_NO_ENDPOINT", "ingress", "info", "none",
       "no endpoint is known for the Ingress (no status.loadBalancer address, no verify_ingress_url): no request was "
       "sent through it", "set verify_ingress_url to the address of the ingress controller (e.g. "
       "https://lb.example.com) to check the Ingress end to end",
       docs="never a failure: the Ingress object is still checked"),
    _c("INGRESS_UNREACHABLE", "ingress", "warning", "report",
       "a request to the Ingress endpoint could not connect or got no answer within verify_probe_timeout",
       "check that the endpoint (status.loadBalancer or verify_ingress_url) is reachable from where verify runs "
       "(firewall, internal load balancer), or set verify_ingress_url",
       docs="the remaining requests through that Ingress are skipped; a warning, as the controller's published "
            "address may be reachable only from inside the network"),
    _c("INGRESS_TLS_INVALID", "ingress", "warning", "report",
       "the certificate the Ingress endpoint presents for the host (SNI) is not valid (unknown CA, wrong host, "
       "expired)", "renew or fix the certificate in the Ingress' TLS Secret, or give its CA in verify_ingress_ca_cert",
       docs="never accepted silently: the requests go on without verification and without credentials, to judge "
            "the rest; verify_ingress_validate_certs=false skips the check"),
    _c("INGRESS_HEALTH_FAILED", "ingress", "critical", "report",
       "GET <Ingress path>/health through the Ingress does not answer 200 (the server does, through the "
       "port-forward)", "read the status in the finding: 404 path/prefix, 502/503 backend, 504 timeout"),
    _c("INGRESS_ROOT_FAILED", "ingress", "critical", "report",
       "GET <Ingress path>/ through the Ingress does not answer 200 with the MLflow title: the dashboard is not "
       "served through it", "a 404 means the Ingress path and the server's static prefix disagree (see "
       "INGRESS_PATH_MISMATCH) or a rewrite-target is missing"),
    _c("INGRESS_UPLOAD_REFUSED", "ingress", "warning", "patch_ingress",
       "an upload of verify_ingress_min_body_size is refused with 413 through the Ingress (sent as Content-Length "
       "with Expect: 100-continue; the body is never sent)",
       "raise nginx.ingress.kubernetes.io/proxy-body-size (or the controller's ConfigMap proxy-body-size, or the "
       "limit of a proxy in front of it)",
       docs="healed by the INGRESS_BODY_TOO_SMALL patch of the same Ingress (one patch); without that finding (the "
            "annotation already allows the size) reported: the limit is elsewhere"),
    _c("INGRESS_AUTH_REQUIRED", "ingress", "info", "none",
       "a request through the Ingress answers 401: the server (or the Ingress) requires authentication",
       "none", docs="not a broken Ingress: reported as context"),
    # the Gateway API HTTPRoutes in front of the Service (same step, beside the Ingresses: _step_route)
    _c("ROUTE_NOT_READABLE", "ingress", "info", "none",
       "the HTTPRoutes (or a parent Gateway) could not be read: the credentials lack list httproutes (get gateways)",
       "grant list on httproutes.gateway.networking.k8s.io in the namespace (get on gateways in each Gateway's "
       "namespace) to check the route",
       docs="never a failure: the rest of the checks run; without get on a Gateway its Programmed condition is not "
            "judged (the route's own Accepted condition still is)"),
    _c("ROUTE_NOT_FOUND", "ingress", "warning", "report", "the HTTPRoute named by verify_route_name does not exist",
       "create the HTTPRoute (deploy_route_enabled) or set verify_route_name (empty: the HTTPRoutes whose "
       "backendRefs name verify_service)"),
    _c("ROUTE_NOT_ACCEPTED", "ingress", "critical", "report",
       "a parent Gateway has not accepted the HTTPRoute (status.parents[].conditions Accepted is not True, or no "
       "controller reports on it): nothing is routed",
       "read the condition's reason (NotAllowedByListeners, NoMatchingListenerHostname, NoMatchingParent, ...) and "
       "fix the route's parentRefs/hostnames or the Gateway's listeners (allowedRoutes)"),
    _c("ROUTE_REFS_UNRESOLVED", "ingress", "critical", "report",
       "the HTTPRoute's references are not resolved (ResolvedRefs is not True: a missing Service or port, a "
       "cross-namespace backend without a ReferenceGrant)",
       "read the condition's reason (BackendNotFound, RefNotPermitted, InvalidKind) and fix the backendRef"),
    _c("ROUTE_GATEWAY_NOT_PROGRAMMED", "ingress", "critical", "report",
       "a Gateway the HTTPRoute names does not exist or is not Programmed (status.conditions): no traffic reaches "
       "the route",
       "create the Gateway (deploy_route_gateway_name names it) or fix it: kubectl describe gateway"),
    _c("ROUTE_BACKEND_MISMATCH", "ingress", "critical", "report",
       "an HTTPRoute backendRef names a port the Service does not expose",
       "set the backendRef port to a port of the Service (verify_service_port)"),
    _c("ROUTE_PATH_MISMATCH", "ingress", "critical", "report",
       "an HTTPRoute path match does not fit the server's static prefix (404 through it)",
       "make the path match / when the server runs without --static-prefix, or the prefix (deploy_static_prefix) "
       "when it runs with one; or add a URLRewrite filter",
       docs="rules with a URLRewrite filter and RegularExpression matches are not judged"),
    _c("ROUTE_HOST_NOT_ALLOWED", "ingress", "critical", "patch",
       "an HTTPRoute hostname is not in the server's allowed hosts (MLflow >= 3.5 answers 403 Invalid Host header)",
       "add the route's hostname to MLFLOW_SERVER_ALLOWED_HOSTS", targets=("allowed_hosts",),
       docs="the patch adds the hostname (and hostname:*) to the allowed hosts, as for an Ingress host"),
    _c("ROUTE_TIMEOUT_TOO_SHORT", "ingress", "warning", "report",
       "an HTTPRoute rule's timeouts.request or timeouts.backendRequest is shorter than the server's worker timeout: "
       "longer requests time out at the Gateway",
       "apply the JSON patch the finding names (only the short timeouts of the rules concerned), or set "
       "deploy_proxy_timeout and re-run deploy",
       docs="reported, not patched: Gateway API timeouts are an Extended feature and the route is often owned with "
            "the Gateway; unset timeouts (the implementation's default) and 0s (none) are not judged"),
    # ----------------------------------------------------------------------------- steps 5-6 and remediation
    _c("PORT_FORWARD_FAILED", "port_forward", "warning", "report",
       "the dashboard port-forward could not start (the local port is held by another process)",
       "the dashboard port-forward could not start: free the local port (the finding names the process holding it; "
       "it was left alone) or set verify_port_forward_local_port to a free port, then re-run verify.yml",
       docs="a stale `kubectl port-forward` on the port is stopped instead (verify_port_forward_cleanup); the run "
            "fails when the forward was asked for, even with MLflow healthy (status degraded)"),
    _c("HELM_MANAGED", "remediate", "warning", "report",
       "the Deployment is managed by Helm: a patch would be reverted by the next `helm upgrade`, so none is made",
       "set the chart values named by the finding and run `helm upgrade` (or set "
       "verify_patch_vars.patch_allow_helm_managed=true to patch anyway)",
       docs="planned once, never retried in a later round; the report names the chart values to set"),
    _c("REMEDIATION_IN_PROGRESS", "remediate", "warning", "report",
       "another run holds the remediation lock (a Lease) of this Deployment: nothing was remediated by this run",
       "wait for the other run (the finding names its holder and since when) and re-run verify.yml",
       docs="the run waits for the Lease up to a bound first; a change made by the other run is never reported as "
            "this run's"),
)

CATALOGUE: dict[str, Code] = {e.code: e for e in _ENTRIES}
if len(CATALOGUE) != len(_ENTRIES):  # pragma: no cover - a duplicate is a programming error
    raise RuntimeError("_findings: a code is defined twice")
# old code -> the code it was merged into (near-duplicates; the old codes stay valid here)
ALIASES = {"SERVICE_WITHOUT_SELECTOR": "SERVICE_NO_SELECTOR", "PORT_NOT_FOUND": "SERVICE_PORT_MISSING"}
RESTART_BLOCKERS = frozenset(c for c, e in CATALOGUE.items() if e.restart_blocker)
_UNKNOWN = Code("", ("",), "warning", "report", "a finding of a custom log pattern", "see the finding's evidence")


def canonical(code: str) -> str:
    return ALIASES.get(code, code)


def lookup(code: str) -> Code:
    """The catalogue entry of ``code`` (aliases resolved); custom codes (verify_log_patterns) get a report entry."""
    return CATALOGUE.get(canonical(code)) or _UNKNOWN


def finding(code: str, message: str, evidence: dict | None = None, *, step: str | None = None,
            severity: str | None = None) -> dict:
    """A finding: ``{code, severity, step, message, evidence}``; severity and step default to the catalogue's.

    Messages and evidence must already be redacted by the caller (they come from the cluster).
    """
    code = canonical(code)
    entry = CATALOGUE.get(code)
    sev = severity or (entry.severity if entry else "warning")
    if sev not in SEVERITIES:
        raise ValueError(f"finding {code}: severity must be one of {', '.join(SEVERITIES)}, got {sev!r}")
    out = {"code": code, "severity": sev, "message": message, "evidence": evidence or {}}
    out["step"] = step or (entry.steps[0] if entry else "")
    return out


def status_of(findings: list[dict]) -> str:
    """A step's status from its findings: failed (a critical), warning, ok."""
    sev = {f.get("severity") for f in findings}
    if "critical" in sev:
        return "failed"
    if "warning" in sev:
        return "warning"
    return "ok"


def sort_findings(findings: list[dict]) -> list[dict]:
    return sorted(findings, key=lambda f: (SEVERITY_RANK.get(f.get("severity"), 9), f.get("code", "")))


def step_result(step: str, findings: list[dict], summary: str, details: dict | None = None,
                status: str | None = None) -> dict:
    """``{step, title, status, summary, findings, details}``; status from the findings unless given (skipped)."""
    findings = sort_findings(findings)
    return {"step": step, "title": STEP_TITLES.get(step, step), "status": status or status_of(findings),
            "summary": summary, "findings": findings, "details": details or {}}


def docs_table() -> str:
    """The finding table of docs/verify.md (Markdown), one row per code in catalogue order, then the aliases."""
    rows = ["| Code | Step | Severity | Action | Restart blocker | What it means | Next step for a human | Notes |",
            "|---|---|---|---|---|---|---|---|"]
    for e in _ENTRIES:
        action = e.action if e.action != "patch" else "patch: " + ", ".join(PATCH_TARGETS[t] for t in e.targets)
        action = "patch: Ingress annotations" if action == "patch_ingress" else action
        rows.append(f"| `{e.code}` | {', '.join(e.steps)} | {e.severity} | {action} | "
                    f"{'yes' if e.restart_blocker else ''} | {_md(e.meaning)} | "
                    f"{_md(e.next_step) if e.next_step != 'none' else ''} | {_md(e.docs)} |")
    rows.append("")
    rows.append("Aliases (old codes, still accepted): "
                + ", ".join(f"`{old}` -> `{new}`" for old, new in sorted(ALIASES.items())) + ".")
    return "\n".join(rows)


def _md(text: str) -> str:
    return text.replace("|", "\\|")
