# Copyright: (c) 2026, asgard.mlflow contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: the options of ``mlflow_verify`` (typed by its argument spec), checked once, and the steps to run.

Errors name the option with ``variable_prefix`` in front (the verify role passes ``verify_``, so a user reads the
name of the variable they set) and say what was expected; every error is reported at once.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from ansible_collections.asgard.mlflow.plugins.module_utils._ingress_http import parse_url
from ansible_collections.asgard.mlflow.plugins.module_utils._mlflow_rules import nginx_size_bytes
from ansible_collections.asgard.mlflow.plugins.module_utils._step_logs import compile_patterns
from ansible_collections.asgard.mlflow.plugins.module_utils._step_settings import expected_prefix
from ansible_collections.asgard.mlflow.plugins.module_utils._verify_auth import option_errors as auth_option_errors
from ansible_collections.asgard.mlflow.plugins.module_utils._verify_data import VerifyError
from ansible_collections.asgard.mlflow.plugins.module_utils._verify_plan import validate_patch_vars

STEP_TAGS = {"pods": "verify_pods", "logs": "verify_logs", "service": "verify_service", "probe": "verify_probe",
             "transaction": "verify_transaction", "ingress": "verify_ingress"}
REMEDIATE_TAG = "verify_remediate"
ROLE_TAG = "verify"
TRANSACTION_OPTION_KEYS = ("experiment", "artifact_size", "keep_runs", "upload_rate_limit", "min_upload_rate",
                           "timeout", "deadline")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")

# the options the role hands over (and their argument spec); names match the role's variables without ``verify_``
ARG_SPEC = {
    "namespace": {"type": "str", "default": "asgard"},
    "deployment": {"type": "str", "default": "mlflow-deployment"},
    "service": {"type": "str", "default": "mlflow-service"},
    "service_port": {"type": "int", "default": 5000},
    "container": {"type": "str", "default": ""},
    "label_selectors": {"type": "list", "elements": "str", "default": []},
    "restart_window_seconds": {"type": "int", "default": 3600},
    "min_workers": {"type": "int", "default": 4},
    "min_gunicorn_timeout": {"type": "int", "default": 300},
    "expected_static_prefix": {"type": "str", "default": ""},
    "log_since_seconds": {"type": "int", "default": 3600},
    "log_tail_lines": {"type": "int", "default": 2000},
    "log_max_samples": {"type": "int", "default": 3},
    "log_patterns": {"type": "list", "elements": "dict"},
    "probe_host_header": {"type": "str", "default": ""},
    "probe_api_check": {"type": "bool", "default": True},
    "probe_timeout": {"type": "float", "default": 10},
    "probe_deadline": {"type": "float", "default": 60},
    "probe_retries": {"type": "int", "default": 3},
    "ingress_name": {"type": "str", "default": ""},
    "ingress_min_body_size": {"type": "str", "default": "100m"},
    "ingress_url": {"type": "str", "default": ""},
    "ingress_validate_certs": {"type": "bool", "default": True},
    "ingress_ca_cert": {"type": "path", "default": ""},
    "route_name": {"type": "str", "default": ""},
    "tls_min_days": {"type": "int", "default": 14},
    "transaction": {"type": "bool", "default": False},
    "transaction_options": {"type": "dict", "default": {}},
    "transaction_username": {"type": "str", "default": ""},
    "transaction_password": {"type": "str", "default": "", "no_log": True},
    "transaction_in_check_mode": {"type": "bool", "default": False},
    # HTTP basic auth of step 4 (and of the deep check without credentials of its own): _verify_auth
    "auth_username": {"type": "str", "default": ""},
    "auth_password": {"type": "str", "default": "", "no_log": True},
    "auth_secret": {"type": "raw", "no_log": False},
    "remediate": {"type": "bool", "default": True},
    "remediations": {"type": "list", "elements": "str", "choices": ["patch", "restart", "migrate"],
                     "default": ["patch", "restart", "migrate"]},
    "max_restarts": {"type": "int", "default": 1},
    "remediation_rounds": {"type": "int", "default": 2},
    "rollout_timeout": {"type": "int", "default": 600},
    "migration_timeout": {"type": "int", "default": 600},
    "patch_vars": {"type": "dict", "default": {}},
    "run_tags": {"type": "list", "elements": "str", "default": ["all"]},
    "skip_tags": {"type": "list", "elements": "str", "default": []},
    "variable_prefix": {"type": "str", "default": ""},
    # the round protocol: what the previous call returned, and how the actions of its plan went
    "state": {"type": "dict"},
    "errors": {"type": "dict", "default": {}},
    "restart": {"type": "bool", "default": False},
}


