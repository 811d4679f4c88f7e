# Copyright: (c) 2026, asgard.mlflow contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: what one round of verify reads from the Kubernetes API, and the rollout wait (a watch, not a poll).

One round of a healthy server costs 6 requests: the Deployment, its pods, the MLflow container's log, the Service,
its EndpointSlices (Endpoints when the API has none) and the probe's portforward tunnel; ConfigMaps only when the
container takes env from them, the namespace only when the Deployment is missing; the Ingresses of the namespace (one
list) and the TLS Secrets of those that route to the Service; the HTTPRoutes of the namespace (one list; none
without the Gateway API) and, only when one routes to the Service, each parent Gateway it names (one get each). Transient API errors (429, 5xx,
a dropped connection) are retried with backoff; 401/403 are reported with what to do.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

from ansible_collections.asgard.mlflow.plugins.module_utils._kube import KubeError, credentials_hint
from ansible_collections.asgard.mlflow.plugins.module_utils._step_ingress import secret_summary, selected, tls_secret_names
from ansible_collections.asgard.mlflow.plugins.module_utils._step_logs import log_targets
from ansible_collections.asgard.mlflow.plugins.module_utils import _step_route as ROUTE
from ansible_collections.asgard.mlflow.plugins.module_utils._step_pods import rollout_state
from ansible_collections.asgard.mlflow.plugins.module_utils._redact import redact
from ansible_collections.asgard.mlflow.plugins.module_utils._settings import configmap_names

_REVISION = "deployment.kubernetes.io/revision"
_TEMPLATE_HASH = "pod-template-hash"
_HOPELESS = {"CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "InvalidImageName", "CreateContainerConfigError",
             "CreateContainerError", "RunContainerError"}


