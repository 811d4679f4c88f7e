"""Registry of the resource types the lab serves (discovery, routing, storage keys)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ResourceType:
    group: str  # "" for core
    version: str
    plural: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()  # e.g. ("status", "log", "exec", "portforward", "scale")
    verbs: tuple[str, ...] = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
    categories: tuple[str, ...] = ()
    singular: str = field(default="")
    custom: bool = False  # a custom resource (CRD) in a real cluster: no strategic merge patch

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> str:
        """Storage key, independent of version."""
        return f"{self.group}/{self.plural}" if self.group else self.plural

    @property
    def list_kind(self) -> str:
        return self.kind + "List"


_ALL = ("all",)
_CORE = [
    ResourceType("", "v1", "namespaces", "Namespace", False, ("ns",), ("status", "finalize")),
    ResourceType("", "v1", "pods", "Pod", True, ("po",), ("status", "log", "exec", "portforward", "attach", "binding", "eviction", "ephemeralcontainers", "proxy"), categories=_ALL),
    ResourceType("", "v1", "services", "Service", True, ("svc",), ("status", "proxy"), categories=_ALL),
    ResourceType("", "v1", "endpoints", "Endpoints", True, ("ep",)),
    ResourceType("", "v1", "secrets", "Secret", True),
    ResourceType("", "v1", "configmaps", "ConfigMap", True, ("cm",)),
    ResourceType("", "v1", "serviceaccounts", "ServiceAccount", True, ("sa",), ("token",)),
    ResourceType("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", True, ("pvc",), ("status",)),
    ResourceType("", "v1", "persistentvolumes", "PersistentVolume", False, ("pv",), ("status",)),
    ResourceType("", "v1", "events", "Event", True, ("ev",)),
    ResourceType("", "v1", "nodes", "Node", False, ("no",), ("status", "proxy")),
    ResourceType("", "v1", "limitranges", "LimitRange", True, ("limits",)),
    ResourceType("", "v1", "resourcequotas", "ResourceQuota", True, ("quota",), ("status",)),
]
_APPS = [
    ResourceType("apps", "v1", "deployments", "Deployment", True, ("deploy",), ("status", "scale"), categories=_ALL),
    ResourceType("apps", "v1", "replicasets", "ReplicaSet", True, ("rs",), ("status", "scale"), categories=_ALL),
    ResourceType("apps", "v1", "statefulsets", "StatefulSet", True, ("sts",), ("status", "scale"), categories=_ALL),
    ResourceType("apps", "v1", "daemonsets", "DaemonSet", True, ("ds",), ("status",), categories=_ALL),
    ResourceType("apps", "v1", "controllerrevisions", "ControllerRevision", True),
]
_OTHER = [
    ResourceType("batch", "v1", "jobs", "Job", True, (), ("status",), categories=_ALL),
    ResourceType("batch", "v1", "cronjobs", "CronJob", True, ("cj",), ("status",), categories=_ALL),
    ResourceType("networking.k8s.io", "v1", "ingresses", "Ingress", True, ("ing",), ("status",)),
    ResourceType("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", True, ("netpol",)),
    ResourceType("networking.k8s.io", "v1", "ingressclasses", "IngressClass", False),
    ResourceType("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", True, ("pdb",), ("status",)),
    ResourceType("rbac.authorization.k8s.io", "v1", "roles", "Role", True),
    ResourceType("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", True),
    ResourceType("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False),
    ResourceType("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", False),
    ResourceType("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice", True),
    ResourceType("coordination.k8s.io", "v1", "leases", "Lease", True),
]
# Gateway API: custom resources in a real cluster (CRDs); served by the lab like built-ins (asgardlab/ingress)
_GATEWAY_API = [
    ResourceType("gateway.networking.k8s.io", "v1", "gatewayclasses", "GatewayClass", False, ("gc",), ("status",),
                 categories=("gateway-api",), custom=True),
    ResourceType("gateway.networking.k8s.io", "v1", "gateways", "Gateway", True, ("gtw",), ("status",),
                 categories=("gateway-api",), custom=True),
    ResourceType("gateway.networking.k8s.io", "v1", "httproutes", "HTTPRoute", True, (), ("status",),
                 categories=("gateway-api",), custom=True),
]

ALL_TYPES: list[ResourceType] = _CORE + _APPS + _OTHER + _GATEWAY_API
BY_GROUP_PLURAL: dict[tuple[str, str], ResourceType] = {(r.group, r.plural): r for r in ALL_TYPES}
BY_KIND: dict[tuple[str, str], ResourceType] = {(r.api_version, r.kind): r for r in ALL_TYPES}


def lookup(group: str, plural: str) -> ResourceType | None:
    return BY_GROUP_PLURAL.get((group, plural))


def by_kind(api_version: str, kind: str) -> ResourceType | None:
    return BY_KIND.get((api_version, kind))


PODS = lookup("", "pods")
NAMESPACES = lookup("", "namespaces")
SERVICES = lookup("", "services")
ENDPOINTS = lookup("", "endpoints")
EVENTS = lookup("", "events")
SECRETS = lookup("", "secrets")
CONFIGMAPS = lookup("", "configmaps")
PVCS = lookup("", "persistentvolumeclaims")
DEPLOYMENTS = lookup("apps", "deployments")
REPLICASETS = lookup("apps", "replicasets")
JOBS = lookup("batch", "jobs")
ENDPOINTSLICES = lookup("discovery.k8s.io", "endpointslices")
