# Copyright: (c) 2025, asgard.mlflow contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""deploy/rbac/: least-privilege RBAC for the automation account (AWX), kept exact by derivation.

The permissions the playbooks need are derived from the code as it is: every kubernetes.core task in
roles/*/tasks and playbooks/ (module + kind + state, with the API calls each module makes in
kubernetes.core 6.x), and every Kubernetes REST path in plugins/module_utils. The Role must grant all
of them and nothing more; a task added later with a new kind or verb fails here until deploy/rbac/
says so. The manifests are validated against the Kubernetes OpenAPI schemas (kubernetes-validate).
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

import pytest
import yaml
from asgardlab.schemas import kubernetes_validate  # installed apart from .venv's site-packages

ROOT = Path(__file__).resolve().parents[2]
RBAC = ROOT / "deploy" / "rbac"

# kind -> (api group, plural, namespaced)
KINDS = {
    "Namespace": ("", "namespaces", False),
    "Pod": ("", "pods", True),
    "Service": ("", "services", True),
    "Endpoints": ("", "endpoints", True),
    "ConfigMap": ("", "configmaps", True),
    "Secret": ("", "secrets", True),
    "ServiceAccount": ("", "serviceaccounts", True),
    "PersistentVolumeClaim": ("", "persistentvolumeclaims", True),
    "Event": ("", "events", True),
    "Deployment": ("apps", "deployments", True),
    "ReplicaSet": ("apps", "replicasets", True),
    "Job": ("batch", "jobs", True),
    "EndpointSlice": ("discovery.k8s.io", "endpointslices", True),
    "Ingress": ("networking.k8s.io", "ingresses", True),
    "NetworkPolicy": ("networking.k8s.io", "networkpolicies", True),
    "PodDisruptionBudget": ("policy", "poddisruptionbudgets", True),
    "HTTPRoute": ("gateway.networking.k8s.io", "httproutes", True),
}
# Definitions passed as a variable whose kind the task does not name.
KNOWN_DEFINITIONS: dict[str, str] = {}
# REST calls of module_utils that are not plain GETs: (group, resource) -> extra verbs.
# The portforward WebSocket is a GET, and API servers >= 1.30 also check `create` on it. cluster_access's
# SelfSubjectAccessReview (a create on authorization.k8s.io selfsubjectaccessreviews) needs no grant:
# system:basic-user allows it to every account.
EXTRA_VERBS = {("", "pods/portforward"): {"create"}}
# Group resources whose verbs are not what the path says (named = get, collection = list): (group, resource) -> verbs.
# _lease.py: GET the Lease by name, POST it, PUT it with its resourceVersion. Deployments: GET by name (verify,
# mlflow_patch), JSON-PATCH (mlflow_patch applies and rolls back), WATCH (verify's rollout wait), LIST (the fleet
# inventory's discovery, _discovery.py).
GROUP_VERBS = {("coordination.k8s.io", "leases"): {"get", "create", "update"},
               ("apps", "deployments"): {"get", "list", "patch", "watch"}}

Perm = tuple[str, str, str]  # (group, resource, verb)


# The playbooks the automation account runs (the AWX job templates); demo.yml drives the local lab only.
AUTOMATION_PLAYBOOKS = ("deploy", "patch", "verify")


def _k8s_tasks():
    """(file, module, args) for every kubernetes.core task in roles/*/tasks, handlers and the automation playbooks."""
    files = sorted([*ROOT.glob("roles/*/tasks/*.yml"), *ROOT.glob("roles/*/handlers/*.yml"),
                    *(ROOT / "playbooks" / f"{p}.yml" for p in AUTOMATION_PLAYBOOKS)])
    files = [f for f in files if f.is_file()]
    out = []

    def walk(node, where):
        if isinstance(node, list):
            for item in node:
                walk(item, where)
        elif isinstance(node, dict):
            for key, value in node.items():
                if key.startswith("kubernetes.core."):
                    out.append((where, key.removeprefix("kubernetes.core."), value if isinstance(value, dict) else {}))
                if key in ("block", "rescue", "always", "tasks", "pre_tasks", "post_tasks", "handlers"):
                    walk(value, where)

    for path in files:
        walk(yaml.safe_load(path.read_text()), str(path.relative_to(ROOT)))
    return out


def _template_kinds() -> dict[str, str]:
    """'{{ _deploy_manifests.<key> }}' / '{{ _deploy_secret_manifest }}' -> kind, from the templates."""
    out = {}
    for role in ROOT.glob("roles/*"):
        for tasks in role.glob("tasks/*.yml"):
            text = tasks.read_text()
            fact = re.search(r"set_fact:\s*\n\s*(_\w+):\s*\n((?:\s+\w+: .*lookup\(.*\n)+)", text)
            if fact:
                for key, template in re.findall(r"(\w+): .*lookup\('ansible.builtin.template', '([^']+)'\)", fact.group(2)):
                    out[f"{fact.group(1)}.{key}"] = template
            for var, template in re.findall(r"(_\w+): \"\{\{ lookup\('ansible.builtin.template', '([^']+)'\)", text):
                out[var] = template
        for ref, template in list(out.items()):
            path = role / "templates" / template
            if path.is_file():
                kind = re.search(r"^kind:\s*(\w+)", path.read_text(), re.M)
                if kind:
                    out[ref] = kind.group(1)
    return out


def _kind_of(where: str, args: dict, templates: dict[str, str], default: str | None = None) -> str:
    if args.get("kind"):
        return args["kind"]
    definition = args.get("definition")
    if isinstance(definition, str):
        ref = re.fullmatch(r"\{\{\s*([\w.]+)\s*\}\}", definition.strip())
        if ref and ref.group(1) in KNOWN_DEFINITIONS:
            return KNOWN_DEFINITIONS[ref.group(1)]
        if ref and ref.group(1) in templates and templates[ref.group(1)] in KINDS:
            return templates[ref.group(1)]
    elif isinstance(definition, dict) and definition.get("kind"):
        return definition["kind"]
    if default:
        return default
    pytest.fail(f"{where}: cannot tell the kind of {args!r}; name kind/api_version in the task or add the "
                "variable to KNOWN_DEFINITIONS in tests/unit/test_rbac.py")


def _res(where: str, kind: str) -> tuple[str, str, bool]:
    if kind not in KINDS:
        pytest.fail(f"{where}: kind {kind} is not in tests/unit/test_rbac.py KINDS; add it and grant it in deploy/rbac/")
    return KINDS[kind]


def required_from_tasks() -> dict[Perm, set[str]]:
    """Permissions the roles/playbooks need -> where from. Mirrors kubernetes.core 6.x's API calls."""
    need: dict[Perm, set[str]] = defaultdict(set)
    templates = _template_kinds()

    def add(group, resource, verbs, where):
        for verb in verbs:
            need[(group, resource, verb)].add(where)

    for where, module, args in _k8s_tasks():
        if module == "k8s_info":  # name -> GET one, else LIST
            group, plural, _kind = _res(where, _kind_of(where, args, templates))
            add(group, plural, ["get"] if args.get("name") else ["list"], where)
        elif module == "k8s":  # GET, then POST (absent) or strategic-merge PATCH; absent: DELETE; wait: GETs
            group, plural, _kind = _res(where, _kind_of(where, args, templates))
            state = args.get("state", "present")
            verbs = {"present": ["get", "create", "patch"], "absent": ["get", "delete"], "patched": ["get", "patch"]}
            if state not in verbs:
                pytest.fail(f"{where}: kubernetes.core.k8s state {state!r} is not modelled in test_rbac.py")
            add(group, plural, verbs[state], where)
        elif module == "k8s_json_patch":
            group, plural, _kind = _res(where, _kind_of(where, args, templates))
            add(group, plural, ["get", "patch"], where)
        elif module == "k8s_scale":  # GET the object, PATCH <plural>/scale
            group, plural, _kind = _res(where, _kind_of(where, args, templates))
            add(group, plural, ["get"], where)
            add(group, f"{plural}/scale", ["patch"], where)
        elif module == "k8s_rollback":  # GET the Deployment, LIST its ReplicaSets, JSON-PATCH the Deployment
            group, plural, _kind = _res(where, _kind_of(where, args, templates))
            add(group, plural, ["get", "patch"], where)
            add("apps", "replicasets", ["list"], where)
        elif module == "k8s_log":  # Pod: GET pods/log; other kinds: GET it, LIST pods, GET pods/log
            kind = _kind_of(where, args, templates, default="Pod")
            if kind != "Pod" or args.get("label_selectors"):
                if kind != "Pod":
                    group, plural, _kind = _res(where, kind)
                    add(group, plural, ["get"], where)
                add("", "pods", ["list"], where)
            if args.get("all_containers"):
                add("", "pods", ["get"], where)
            add("", "pods/log", ["get"], where)
        elif module == "k8s_exec":
            add("", "pods/exec", ["create", "get"], where)
        else:
            pytest.fail(f"{where}: kubernetes.core.{module} is not modelled in tests/unit/test_rbac.py")
    return need


