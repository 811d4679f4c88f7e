#!/usr/bin/python
# Copyright: (c) 2026, asgard.mlflow contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: cluster_access
short_description: Check that the Kubernetes API answers with these credentials and allows what comes next
version_added: 0.1.0
author:
  - Asgard Platform Team (@asgard-platform)
description:
  - The one cluster-access preflight of the collection (the deploy, patch and verify roles run it before they act).
    Resolves the credentials as kubernetes.core does (the options, then C(K8S_AUTH_*) as AWX's Kubernetes
    credential injects them, then the in-cluster service account, then C(KUBECONFIG) or C(~/.kube/config)), makes
    one request to check them, then asks the API server about each of O(permissions) with a
    C(SelfSubjectAccessReview) (authorization.k8s.io/v1), so a missing RBAC permission is reported before anything
    is changed.
  - "Failures name the credential source actually used, the cause and what to do: a kubeconfig that does not exist
    or is a directory, invalid YAML (line and column), a kubeconfig that cannot be loaded, 401 (rejected
    credentials), an unreachable API server, 403 (for example C(may not patch deployment asgard/mlflow-deployment))."
  - "Where C(SelfSubjectAccessReview) cannot be asked (HTTP 404, 403 or 405 on it; every real API server has it),
    C(get) and C(list) permissions are checked by reading the object (authorization comes before the lookup: a 404
    means allowed), other verbs stay unchecked, and RV(access_review) says so."
  - Never changes anything and never prints a credential; runs in check mode too.
extends_documentation_fragment:
  - kubernetes.core.k8s_auth_options
options:
  permissions:
    description:
      - The actions the caller is about to take, each checked with a C(SelfSubjectAccessReview).
    type: list
    elements: dict
    default: []
    version_added: 0.1.0
    suboptions:
      verb:
        description: C(get), C(list), C(watch), C(create), C(update), C(patch), C(delete).
        type: str
        required: true
      group:
        description: API group, V("") for the core group.
        type: str
        default: ""
      version:
        description: API version, used only to read the object when the review API cannot be asked (default by group).
        type: str
      resource:
        description: Resource (plural), for example V(deployments).
        type: str
        required: true
      subresource:
        description: Subresource, for example V(log) or V(portforward).
        type: str
      namespace:
        description: Namespace (empty for cluster-scoped resources or all namespaces).
        type: str
      name:
        description: Object name (empty for all objects).
        type: str
  option_prefix:
    description:
      - Prefix of the caller's variables for the auth options, used in messages (V(deploy_) names
        C(deploy_kubeconfig), C(deploy_host), ...). Empty names the module's options.
    type: str
    default: ""
    version_added: 0.1.0
  rbac_hint:
    description:
      - What to grant, appended to a 403 message (for example the collection's C(deploy/rbac/role.yaml)).
    type: str
    default: ""
    version_added: 0.1.0
attributes:
  check_mode:
    support: full
    description: Read-only; runs the same checks in check mode.
  diff_mode:
    support: none
    description: Changes nothing, so there is nothing to diff.
notes:
  - A C(SelfSubjectAccessReview) is not stored by the API server; creating one changes nothing.
"""

EXAMPLES = r"""
- name: Check cluster access before patching the MLflow Deployment
  asgard.mlflow.cluster_access:
    option_prefix: patch_
    permissions:
      - {verb: get, group: apps, resource: deployments, namespace: asgard, name: mlflow-deployment}
      - {verb: patch, group: apps, resource: deployments, namespace: asgard, name: mlflow-deployment}
    rbac_hint: Grant the Role in the collection's deploy/rbac/role.yaml.

- name: With AWX's Kubernetes credential (K8S_AUTH_HOST / K8S_AUTH_API_KEY in the environment)
  asgard.mlflow.cluster_access:
    permissions:
      - {verb: list, resource: pods, namespace: asgard}
  register: access
"""

RETURN = r"""
source:
  description: The credentials used, as the messages name them.
  returned: success
  type: str
  sample: the kubeconfig KUBECONFIG=/home/ops/.kube/config
server_version:
  description: The API server's version (C(gitVersion) of C(/version)).
  returned: success
  type: str
  sample: v1.32.3
access_review:
  description: V(SelfSubjectAccessReview) when the permissions were reviewed, else why they could not be.
  returned: success
  type: str
  sample: SelfSubjectAccessReview
permissions:
  description: Each permission with C(allowed) (true, or null when it could not be checked), C(checked_by)
    (V(SelfSubjectAccessReview), V(GET) or null) and C(reason).
  returned: success
  type: list
  elements: dict
  sample: [{verb: patch, group: apps, resource: deployments, subresource: null, namespace: asgard,
            name: mlflow-deployment, allowed: true, checked_by: SelfSubjectAccessReview, reason: ""}]
api_requests:
  description: Requests made to the API server.
  returned: success
  type: int
  sample: 3
code:
  description: On failure, what failed (V(KUBECONFIG_NOT_FOUND), V(KUBECONFIG_INVALID), V(UNAUTHORIZED),
    V(UNREACHABLE), V(FORBIDDEN)).
  returned: failure
  type: str
  sample: FORBIDDEN
"""

from ansible_collections.asgard.mlflow.plugins.module_utils._cluster_access import AccessError, run  # noqa: E402
from ansible_collections.asgard.mlflow.plugins.module_utils._kube import (  # noqa: E402
    api_from_module,
    kube_argspec,
    kube_module,
)

PERMISSION_SPEC = {
    "verb": {"type": "str", "required": True},
    "group": {"type": "str", "default": ""},
    "version": {"type": "str"},
    "resource": {"type": "str", "required": True},
    "subresource": {"type": "str"},
    "namespace": {"type": "str"},
    "name": {"type": "str"},
}


def argspec() -> dict:
    return kube_argspec({
        "permissions": {"type": "list", "elements": "dict", "default": [], "options": PERMISSION_SPEC},
        "option_prefix": {"type": "str", "default": ""},
        "rbac_hint": {"type": "str", "default": ""},
    })


def main() -> None:
    # a bad kubeconfig path is explained by run() with the credential source, not by the generic file check
    module = kube_module(argspec(), check_auth_files=False)
    try:
        result = run(module, lambda: api_from_module(module))
    except AccessError as exc:
        module.fail_json(msg=str(exc), code=exc.code)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
