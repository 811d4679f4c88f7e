# Copyright: (c) 2025, asgard.mlflow contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Target options shared by mlflow_probe and port_forward (paired with module_utils._target.TARGET_ARG_SPEC)."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  namespace:
    description:
      - Namespace of the Service or pods (a DNS-1123 label).
    type: str
    default: asgard
    version_added: 0.1.0
  service:
    description:
      - Service to forward to, resolved like C(kubectl port-forward svc/NAME) does; its selector picks
        a Ready, not terminating pod (the newest first) and O(remote_port) selects the Service port whose
        C(targetPort) (a number or a container port name) is used.
      - Ignored when O(pod) or O(label_selectors) is given.
    type: str
    default: mlflow-service
    version_added: 0.1.0
  pod:
    description:
      - Name of a pod to forward to instead of a Service. It must be Ready.
      - Mutually exclusive with O(label_selectors).
    type: str
    version_added: 0.1.0
  label_selectors:
    description:
      - Label selectors (as in C(kubernetes.core.k8s_info)) choosing the pod instead of a Service,
        for example V(app=mlflow). The newest Ready matching pod is used.
    type: list
    elements: str
    default: []
    version_added: 0.1.0
  remote_port:
    description:
      - With a Service target, the Service port (default the first port of the Service), mapped to
        its C(targetPort) as kubectl does.
      - With O(pod) or O(label_selectors), the container port (default V(5000)).
      - An integer from 1 to 65535.
    type: int
    version_added: 0.1.0
"""