def required_from_plugins() -> dict[Perm, set[str]]:
    """REST paths the collection's own Python calls (module_utils builds them as f-strings)."""
    need: dict[Perm, set[str]] = defaultdict(set)
    path_re = re.compile(r"^/api(?:/v1|s/([a-z0-9.]+)/v[0-9a-z]+)/namespaces/\{[^}]+\}"
                         r"(?:/([a-z]+)(?:/\{[^}]+\}(?:/([a-z]+))?)?)?")
    group_re = re.compile(r"^/apis/([a-z0-9.]+)/v[0-9a-z]+/namespaces/\{[^}]+\}/([a-z]+)")
    for path in sorted((ROOT / "plugins").rglob("*.py")):
        where = str(path.relative_to(ROOT))
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.JoinedStr):
                continue
            text = "".join(v.value if isinstance(v, ast.Constant) else "{x}" for v in node.values)
            m = path_re.match(text)
            g = group_re.match(text)
            if g and (g.group(1), g.group(2)) in GROUP_VERBS:
                for verb in GROUP_VERBS[(g.group(1), g.group(2))]:
                    need[(g.group(1), g.group(2), verb)].add(where)
                continue
            if not m:
                if text.startswith("/api"):
                    pytest.fail(f"{where}:{node.lineno}: REST path {text} is not modelled in test_rbac.py")
                continue
            group, plural, sub = m.group(1) or "", m.group(2), m.group(3)
            if plural is None:
                need[("", "namespaces", "get")].add(where)
                continue
            resource = f"{plural}/{sub}" if sub else plural
            named = text.count("{") >= 2
            verbs = {"get" if named else "list"} | EXTRA_VERBS.get((group, resource), set())
            for verb in verbs:
                need[(group, resource, verb)].add(where)
    return need