@dataclass
class Options:
    namespace: str = "asgard"
    deployment: str = "mlflow-deployment"
    service: str = "mlflow-service"
    service_port: int = 5000
    container: str = ""
    label_selectors: list = field(default_factory=list)
    restart_window_seconds: int = 3600
    min_workers: int = 4
    min_gunicorn_timeout: int = 300
    expected_static_prefix: str = ""
    log_since_seconds: int = 3600
    log_tail_lines: int = 2000
    log_max_samples: int = 3
    log_patterns: list | None = None
    probe_host_header: str = ""
    probe_api_check: bool = True
    probe_timeout: float = 10.0
    probe_deadline: float = 60.0
    probe_retries: int = 3
    ingress_name: str = ""
    ingress_min_body_size: str = "100m"
    ingress_url: str = ""
    ingress_validate_certs: bool = True
    ingress_ca_cert: str = ""
    route_name: str = ""
    tls_min_days: int = 14
    transaction: bool = False
    transaction_options: dict = field(default_factory=dict)
    transaction_username: str = ""
    transaction_password: str = field(default="", repr=False)
    transaction_in_check_mode: bool = False
    auth_username: str = ""
    auth_password: str = field(default="", repr=False)
    auth_secret: object = None
    remediate: bool = True
    remediations: list = field(default_factory=lambda: ["patch", "restart", "migrate"])
    max_restarts: int = 1
    remediation_rounds: int = 2
    rollout_timeout: int = 600
    migration_timeout: int = 600
    patch_vars: dict = field(default_factory=dict)
    run_tags: list = field(default_factory=lambda: ["all"])
    skip_tags: list = field(default_factory=list)
    variable_prefix: str = ""
    # the credentials of this round, resolved once by the round (_verify_auth.resolve) before anything is checked:
    # (user, password) for every HTTP request to MLflow that needs them; None when verify has none
    auth: tuple | None = field(default=None, repr=False)
    auth_source: str = ""

    @classmethod
    def from_params(cls, params: dict) -> Options:
        o = cls(**{k: params[k] for k in cls.__dataclass_fields__ if k in params and params[k] is not None})
        errors = o.validate()
        if errors:
            raise VerifyError("; ".join(errors))
        return o

    # ------------------------------------------------------------------------------------------ checks
    def n(self, name: str) -> str:
        return f"{self.variable_prefix}{name}"

    def validate(self) -> list[str]:
        n, e = self.n, []
        if not _DNS_LABEL.match(self.namespace) or len(self.namespace) > 63:
            e.append(f"{n('namespace')}: {self.namespace!r} is not a namespace name (a DNS-1123 label: lower-case "
                     "letters, digits and '-', at most 63 characters)")
        if not _DNS_SUBDOMAIN.match(self.deployment) or len(self.deployment) > 253:
            e.append(f"{n('deployment')}: {self.deployment!r} is not a Deployment name (a DNS-1123 name)")
        for name, kind, default in (("ingress_name", "an Ingress", "the Ingresses that route to the Service"),
                                    ("route_name", "an HTTPRoute", "the HTTPRoutes whose backendRefs name the Service")):
            value = getattr(self, name)
            if value and (not _DNS_SUBDOMAIN.match(value) or len(value) > 253):
                e.append(f"{n(name)}: {value!r} is not {kind} name (a DNS-1123 name, or empty for {default})")
        if nginx_size_bytes(self.ingress_min_body_size) is None:
            e.append(f"{n('ingress_min_body_size')}: expected an nginx size such as 0 (no limit), 512k, 100m or 5g, "
                     f"got {self.ingress_min_body_size!r}")
        if self.ingress_url and parse_url(self.ingress_url) is None:
            e.append(f"{n('ingress_url')}: expected the ingress controller's address as http(s)://host[:port] (no path), "
                     f"e.g. https://127.0.0.1:8443 or https://lb.example.com, got {self.ingress_url!r}")
        if self.ingress_ca_cert and not os.path.isfile(self.ingress_ca_cert):
            e.append(f"{n('ingress_ca_cert')}: {self.ingress_ca_cert!r} is not a readable file (a PEM CA bundle)")
        if not _DNS_LABEL.match(self.service) or len(self.service) > 63:
            e.append(f"{n('service')}: {self.service!r} is not a Service name (a DNS-1123 label)")
        if not 1 <= self.service_port <= 65535:
            e.append(f"expected {n('service_port')} a port 1-65535, got {self.service_port}")
        for sel in self.label_selectors:
            if not re.match(r"^[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?\s*(==?|!=)\s*[-A-Za-z0-9_.]*$", sel):
                e.append(f"{n('label_selectors')}: {sel!r} is not a 'key=value' label selector")
        try:
            expected_prefix(self.expected_static_prefix)
        except VerifyError:
            e.append(f"{n('expected_static_prefix')}: expected '' (no prefix) or a path such as /mlflow (letters, "
                     f"digits, . _ ~ -, starting with /), got {self.expected_static_prefix!r}")
        for name, low in (("restart_window_seconds", 0), ("log_since_seconds", 0), ("log_tail_lines", 1),
                          ("log_max_samples", 0), ("min_workers", 1), ("min_gunicorn_timeout", 0), ("tls_min_days", 0),
                          ("rollout_timeout", 30), ("migration_timeout", 30)):
            if getattr(self, name) < low:
                e.append(f"expected {n(name)} >= {low}, got {getattr(self, name)}")
        for name, low, high in (("max_restarts", 0, 10), ("remediation_rounds", 1, 5), ("probe_retries", 0, 20)):
            if not low <= getattr(self, name) <= high:
                e.append(f"expected {n(name)} {low}-{high}, got {getattr(self, name)}")
        if not self.probe_timeout > 0:
            e.append(f"expected {n('probe_timeout')} > 0 (seconds), got {self.probe_timeout:g}")
        elif self.probe_deadline < self.probe_timeout:
            e.append(f"expected {n('probe_deadline')} >= {n('probe_timeout')} ({self.probe_timeout:g}), "
                     f"got {self.probe_deadline:g}")
        if self.probe_host_header and not re.match(r"^[A-Za-z0-9.\-_\[\]:]+$", self.probe_host_header):
            e.append(f"{n('probe_host_header')}: {self.probe_host_header!r} is not a Host header (host or host:port)")
        try:
            compile_patterns(self.log_patterns, n("log_patterns"))
        except VerifyError as exc:
            e.append(str(exc))
        try:
            validate_patch_vars(self.patch_vars, n("patch_vars"))
        except VerifyError as exc:
            e.append(str(exc))
        e += self._transaction_errors()
        e += auth_option_errors(self.auth_username, self.auth_password, self.auth_secret, n)
        return e

    def _transaction_errors(self) -> list[str]:
        n, t, e = self.n, self.transaction_options, []
        unknown = sorted(set(t) - set(TRANSACTION_OPTION_KEYS))
        if unknown:
            e.append(f"{n('transaction_options')}: unknown key(s) {', '.join(unknown)} (expected keys from "
                     f"{', '.join(TRANSACTION_OPTION_KEYS)})")
        exp = t.get("experiment", "x")
        if not isinstance(exp, str) or not exp.strip():
            e.append(f"{n('transaction_options')}.experiment: expected a non-empty string, got {exp!r}")
        for key, low, high, kind in (("artifact_size", 1, 536870912, int), ("keep_runs", 0, 1000, int),
                                     ("upload_rate_limit", 0, None, float), ("min_upload_rate", 0, None, float),
                                     ("timeout", 0, None, float), ("deadline", 0, None, float)):
            if key not in t:
                continue
            try:
                v = kind(str(t[key]))
            except ValueError:
                e.append(f"{n('transaction_options')}.{key}: expected a {'whole ' if kind is int else ''}number, "
                         f"got {t[key]!r}")
                continue
            if v < low or (high is not None and v > high) or (key in ("timeout", "deadline") and v <= 0):
                e.append(f"{n('transaction_options')}.{key}: {v:g} is out of range (expected "
                         f"{'> 0' if key in ('timeout', 'deadline') else f'{low}-{high}' if high else f'>= {low}'})")
        if not e and float(t.get("deadline", 180)) < float(t.get("timeout", 30)):
            e.append(f"{n('transaction_options')}.deadline: expected >= timeout ({t.get('timeout', 30)})")
        if bool(self.transaction_username) != bool(self.transaction_password):
            e.append(f"{n('transaction_username')} / {n('transaction_password')}: give both (HTTP basic auth for "
                     "MLflow --app-name basic-auth) or neither")
        return e

    # ------------------------------------------------------------------------------------------ tags
    def steps(self) -> set:
        """The checks to run: those whose tag is selected (``--tags``), minus ``--skip-tags``. Tags that name no
        step (e.g. ``verify_report``) do not restrict the checks; step 4b needs ``transaction``."""
        run, skip = set(self.run_tags or ["all"]), set(self.skip_tags or [])
        chosen = {s for s, tag in STEP_TAGS.items() if tag in run}
        if not chosen or "all" in run or ROLE_TAG in run:
            chosen = set(STEP_TAGS)
        chosen = {s for s in chosen if STEP_TAGS[s] not in skip}
        if not self.transaction:
            chosen.discard("transaction")
        return chosen

    def remediation_enabled(self) -> list[str]:
        """The action kinds the plan may use: none in an audit (remediate false) or when the remediation tag is not
        selected; else verify_remediations."""
        run, skip = set(self.run_tags or ["all"]), set(self.skip_tags or [])
        tagged = "all" in run or ROLE_TAG in run or REMEDIATE_TAG in run
        if not self.remediate or not tagged or REMEDIATE_TAG in skip:
            return []
        return list(self.remediations)
