"""What the apiserver enforces on Pods beyond their schema: ServiceAccount admission, the deprecated
``serviceAccount`` alias, and the few spec fields a Pod update may change.

Sources: k/k ``plugin/pkg/admission/serviceaccount/admission.go``, apiserver ``pkg/admission/errors.go``
(the name is the generateName while the server has not generated one), ``pkg/apis/core/v1/conversion.go``
(``serviceAccount``), kubernetes/website ``content/en/docs/concepts/workloads/pods/_index.md`` and k/k
``pkg/apis/core/validation/validation.go`` (``ValidatePodUpdate``).
"""

from __future__ import annotations

import json

from . import resources as R
from .schemas import FieldError
from .store import ApiError

DEFAULT_SA = "default"
SERVICEACCOUNTS = R.lookup("", "serviceaccounts")
UPDATABLE = ("`spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,"
             "`spec.tolerations` (only additions to existing tolerations),"
             "`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)")
MAX_INT32 = 2**31 - 1


def service_account_alias(spec: dict) -> None:
    """v1 conversion: ``serviceAccount`` counts only when ``serviceAccountName`` is empty, and reads back as it."""
    if not spec.get("serviceAccountName") and spec.get("serviceAccount"):
        spec["serviceAccountName"] = spec["serviceAccount"]
    spec.pop("serviceAccount", None)
    if spec.get("serviceAccountName"):
        spec["serviceAccount"] = spec["serviceAccountName"]


def admit_service_account(store, pod: dict) -> None:
    """On create: default ``serviceAccountName`` to ``default``; refuse a Pod whose ServiceAccount does not exist."""
    spec, md = pod.setdefault("spec", {}), pod["metadata"]
    service_account_alias(spec)  # decoding (v1 conversion) comes before admission
    spec["serviceAccountName"] = spec.get("serviceAccountName") or DEFAULT_SA
    spec["serviceAccount"] = spec["serviceAccountName"]
    ns, sa = md.get("namespace"), spec["serviceAccountName"]
    if store.get_ref(SERVICEACCOUNTS, ns, sa) is None:
        name = md.get("name") or md.get("generateName") or "Unknown"
        raise ApiError(403, "Forbidden", f'pods {json.dumps(name)} is forbidden: service account {ns}/{sa} was not found, '
                       "retry after the service account is created", {"name": name, "kind": "pods"})


def _tolerations_errors(new: list, old: list) -> list[FieldError]:
    """``validateOnlyAddedTolerations``: existing tolerations stay (tolerationSeconds may change)."""
    def same(a: dict, b: dict) -> bool:
        strip = lambda t: {k: v for k, v in t.items() if k != "tolerationSeconds"}  # noqa: E731
        return strip(a) == strip(b)

    for o in old:
        if not any(same(o, n) for n in new):
            return [FieldError("spec.tolerations", "Forbidden", "existing toleration can not be modified except its tolerationSeconds")]
    return []


def update_errors(new: dict, old: dict) -> list[FieldError]:
    """``ValidatePodUpdate`` for the spec: only images, activeDeadlineSeconds (set or lowered), tolerations
    (added) and a negative terminationGracePeriodSeconds (to 1) may change."""
    ns, os_ = new.get("spec") or {}, old.get("spec") or {}
    if ns == os_:
        return []
    for key in ("containers", "initContainers"):
        if len(ns.get(key) or []) != len(os_.get(key) or []):
            return [FieldError(f"spec.{key}", "Forbidden", "pod updates may not add or remove containers")]
    errs: list[FieldError] = []
    new_ads, old_ads = ns.get("activeDeadlineSeconds"), os_.get("activeDeadlineSeconds")
    if new_ads is not None:
        if not 0 <= new_ads <= MAX_INT32:
            return [FieldError("spec.activeDeadlineSeconds", "Invalid value", f"must be between 0 and {MAX_INT32}, inclusive", new_ads)]
        if old_ads is not None and old_ads < new_ads:
            return [FieldError("spec.activeDeadlineSeconds", "Invalid value", "must be less than or equal to previous value", new_ads)]
    elif old_ads is not None:
        errs.append(FieldError("spec.activeDeadlineSeconds", "Invalid value", "must not update from a positive integer to nil value", None))
    errs += _tolerations_errors(ns.get("tolerations") or [], os_.get("tolerations") or [])
    munged = dict(ns)
    for key in ("containers", "initContainers"):
        if key in munged:
            munged[key] = [dict(c, image=o.get("image")) for c, o in zip(munged[key], os_.get(key) or [], strict=True)]
    for key in ("activeDeadlineSeconds", "tolerations"):
        munged.pop(key, None)
        if key in os_:
            munged[key] = os_[key]
    grace = os_.get("terminationGracePeriodSeconds")
    if grace is not None and grace < 0 and munged.get("terminationGracePeriodSeconds") == 1:
        munged["terminationGracePeriodSeconds"] = grace
    if munged != os_:
        changed = sorted(k for k in set(munged) | set(os_) if munged.get(k) != os_.get(k))
        diff = "\n".join(f"  \t{k}: changed" for k in changed)
        errs.append(FieldError("spec", "Forbidden", f"pod updates may not change fields other than {UPDATABLE}\n  core.PodSpec{{\n{diff}\n  }}"))
    return errs