def _docs(pattern: str) -> list[dict]:
    docs = []
    for path in sorted(RBAC.glob(pattern)):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def _granted(kind: str) -> set[Perm]:
    out = set()
    for doc in _docs("*.yaml"):
        if doc["kind"] != kind:
            continue
        for rule in doc["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        out.add((group, resource, verb))
    return out


def test_manifests_are_valid_kubernetes_objects():
    docs = _docs("*.yaml")
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(["ServiceAccount", "Secret", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"])
    for doc in docs:
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


def test_no_wildcards_and_the_binding_targets_the_automation_account():
    for doc in _docs("*.yaml"):
        for rule in doc.get("rules", []):
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[field], f"{doc['kind']}/{doc['metadata']['name']} grants * in {field}"
    (sa,) = [d for d in _docs("*.yaml") if d["kind"] == "ServiceAccount"]
    for binding in [d for d in _docs("*.yaml") if d["kind"].endswith("Binding")]:
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"],
                                        "namespace": sa["metadata"]["namespace"]}]
    (cr,) = [d for d in _docs("*.yaml") if d["kind"] == "ClusterRole"]
    # cluster scope is only the read of the one namespace, by name
    assert cr["rules"] == [{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get"],
                            "resourceNames": [sa["metadata"]["namespace"]]}]
    (token,) = [d for d in _docs("*.yaml") if d["kind"] == "Secret"]
    assert token["type"] == "kubernetes.io/service-account-token"
    assert token["metadata"]["annotations"]["kubernetes.io/service-account.name"] == sa["metadata"]["name"]


def test_role_grants_exactly_what_the_code_uses():
    need = required_from_tasks()
    for perm, where in required_from_plugins().items():
        need[perm] |= where
    # the scan must see the roles' and the plugins' known calls, or it is broken
    assert ("apps", "deployments", "patch") in need and ("", "pods/portforward", "create") in need, sorted(need)
    namespaced = {p: w for p, w in need.items() if p[1] != "namespaces"}
    granted = _granted("Role")
    missing = sorted(f"{g or 'core'}/{r} {v}  <- {', '.join(sorted(namespaced[(g, r, v)]))}"
                     for (g, r, v) in set(namespaced) - granted)
    extra = sorted(f"{g or 'core'}/{r} {v}" for (g, r, v) in granted - set(namespaced))
    assert not missing, "deploy/rbac/role.yaml lacks permissions the code uses:\n" + "\n".join(missing)
    assert not extra, "deploy/rbac/role.yaml grants permissions nothing uses:\n" + "\n".join(extra)
    # namespaces: only get (by name) at cluster scope; creating one stays with the cluster admin
    ns_verbs = {v for (_g, r, v) in need if r == "namespaces"}
    assert ns_verbs <= {"get", "create", "patch"}, ns_verbs
    assert ("", "namespaces", "get") in _granted("ClusterRole")


def test_names_match_the_role_defaults():
    deploy = yaml.safe_load((ROOT / "roles" / "deploy" / "defaults" / "main.yml").read_text())
    (sa,) = [d for d in _docs("*.yaml") if d["kind"] == "ServiceAccount"]
    assert sa["metadata"]["namespace"] == deploy["deploy_namespace"]
    (role,) = [d for d in _docs("*.yaml") if d["kind"] == "Role"]
    named = [r for r in role["rules"] if r.get("resourceNames")]
    assert named == [{"apiGroups": [""], "resources": ["secrets"], "resourceNames":
                      [deploy["deploy_backend_store_secret_create_name"], deploy["deploy_auth_secret_name"]],
                      "verbs": ["get", "patch"]}]


def test_verify_reads_the_routes_and_their_gateways_and_nothing_more_of_the_gateway_api():
    """Step 4c lists HTTPRoutes and gets the Gateways they name (module_utils/_verify_reader.py); a Gateway in
    another namespace is granted there by the operator (docs/awx.md), not by this Role."""
    need = required_from_plugins()
    gw = {(g, r, v) for (g, r, v) in need if g == "gateway.networking.k8s.io"}
    assert gw == {("gateway.networking.k8s.io", "httproutes", "list"), ("gateway.networking.k8s.io", "gateways", "get")}
    assert gw <= _granted("Role")
    assert "ROUTE_NOT_READABLE" in (ROOT / "docs" / "awx.md").read_text()
