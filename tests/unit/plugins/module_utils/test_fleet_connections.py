"""_fleet_connections: the inventory plugin's connections are validated field by field, credentials go to the
hosts by reference only, and kubernetes.core's K8S_AUTH_* fallback cannot silently mix clusters."""

from __future__ import annotations

import pytest
from ansible_collections.asgard.mlflow.plugins.module_utils._fleet_connections import (
    FleetConfigError,
    credential_summary,
    environment_conflicts,
    host_references,
    parse_connections,
)

TOKEN_REF = "{{ lookup('ansible.builtin.env', 'CLUSTER_B_TOKEN') }}"
AWX_ENV = {"K8S_AUTH_HOST": "https://a.example:6443", "K8S_AUTH_API_KEY": "tok-a",
           "K8S_AUTH_SSL_CA_CERT": "/runner/env/tmpca", "K8S_AUTH_VERIFY_SSL": "True"}


def test_no_connections_is_one_cluster_from_the_environment():
    (c,) = parse_connections(None)
    assert (c.name, c.auth, c.namespaces) == ("default", {}, [])


def test_options_aliases_and_scope_defaults():
    conns = parse_connections(
        [{"name": "a", "kubeconfig": "/k", "context": "ctx", "verify_ssl": "false", "ssl_ca_cert": "/ca"},
         {"name": "b", "host": "https://b:6443", "api_key": TOKEN_REF, "namespaces": ["ml-*"], "label_selectors": []}],
        {"namespaces": ["x"], "exclude_namespaces": ["kube-*"], "label_selectors": ["team=ml"]})
    a, b = conns
    assert a.auth == {"kubeconfig": "/k", "context": "ctx", "validate_certs": False, "ca_cert": "/ca"}
    assert (a.namespaces, a.exclude_namespaces, a.label_selectors) == (["x"], ["kube-*"], ["team=ml"])
    assert (b.namespaces, b.exclude_namespaces, b.label_selectors) == (["ml-*"], ["kube-*"], [])


@pytest.mark.parametrize("raw,field", [
    ("prod", "connections: expected a list"),
    (["prod"], "connections[0]: expected a mapping"),
    ([{"kubeconfig": "/k"}], "connections[0].name: expected a cluster name"),
    ([{"name": "a b"}], "connections[0].name"),
    ([{"name": "a"}, {"name": "a", "context": "x"}], "connections[1].name: 'a' is already the name of connections[0]"),
    ([{"name": "a", "token": "x"}], "connections[0].token: unknown option"),
    ([{"name": "a", "client_cert": "/c"}], "connections[0].client_cert: not supported"),
    ([{"name": "a", "validate_certs": "maybe"}], "connections[0].validate_certs: expected a boolean"),
    ([{"name": "a", "kubeconfig": {"clusters": []}}], "connections[0].kubeconfig: give the path"),
    ([{"name": "a", "namespaces": "ml"}], "connections[0].namespaces: expected a list"),
    ([{"name": "a", "namespaces": ["ML_Team"]}], "connections[0].namespaces[0]: 'ML_Team' is not"),
    ([{"name": "a", "host": 5}], "connections[0].host: expected a non-empty string"),
    ([{"name": "a", "ca_cert": "/x", "ssl_ca_cert": "/y"}], "connections[0].ssl_ca_cert: given twice"),
])
def test_bad_connections_name_the_field(raw, field):
    with pytest.raises(FleetConfigError) as ei:
        parse_connections(raw)
    assert field in str(ei.value)


def test_a_literal_token_is_refused_a_reference_is_kept():
    with pytest.raises(FleetConfigError) as ei:
        parse_connections([{"name": "a", "host": "https://a", "api_key": "eyJhbGciOi-literal"}])
    assert "connections[0].api_key: a literal token" in str(ei.value)
    assert "eyJhbGciOi-literal" not in str(ei.value)
    (c,) = parse_connections([{"name": "b", "host": "https://b", "api_key": TOKEN_REF}])
    assert host_references(c) == {"verify_host": "https://b", "verify_api_key": TOKEN_REF}


def test_credential_summary_names_variables_never_values():
    (c,) = parse_connections(None)
    s = credential_summary(c, dict(AWX_ENV, KUBECONFIG="/home/k"))
    assert s == {"options": [], "environment": ["K8S_AUTH_API_KEY", "K8S_AUTH_HOST", "K8S_AUTH_SSL_CA_CERT",
                                                "K8S_AUTH_VERIFY_SSL", "KUBECONFIG"]}
    assert "tok-a" not in str(s)
    (k,) = parse_connections([{"name": "k", "kubeconfig": "/k"}])
    assert credential_summary(k, {"KUBECONFIG": "/home/k"}) == {"options": ["kubeconfig"], "environment": []}


def test_awx_credential_would_override_a_kubeconfig_connection():
    conns = parse_connections([{"name": "a"}, {"name": "b", "kubeconfig": "/k", "context": "b"}])
    (err,) = environment_conflicts(conns, AWX_ENV)
    assert err.startswith("connections[1] (b): kubeconfig/context are set, but K8S_AUTH_HOST")
    assert environment_conflicts(conns, {"KUBECONFIG": "/x"}) == []


def test_awx_token_would_be_sent_to_another_connections_host():
    conns = parse_connections([{"name": "a"}, {"name": "b", "host": "https://b:6443"}])
    (err,) = environment_conflicts(conns, AWX_ENV)
    assert "connections[1].api_key (b): not set, so kubernetes.core would send K8S_AUTH_API_KEY" in err
    ok = parse_connections([{"name": "a"}, {"name": "b", "host": "https://b:6443", "api_key": TOKEN_REF}])
    assert environment_conflicts(ok, AWX_ENV) == []


def test_two_connections_from_the_environment_are_the_same_cluster():
    conns = parse_connections([{"name": "a"}, {"name": "b", "namespaces": ["x"]}])
    (err,) = environment_conflicts(conns, AWX_ENV)
    assert "connections[0] (a), connections[1] (b) all take the cluster from the environment" in err