class ReadError(Exception):
    """A read that cannot be retried into success (401, 403, an unreachable server after the retries)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


@dataclass
class Snapshot:
    """The objects of one round (None/[] when absent)."""

    deployment: dict | None = None
    pods: list = field(default_factory=list)
    configmaps: list = field(default_factory=list)
    logs: list = field(default_factory=list)
    service: dict | None = None
    endpoint_slices: list = field(default_factory=list)
    endpoints: dict | None = None
    namespace_missing: bool = False
    ingresses: list = field(default_factory=list)  # those the ingress step judges
    ingress_error: str = ""  # why they could not be listed (403)
    tls_secrets: dict = field(default_factory=dict)  # name -> {type, crt} (never the key), None when absent
    secrets_error: str = ""
    routes: list = field(default_factory=list)  # the HTTPRoutes the ingress step judges
    route_error: str = ""  # why they could not be listed (403)
    gateways: dict = field(default_factory=dict)  # "namespace/name" -> {programmed, reason, message}, None when absent
    gateway_errors: dict = field(default_factory=dict)  # "namespace/name" -> why it could not be read (403)


class Reader:
    """GETs through ``_kube.KubeAPI`` with retries."""

    def __init__(self, api, namespace: str, *, retries: int = 3, sleep=time.sleep, clock=time.monotonic):
        self.api = api
        self.ns = namespace
        self.retries = retries
        self.sleep = sleep
        self.clock = clock

    # ------------------------------------------------------------------------------------------ plain reads
    def _call(self, what: str, fn, *args, missing_ok: bool = True):
        attempt = 0
        while True:
            try:
                return fn(*args)
            except KubeError as exc:
                if exc.status == 404 and missing_ok:
                    return None
                if exc.status in (401, 403):
                    raise ReadError(f"reading {what}: {credentials_hint(exc.status)} ({redact(str(exc), limit=300)})",
                                    exc.status) from exc
                if not exc.transient or attempt >= self.retries:
                    raise ReadError(f"reading {what} failed: {redact(str(exc), limit=300)}", exc.status) from exc
                self.sleep(min(4.0, 0.5 * 2 ** attempt) * (0.75 + random.random() / 2))
                attempt += 1

    def get(self, what: str, path: str, query=None):
        return self._call(what, self.api.get, path, query)

    def text(self, what: str, path: str, query=None):
        return self._call(what, lambda p, q: self.api.get_text(p, q, accept="text/plain"), path, query)

    def snapshot(self, *, deployment: str, service: str, label_selectors: list[str], container: str | None,
                 steps: set, log_tail_lines: int, log_since_seconds: int, ingress_name: str = "", route_name: str = "") -> Snapshot:
        ns = self.ns
        snap = Snapshot()
        snap.deployment = self.get(f"Deployment {ns}/{deployment}",
                                   f"/apis/apps/v1/namespaces/{ns}/deployments/{deployment}")
        if snap.deployment is None:
            snap.namespace_missing = self.get(f"namespace {ns}", f"/api/v1/namespaces/{ns}") is None
            if snap.namespace_missing:
                return snap
        selector = ",".join(label_selectors) if label_selectors else ",".join(
            f"{k}={v}" for k, v in sorted((((snap.deployment or {}).get("spec") or {}).get("selector") or {})
                                          .get("matchLabels", {}).items()))
        if selector:
            pods = self.get(f"pods {selector} in {ns}", f"/api/v1/namespaces/{ns}/pods", [("labelSelector", selector)])
            snap.pods = (pods or {}).get("items") or []
        if snap.deployment and ({"pods", "logs"} & steps):
            for name in configmap_refs(snap.deployment):
                cm = self.get(f"ConfigMap {ns}/{name}", f"/api/v1/namespaces/{ns}/configmaps/{name}")
                if cm:
                    snap.configmaps.append(cm)
        if "logs" in steps:
            for t in log_targets(snap.pods, container):
                q = [("container", t["container"]), ("tailLines", str(log_tail_lines))]
                if log_since_seconds > 0:
                    q.append(("sinceSeconds", str(log_since_seconds)))
                if t["previous"]:
                    q.append(("previous", "true"))
                try:
                    txt = self.text(f"log of {t['pod']}/{t['container']}",
                                    f"/api/v1/namespaces/{ns}/pods/{t['pod']}/log", q)
                    snap.logs.append({**t, "text": txt or "", "failed": txt is None})
                except ReadError as exc:
                    if exc.status in (401, 403):
                        raise
                    snap.logs.append({**t, "text": "", "failed": True, "error": str(exc)})
        if {"service", "probe"} & steps:
            snap.service = self.get(f"Service {ns}/{service}", f"/api/v1/namespaces/{ns}/services/{service}")
        if "service" in steps and snap.service is not None:
            sl = self.get(f"EndpointSlices of {service}", f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices",
                          [("labelSelector", f"kubernetes.io/service-name={service}")])
            snap.endpoint_slices = (sl or {}).get("items") or []
            if not snap.endpoint_slices:
                snap.endpoints = self.get(f"Endpoints {ns}/{service}", f"/api/v1/namespaces/{ns}/endpoints/{service}")
        if "ingress" in steps and snap.deployment is not None:
            self._ingresses(snap, service, ingress_name)
            self._routes(snap, service, route_name)
        return snap

    def _ingresses(self, snap: Snapshot, service: str, ingress_name: str) -> None:
        """The Ingresses of the namespace that route to the Service (one list) and their TLS Secrets (reduced to
        type and certificate at once). A 403 is recorded, never raised: the ingress step is optional."""
        ns = self.ns
        try:
            items = (self.get(f"Ingresses in {ns}", f"/apis/networking.k8s.io/v1/namespaces/{ns}/ingresses")
                     or {}).get("items") or []
        except ReadError as exc:
            if exc.status != 403:
                raise
            snap.ingress_error = f"list ingresses.networking.k8s.io in {ns} is forbidden to these credentials"
            return
        snap.ingresses = selected(items, service, ingress_name)
        for name in tls_secret_names(snap.ingresses):
            try:
                snap.tls_secrets[name] = secret_summary(self.get(f"Secret {ns}/{name}",
                                                                 f"/api/v1/namespaces/{ns}/secrets/{name}"))
            except ReadError as exc:
                if exc.status != 403:
                    raise
                snap.secrets_error = f"get secrets in {ns} is forbidden to these credentials: TLS not checked"
                return

    def _routes(self, snap: Snapshot, service: str, route_name: str) -> None:
        """The HTTPRoutes of the namespace that route to the Service (one list; a 404 - no Gateway API installed - is
        none) and the Gateways they name (one get each, reduced to the Programmed condition at once). A 403 is recorded,
        never raised: Gateways may live in a namespace these credentials cannot read."""
        ns = self.ns
        try:
            items = (self.get(f"HTTPRoutes in {ns}", f"/apis/gateway.networking.k8s.io/v1/namespaces/{ns}/httproutes") or {}).get("items") or []
        except ReadError as exc:
            if exc.status != 403:
                raise
            snap.route_error = f"list httproutes.{ROUTE.GROUP} in {ns} is forbidden to these credentials"
            return
        snap.routes = ROUTE.selected(items, service, route_name)
        for key in ROUTE.gateway_keys(snap.routes):
            gns, name = key.split("/", 1)
            try:
                snap.gateways[key] = ROUTE.gateway_summary(self.get(
                    f"Gateway {key}", f"/apis/gateway.networking.k8s.io/v1/namespaces/{gns}/gateways/{name}"))
            except ReadError as exc:
                if exc.status != 403:
                    raise
                snap.gateway_errors[key] = f"get gateways.{ROUTE.GROUP} in {gns} is forbidden to these credentials"

    def job_outcome(self, name: str) -> dict:
        """A migration Job's outcome: ``{found, succeeded, failed, last_line}`` (the last error line of its log)."""
        job = self.get(f"Job {self.ns}/{name}", f"/apis/batch/v1/namespaces/{self.ns}/jobs/{name}")
        if not job:
            return {"found": False, "succeeded": False, "failed": False, "last_line": ""}
        st = job.get("status") or {}
        ok = (st.get("succeeded") or 0) >= 1
        out = {"found": True, "succeeded": ok, "failed": not ok, "last_line": ""}
        if not ok:
            pods = (self.get(f"pods of Job {name}", f"/api/v1/namespaces/{self.ns}/pods",
                             [("labelSelector", f"job-name={name}")]) or {}).get("items") or []
            pods.sort(key=lambda p: (p.get("metadata") or {}).get("creationTimestamp") or "")
            if pods:
                txt = self.text("log of the Job's pod", f"/api/v1/namespaces/{self.ns}/pods/"
                                f"{pods[-1]['metadata']['name']}/log", [("tailLines", "40")]) or ""
                out["last_line"] = error_line(txt)
        return out

    # ------------------------------------------------------------------------------------------ the watch
    def wait_rollout(self, deployment: str, timeout: float) -> dict:
        """Wait until the Deployment's rollout is complete, watching it (not polling). Ends early when it is stalled
        (progress deadline) or a new pod cannot start (crash loop, image pull, config error): waiting cannot help.
        Returns ``{state, waited_s, reason}``."""
        t0 = self.clock()
        end = t0 + max(1.0, timeout)
        path = f"/apis/apps/v1/namespaces/{self.ns}/deployments"
        dep = self.get(f"Deployment {self.ns}/{deployment}", f"{path}/{deployment}")
        while dep is not None:
            ro = rollout_state(dep)
            if ro["state"] in ("complete", "stalled", "scaled_to_zero"):
                return {"state": ro["state"], "waited_s": round(self.clock() - t0, 2), "reason": ""}
            left = end - self.clock()
            if left <= 0:
                return {"state": "timeout", "waited_s": round(self.clock() - t0, 2),
                        "reason": f"the rollout did not complete within {timeout:g}s"}
            hopeless = self._hopeless(dep)
            if hopeless:
                return {"state": "failing", "waited_s": round(self.clock() - t0, 2), "reason": hopeless}
            window = int(max(1, min(left, 10)))
            rv = (dep.get("metadata") or {}).get("resourceVersion") or ""
            q = [("watch", "1"), ("fieldSelector", f"metadata.name={deployment}"), ("timeoutSeconds", str(window)),
                 ("allowWatchBookmarks", "true")]
            if rv:
                q.append(("resourceVersion", rv))
            newer = None
            try:
                for event in self.api.watch(path, q, timeout=window + 5):
                    if event.get("type") in ("ADDED", "MODIFIED"):
                        newer = event.get("object") or newer
                        if rollout_state(newer)["state"] in ("complete", "stalled"):
                            break
                    elif event.get("type") == "DELETED":
                        return {"state": "deleted", "waited_s": round(self.clock() - t0, 2),
                                "reason": "the Deployment was deleted"}
                    elif event.get("type") == "ERROR":  # 410 Gone: read it again
                        newer = None
                        break
            except KubeError:
                self.sleep(0.5)
            dep = newer or self.get(f"Deployment {self.ns}/{deployment}", f"{path}/{deployment}")
        return {"state": "deleted", "waited_s": round(self.clock() - t0, 2), "reason": "the Deployment is gone"}

    def _hopeless(self, dep: dict) -> str:
        """A reason when a pod of the current template cannot start (nothing to wait for)."""
        sel = ",".join(f"{k}={v}" for k, v in sorted(((dep.get("spec") or {}).get("selector") or {})
                                                     .get("matchLabels", {}).items()))
        if not sel:
            return ""
        # only the pods of the current template count: the old ReplicaSet's pods may crash loop while the new one
        # starts (the reason for the rollout); the new ReplicaSet is the one with the Deployment's revision
        # (deployment.kubernetes.io/revision), its pods carry its pod-template-hash
        revision = ((dep.get("metadata") or {}).get("annotations") or {}).get(_REVISION)
        sets = (self.get("ReplicaSets", f"/apis/apps/v1/namespaces/{self.ns}/replicasets",
                         [("labelSelector", sel)]) or {}).get("items") or []
        current = next((((r.get("metadata") or {}).get("labels") or {}).get(_TEMPLATE_HASH) for r in sets
                        if ((r.get("metadata") or {}).get("annotations") or {}).get(_REVISION) == revision), None)
        if not revision or not current:
            return ""  # the current template's pods cannot be told apart: wait for the rollout instead
        sel = f"{sel},{_TEMPLATE_HASH}={current}"
        pods = (self.get("pods", f"/api/v1/namespaces/{self.ns}/pods", [("labelSelector", sel)]) or {}).get("items") or []
        for p in pods:
            if (p.get("metadata") or {}).get("deletionTimestamp"):
                continue
            for cs in (p.get("status") or {}).get("containerStatuses") or []:
                reason = ((cs.get("state") or {}).get("waiting") or {}).get("reason", "")
                if reason in _HOPELESS and (reason != "CrashLoopBackOff" or (cs.get("restartCount") or 0) >= 2):
                    return f"pod {p['metadata']['name']} container {cs.get('name')}: {reason}"
        return ""


def configmap_refs(deployment: dict) -> list[str]:
    """Names of the ConfigMaps the pod template's containers read env from."""
    spec = (((deployment or {}).get("spec") or {}).get("template") or {}).get("spec") or {}
    return configmap_names((spec.get("containers") or []) + (spec.get("initContainers") or []))


def error_line(text: str) -> str:
    """The error line of a failed command's log (e.g. sqlalchemy's ``ProgrammingError: ... permission denied``),
    not SQLAlchemy's trailing link; redacted."""
    import re

    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    errs = [ln for ln in lines if re.search(r"(?i)(error|exception|denied|refused|can.t|cannot)", ln)
            and not ln.startswith("(Background on this error")]
    return redact((errs or lines or ["(no log)"])[-1], limit=300)
