# Copyright: (c) 2026, asgard.mlflow contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: step 3 of the verify role, Service connectivity (``kubectl get svc`` / ``get endpoints``)."""

from __future__ import annotations

from ansible_collections.asgard.mlflow.plugins.module_utils._findings import finding, step_result
from ansible_collections.asgard.mlflow.plugins.module_utils._errors import ContainerError
from ansible_collections.asgard.mlflow.plugins.module_utils._server_command import mlflow_container
from ansible_collections.asgard.mlflow.plugins.module_utils._verify_data import as_int, condition, fmt_labels, live, obj, objs, selector_matches


def service_connectivity(service, pods=None, deployment=None, endpoints=None, endpoint_slices=None, *,
                         expected_port: int = 5000, container: str | None = None, server_port: int | None = None,
                         service_name: str = "", namespace: str = "") -> dict:
    """Step 3: the Service exists with the port, its selector matches the pods, ready endpoints, targetPort."""
    svc = obj(service, "service")
    pods = live(objs(pods, "pods"))
    dep = obj(deployment, "deployment")
    expected_port = as_int(expected_port, "verify_service_port", 1)
    findings: list[dict] = []
    details: dict = {}
    name = (svc.get("metadata") or {}).get("name") or service_name
    if not svc:
        findings.append(finding("SERVICE_NOT_FOUND", f"Service {service_name or '?'} not found in namespace "
                                f"{namespace or '?'}", {"service": service_name, "namespace": namespace}, step="service"))
        return step_result("service", findings, "Service missing", details)

    spec = svc.get("spec") or {}
    ports = spec.get("ports") or []
    details["ports"] = [{k: p.get(k) for k in ("name", "port", "targetPort", "protocol")} for p in ports]
    details["type"] = spec.get("type", "ClusterIP")
    port = next((p for p in ports if p.get("port") == expected_port), None)
    if port is None:
        findings.append(finding("SERVICE_PORT_MISSING", f"Service {name} does not expose port {expected_port} "
                                f"(ports: {', '.join(str(p.get('port')) for p in ports) or 'none'})",
                                {"service": name, "expected_port": expected_port, "ports": details["ports"]},
                                step="service"))

    selector = spec.get("selector") or {}
    details["selector"] = selector
    tmpl_labels = ((dep.get("spec") or {}).get("template") or {}).get("metadata", {}).get("labels") or {}
    if not selector:
        findings.append(finding("SERVICE_NO_SELECTOR", f"Service {name} has no selector: its endpoints are managed by "
                                "hand and it cannot be resolved to a pod", {"service": name}, step="service"))
        matched = []
    else:
        matched = [p for p in pods if selector_matches(selector, (p.get("metadata") or {}).get("labels"))]
        tmpl_ok = selector_matches(selector, tmpl_labels) if tmpl_labels else bool(matched)
        if not tmpl_ok or (pods and not matched):
            shown = tmpl_labels or (((pods[0].get("metadata") or {}).get("labels") or {}) if pods else {})
            findings.append(finding("SERVICE_SELECTOR_MISMATCH",
                                    f"Service {name} selector {fmt_labels(selector)} matches none of the MLflow pods "
                                    f"(pod labels {fmt_labels(shown)})",
                                    {"service": name, "selector": selector, "pod_labels": shown}))
    details["matched_pods"] = len(matched)

    # targetPort vs the MLflow container's ports (the one container rule) and its --port
    pod_spec = ((dep.get("spec") or {}).get("template") or {}).get("spec") or \
        ((pods[0].get("spec") or {}) if pods else {})
    try:
        main = mlflow_container(pod_spec, container or None)[1] if pod_spec.get("containers") else {}
    except ContainerError:
        main = {}
    cports = main.get("ports") or []
    if port is not None and main:
        target = port.get("targetPort", port.get("port"))
        details["target_port"] = target
        names = {p.get("name"): p.get("containerPort") for p in cports if p.get("name")}
        numbers = {p.get("containerPort") for p in cports}
        bad = False
        if isinstance(target, str) and not target.isdigit():
            bad = target not in names
            resolved = names.get(target)
        else:
            resolved = int(target)
            known = numbers | ({int(server_port)} if server_port else set())
            bad = bool(known) and resolved not in known
        details["target_port_resolved"] = resolved
        if server_port and resolved is not None and not bad and int(resolved) != int(server_port):
            bad = True
        if bad:
            findings.append(finding("TARGET_PORT_MISMATCH",
                                    f"Service {name} port {expected_port} targets {target!r} but container "
                                    f"{main.get('name')} listens on "
                                    f"{', '.join(str(p.get('containerPort')) for p in cports) or server_port or '?'}",
                                    {"service": name, "target_port": target, "container": main.get("name"),
                                     "container_ports": [{k: p.get(k) for k in ("name", "containerPort")}
                                                         for p in cports], "server_port": server_port},
                                    step="service"))

    ready, not_ready = endpoint_addresses(endpoints, endpoint_slices, name)
    details["ready_endpoints"] = ready
    details["not_ready_endpoints"] = not_ready
    if selector and ready == 0:
        pods_ready = sum(1 for p in matched if condition(p, "Ready").get("status") == "True")
        findings.append(finding("NO_READY_ENDPOINTS", f"Service {name} has no ready endpoint ({not_ready} not ready)",
                                {"service": name, "ready": ready, "not_ready": not_ready,
                                 "ready_pods_matched": pods_ready}))
    summary = (f"Service {name} port {expected_port}: {details['matched_pods']} pod(s) selected, "
               f"{ready} ready endpoint(s)")
    return step_result("service", findings, summary, details)


def endpoint_addresses(endpoints, endpoint_slices, service_name: str) -> tuple[int, int]:
    """(ready, not ready) addresses from the EndpointSlices, or the Endpoints object when there is none."""
    slices = objs(endpoint_slices, "endpoint_slices")
    if slices:
        ready = not_ready = 0
        for sl in slices:
            labels = (sl.get("metadata") or {}).get("labels") or {}
            if service_name and labels.get("kubernetes.io/service-name") not in (None, service_name):
                continue
            for ep in sl.get("endpoints") or []:
                cond = ep.get("conditions") or {}
                n = len(ep.get("addresses") or [])
                if cond.get("ready", True) is not False:
                    ready += n
                else:
                    not_ready += n
        return ready, not_ready
    ep = obj(endpoints, "endpoints")
    ready = sum(len(s.get("addresses") or []) for s in ep.get("subsets") or [])
    not_ready = sum(len(s.get("notReadyAddresses") or []) for s in ep.get("subsets") or [])
    return ready, not_ready
