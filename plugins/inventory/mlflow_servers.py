# Copyright: (c) 2026, asgard.mlflow contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: mlflow_servers
short_description: Every MLflow tracking server of one or more Kubernetes clusters, as hosts
version_added: 0.1.0
author:
  - Asgard Platform Team (@asgard-platform)
description:
  - Finds the Deployments whose pod template has a container that runs C(mlflow server), read from its
    C(command)/C(args) or C(sh -c) script by the collection's own parser (the rule of the verify and patch roles),
    whatever the Deployment, container and labels are called. A sidecar that only mentions MLflow (for example
    C(tail -F /mlflow/server.log)) is not an MLflow. A Deployment whose MLflow runs from the image's entrypoint
    alone (no command or args) cannot be recognised.
  - Makes one host per instance, named C(<cluster>/<namespace>/<deployment>) (O(host_name)), with the variables
    the roles need (C(verify_namespace), C(verify_deployment), C(verify_service) and C(verify_service_port) from the
    Service that selects its pods and forwards to its port, C(verify_container)) and facts as C(mlflow_*)
    variables (C(mlflow_cluster), C(mlflow_version), C(mlflow_server_kind), C(mlflow_port), C(mlflow_static_prefix),
    C(mlflow_workers), C(mlflow_labels), C(mlflow_image), C(mlflow_replicas), C(mlflow_ready_replicas),
    C(mlflow_service), C(mlflow_services), C(mlflow_settings_error), C(mlflow_warnings), C(mlflow_credentials)).
  - "Groups: C(mlflow_servers) (every instance), C(mlflow_cluster_<cluster>), C(mlflow_namespace_<namespace>),
    C(mlflow_version_<3_17_2>) (C(unknown) when the image tag does not say), C(mlflow_server_<gunicorn|uvicorn|waitress>).
    The C(mlflow_cluster_<cluster>) groups carry C(mlflow_cluster_reachable) and C(mlflow_cluster_errors)."
  - A cluster (or namespace) that cannot be listed is reported, not a traceback - a warning, a host named after
    the cluster in the group C(mlflow_discovery_failed) with C(mlflow_discovery_errors) (the fleet playbook reports
    it and fails), or with O(strict) the inventory source fails.
  - "Credentials never appear in the inventory output (C(ansible-inventory --list/--host), cache files): a host
    gets its connection B(by reference) - C(verify_kubeconfig), C(verify_context), C(verify_host), C(verify_ca_cert),
    C(verify_validate_certs) as configured, C(verify_api_key) only as the template configured (rendered by the
    role at run time) - and C(mlflow_credentials) names the options and C(K8S_AUTH_*) variables in use, not their
    values. A literal O(connections[].api_key) is refused."
  - "Hosts get C(ansible_connection=local) and an C(ansible_python_interpreter) that is C(ANSIBLE_PYTHON_INTERPRETER)
    when that is set, else C(ansible_playbook_python): an instance is an API object, the roles run on the controller
    (override them with O(compose))."
  - The configuration file name must end in C(mlflow_servers.yml) or C(mlflow_servers.yaml), and the plugin must
    be enabled (C([inventory] enable_plugins) in ansible.cfg, as this collection's own ansible.cfg does, or C(auto)).
extends_documentation_fragment:
  - ansible.builtin.constructed
  - ansible.builtin.inventory_cache
options:
  plugin:
    description: The name of this plugin; marks the file as its configuration.
    required: true
    type: str
    choices: [asgard.mlflow.mlflow_servers]
  connections:
    description:
      - The clusters to list, each with a name. Without it, one cluster C(default) from the environment
        (C(K8S_AUTH_*), C(KUBECONFIG) or the in-cluster service account), as kubernetes.core connects.
      - An option a connection leaves out comes from C(K8S_AUTH_*) exactly as in kubernetes.core. With several
        connections that would mix clusters (AWX injects one cluster's credential per job as C(K8S_AUTH_*)), so
        the source fails when a connection's kubeconfig would be overridden by C(K8S_AUTH_HOST)/C(K8S_AUTH_API_KEY),
        when a connection with its own O(connections[].host) would be sent C(K8S_AUTH_API_KEY), or when two
        connections both take their cluster from the environment.
      - >-
        Option values may be templates (for example C("{{ lookup('ansible.builtin.env', 'CLUSTER_B_HOST') }}")),
        rendered for the discovery; the hosts get the template.
    type: list
    elements: dict
    suboptions:
      name:
        description: The cluster's name, in host names, group names and C(mlflow_cluster).
        type: str
        required: true
      kubeconfig:
        description: Path of a kubeconfig file (given to the hosts as C(verify_kubeconfig)). Not an inline kubeconfig.
        type: str
      context:
        description: A context of the kubeconfig (C(verify_context)).
        type: str
      host:
        description: URL of the API server (C(verify_host)).
        type: str
      api_key:
        description:
          - Bearer token, as a B(reference) only, a template such as
            C("{{ lookup('ansible.builtin.env', 'CLUSTER_B_TOKEN') }}") or a vault-encrypted value (C(verify_api_key)
            gets the reference, never the token). A literal token fails.
        type: str
      ca_cert:
        description: Path of the CA certificate (C(verify_ca_cert)).
        type: str
        aliases: [ssl_ca_cert]
      validate_certs:
        description: Verify the API server's certificate (C(verify_validate_certs)).
        type: bool
        aliases: [verify_ssl]
      namespaces:
        description: Overrides O(namespaces) for this cluster.
        type: list
        elements: str
      exclude_namespaces:
        description: Overrides O(exclude_namespaces) for this cluster.
        type: list
        elements: str
      label_selectors:
        description: Overrides O(label_selectors) for this cluster.
        type: list
        elements: str
  namespaces:
    description:
      - Namespaces to look in, names or shell patterns (C(team-*)). Plain names are listed one by one (enough
        with namespaced RBAC, C(list deployments) and C(list services) there); with a pattern or without this
        option every namespace is listed at once (cluster-wide C(list deployments)).
    type: list
    elements: str
    default: []
  exclude_namespaces:
    description: Namespaces to skip, names or shell patterns.
    type: list
    elements: str
    default: []
  label_selectors:
    description:
      - Label selectors the Deployments must match, all of them (as in kubernetes.core.k8s_info), evaluated by
        the API server. Not needed to find MLflow (the command decides); use it to narrow the fleet.
    type: list
    elements: str
    default: []
  host_name:
    description:
      - A Jinja2 expression over the instance facts (C(cluster), C(namespace), C(deployment), C(labels),
        C(server_kind), ...; the same as O(instance_filter) sees) giving the host name. Names must be unique.
    type: str
    default: "cluster ~ '/' ~ namespace ~ '/' ~ deployment"
  instance_filter:
    description:
      - A JMESPath expression over each instance's facts; the instance is kept when it is true (non-empty).
        Facts - C(cluster), C(namespace), C(deployment), C(labels), C(pod_labels), C(container), C(image),
        C(mlflow_version), C(server_kind), C(port), C(static_prefix), C(workers), C(replicas), C(ready_replicas),
        C(available_replicas), C(service), C(service_port), C(services), C(settings_error), C(warnings).
    type: str
  api_timeout:
    description: Seconds for each API request of the discovery (one retry on a connection error).
    type: float
    default: 15
requirements:
  - kubernetes >= 29.0.0 (the Python client) and the kubernetes.core collection 6.x
  - jmespath (for O(instance_filter))
notes:
  - "The verify role decides, not the inventory, whether a static prefix is wanted: C(mlflow_static_prefix) is
    reported but C(verify_expected_static_prefix) is not set (the seed incident was an unwanted prefix). Set it
    with O(compose) for instances whose prefix is intended, for example
    C(verify_expected_static_prefix: mlflow_static_prefix | default('', true))."
  - "Read with C(ansible-inventory -i fleet.mlflow_servers.yml --graph) or C(--list); run C(playbooks/fleet.yml)
    on it to verify and heal every instance."
seealso:
  - name: The fleet playbook and AWX
    description: playbooks/fleet.yml, the fleet report and the AWX inventory source.
    link: https://example.invalid/asgard/mlflow/blob/main/docs/fleet.md
"""

EXAMPLES = r"""
# fleet.mlflow_servers.yml - every MLflow of the current kubeconfig context, all namespaces
plugin: asgard.mlflow.mlflow_servers

# two clusters: one from AWX's Kubernetes credential (K8S_AUTH_HOST/API_KEY/SSL_CA_CERT in the environment),
# the other from variables injected by a second (custom) AWX credential, by reference
---
plugin: asgard.mlflow.mlflow_servers
connections:
  - name: prod-eu
  - name: prod-us
    host: "{{ lookup('ansible.builtin.env', 'PROD_US_K8S_HOST') }}"
    api_key: "{{ lookup('ansible.builtin.env', 'PROD_US_K8S_TOKEN') }}"
    ca_cert: "{{ lookup('ansible.builtin.env', 'PROD_US_K8S_CA_FILE') }}"
    validate_certs: true
exclude_namespaces: [kube-*, sandbox-*]

# kubeconfig contexts, only the gunicorn servers of teams, grouped by team, cached for an hour
---
plugin: asgard.mlflow.mlflow_servers
connections:
  - name: staging
    kubeconfig: ~/.kube/config
    context: staging-admin
  - name: prod
    kubeconfig: ~/.kube/config
    context: prod-readonly
    namespaces: [ml-*, mlflow]
instance_filter: "server_kind == 'gunicorn' && contains(keys(labels), 'team')"
host_name: "cluster ~ '-' ~ labels.team ~ '-' ~ deployment"
keyed_groups:
  - key: mlflow_labels.team
    prefix: team
compose:
  # these instances serve the UI under a prefix on purpose: verify keeps it
  verify_expected_static_prefix: mlflow_static_prefix | default('', true)
cache: true
cache_plugin: ansible.builtin.jsonfile
cache_connection: /var/tmp/mlflow-inventory-cache
cache_timeout: 3600
"""

import os

from ansible.errors import AnsibleError, AnsibleParserError
from ansible.plugins.inventory import BaseInventoryPlugin, Cacheable, Constructable

try:
    from ansible.template import trust_as_template as _trust
except ImportError:  # ansible-core < 2.19: every inventory string is templated, so cluster values are marked unsafe
    _trust = None
    from ansible.utils.unsafe_proxy import wrap_var as _unsafe
else:
    def _unsafe(value):
        return value  # ansible-core >= 2.19: values of an inventory plugin are never templates unless trusted

from ansible_collections.asgard.mlflow.plugins.module_utils._fleet_connections import (
    FleetConfigError,
    credential_summary,
    environment_conflicts,
    host_references,
    is_template,
    is_vaulted,
    parse_connections,
)
from ansible_collections.asgard.mlflow.plugins.module_utils._fleet_naming import (
    DEFAULT_HOST_NAME,
    DISCOVERY_FAILED_GROUP,
    FilterError,
    InstanceFilter,
    default_groups,
    group_name,
    host_vars,
)

# the modules' Python: ANSIBLE_PYTHON_INTERPRETER when set (as inventory/localhost.yml), else ansible-playbook's own
PYTHON_INTERPRETER = "{{ lookup('ansible.builtin.env', 'ANSIBLE_PYTHON_INTERPRETER') or ansible_playbook_python }}"


class InventoryModule(BaseInventoryPlugin, Constructable, Cacheable):
    NAME = "asgard.mlflow.mlflow_servers"

    def verify_file(self, path):
        return super().verify_file(path) and path.endswith(("mlflow_servers.yml", "mlflow_servers.yaml"))

    def parse(self, inventory, loader, path, cache=True):
        super().parse(inventory, loader, path, cache)
        self._read_config_data(path)
        try:
            conns = parse_connections(self.get_option("connections"), {
                "namespaces": self.get_option("namespaces"),
                "exclude_namespaces": self.get_option("exclude_namespaces"),
                "label_selectors": self.get_option("label_selectors")})
            flt = InstanceFilter(self.get_option("instance_filter"))
        except (FleetConfigError, FilterError) as exc:
            raise AnsibleParserError(f"{path}: {exc}") from None
        conflicts = environment_conflicts(conns, os.environ)
        if conflicts:
            raise AnsibleParserError(f"{path}: " + "; ".join(conflicts))

        cache_key = self.get_cache_key(path)
        use_cache = self.get_option("cache") and cache
        update_cache = self.get_option("cache") and not cache
        results = None
        if use_cache:
            try:
                results = self._cache[cache_key]
            except KeyError:
                update_cache = True
        if results is None:
            results = [self._discover(c) for c in conns]
        if update_cache:
            self._cache[cache_key] = results
        self._populate(path, conns, results, flt)

    # ------------------------------------------------------------------ discovery
    def _render(self, value, where):
        if is_vaulted(value):
            return str(value)
        if not is_template(value):
            return value
        self.templar.available_variables = self._vars or {}
        try:
            return self.templar.template(value)
        except Exception as exc:
            from ansible_collections.asgard.mlflow.plugins.module_utils._redact import redact

            raise AnsibleParserError(f"{where}: the template could not be rendered: {redact(str(exc), limit=300)}") from None

    def _discover(self, conn):
        """One cluster's plain, credential-free discovery result (what the cache holds)."""
        from ansible_collections.asgard.mlflow.plugins.module_utils._discovery import discover
        from ansible_collections.asgard.mlflow.plugins.module_utils._kube import KubeError, api_from_auth

        auth = {opt: self._render(v, f"{conn.where}.{opt}") for opt, v in conn.auth.items()}
        out = {"cluster": conn.name, "server": None, "instances": [], "errors": [], "counts": {}}
        empty = [opt for opt, v in auth.items() if isinstance(v, str) and not v.strip()]
        if empty:
            out["errors"].append({"scope": "cluster", "status": None, "message": "; ".join(
                f"{conn.where}.{opt}: the template gave an empty value (is the variable it reads set?)" for opt in empty)})
            return out
        try:
            api = api_from_auth(auth, timeout=float(self.get_option("api_timeout")))
        except KubeError as exc:
            out["errors"].append({"scope": "cluster", "message": str(exc), "status": exc.status})
            return out
        except ImportError as exc:
            raise AnsibleError(f"{self.NAME} needs the kubernetes Python client and the kubernetes.core collection: "
                               f"{exc}") from None
        out["server"] = api.api_client.configuration.host
        self.display.vvv(f"{self.NAME}: listing MLflow in {conn.name} ({out['server']})")
        out.update(discover(api, conn.name, conn.namespaces, conn.exclude_namespaces, conn.label_selectors))
        return out

    # ------------------------------------------------------------------ inventory
    def _set(self, host, key, value):
        self.inventory.set_variable(host, key, value)

    def _populate(self, path, conns, results, flt):
        strict = self.get_option("strict")
        by_name = {c.name: c for c in conns}
        seen: dict[str, str] = {}
        # always there (empty when every cluster was listed): playbooks can name it in a host pattern
        self.inventory.add_group(DISCOVERY_FAILED_GROUP)
        failed = [r for r in results if r["errors"]]
        if failed and strict:
            raise AnsibleParserError(f"{path}: discovery failed (strict): " + "; ".join(
                f"{r['cluster']} {e['scope']}: {e['message']}" for r in failed for e in r["errors"]))
        for res in results:
            conn = by_name.get(res["cluster"])
            if conn is None:  # a cache written for another configuration
                continue
            cgroup = self.inventory.add_group(group_name("cluster", conn.name))
            self.inventory.set_variable(cgroup, "mlflow_cluster_reachable", not any(
                e["scope"] == "cluster" for e in res["errors"]))
            self.inventory.set_variable(cgroup, "mlflow_cluster_errors", _unsafe([
                f"{e['scope']}: {e['message']}" for e in res["errors"]]))
            if res["errors"]:
                self._discovery_failed(conn, res, seen)
            refs = host_references(conn)
            creds = credential_summary(conn, os.environ)
            for facts in res["instances"]:
                try:
                    if not flt.keep(facts):
                        continue
                except FilterError as exc:
                    raise AnsibleParserError(f"{path}: {exc}") from None
                self._add_instance(path, facts, refs, creds, seen)

    def _discovery_failed(self, conn, res, seen):
        lines = [f"{e['scope']}: {e['message']}" for e in res["errors"]]
        self.display.warning(f"{self.NAME}: cluster {conn.name}: discovery failed, the fleet is incomplete: "
                             + "; ".join(lines))
        host = conn.name
        if host in seen:
            raise AnsibleParserError(f"host name {host!r} of the failed cluster is also the name of {seen[host]}")
        seen[host] = f"the cluster {conn.name}"
        self.inventory.add_host(host, group=self.inventory.add_group(DISCOVERY_FAILED_GROUP))
        self.inventory.add_child(group_name("cluster", conn.name), host)
        self._set(host, "mlflow_cluster", conn.name)
        self._set(host, "mlflow_discovery_errors", _unsafe(lines))
        self._set(host, "ansible_connection", "local")

    def _add_instance(self, path, facts, refs, creds, seen):
        strict = self.get_option("strict")
        expr = self.get_option("host_name") or DEFAULT_HOST_NAME
        try:
            name = self._compose(expr, _unsafe(facts))
        except Exception as exc:
            raise AnsibleParserError(f"{path}: host_name: {expr!r} failed on {facts['cluster']}/{facts['namespace']}/"
                                     f"{facts['deployment']}: {exc}") from None
        if not isinstance(name, str) or not name.strip():
            raise AnsibleParserError(f"{path}: host_name: {expr!r} gave {name!r} for {facts['cluster']}/"
                                     f"{facts['namespace']}/{facts['deployment']}; expected a non-empty string")
        name = str(name)
        ident = f"{facts['cluster']}/{facts['namespace']}/{facts['deployment']}"
        if name in seen:
            raise AnsibleParserError(f"{path}: host_name: {expr!r} gives {name!r} for both {seen[name]} and {ident}; "
                                     "make it unique (include cluster, namespace and deployment)")
        seen[name] = ident
        self.inventory.add_host(name)
        for group in default_groups(facts):
            self.inventory.add_child(self.inventory.add_group(group), name)
        hv = host_vars(facts, {})
        for key, value in hv.items():
            self._set(name, key, _unsafe(value))
        for key, value in refs.items():  # configured references: templates stay templates (trusted as configured)
            self._set(name, key, value)
        self._set(name, "mlflow_credentials", creds)
        self._set(name, "ansible_connection", "local")
        self._set(name, "ansible_python_interpreter", _trust(PYTHON_INTERPRETER) if _trust else PYTHON_INTERPRETER)
        variables = self.inventory.get_host(name).get_vars()
        self._set_composite_vars(self.get_option("compose"), variables, name, strict=strict)
        self._add_host_to_composed_groups(self.get_option("groups"), variables, name, strict=strict)
        self._add_host_to_keyed_groups(self.get_option("keyed_groups"), variables, name, strict=strict)
