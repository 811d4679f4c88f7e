"""Basic auth of verify (issue 18): the options (errors name the role variable), the Secret read at the module_utils
boundary (one GET of one object; 404/403/missing key -> an error naming the field, never the password) and the probe
sending the credentials to /, /version and the API check but never to /health, through real portforward tunnels to an
MLflow-like server answering 401 as ``--app-name basic-auth`` does."""

from __future__ import annotations

import base64
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
REPO = Path(__file__).resolve().parents[4]
if str(REPO / ".collections") not in sys.path:
    sys.path.insert(0, str(REPO / ".collections"))

from ansible_collections.asgard.mlflow.plugins.module_utils._probe import ProbeOptions, run_probe  # noqa: E402
from ansible_collections.asgard.mlflow.plugins.module_utils._step_probe import probe_result  # noqa: E402
from ansible_collections.asgard.mlflow.plugins.module_utils._target import Target  # noqa: E402
from ansible_collections.asgard.mlflow.plugins.module_utils._verify_auth import (  # noqa: E402
    SecretRef,
    parse_secret,
    resolve,
)
from ansible_collections.asgard.mlflow.plugins.module_utils._verify_data import VerifyError  # noqa: E402
from ansible_collections.asgard.mlflow.plugins.module_utils._verify_options import Options  # noqa: E402
from test_tunnel_fixtures import MemoryKube, MlflowLike, PortForwardServer, pod, service  # noqa: E402

PW = "Adm1n-Very-S3cret-Pw"
n = "verify_".__add__


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


# the Secret asgard.mlflow.deploy writes (roles/deploy/templates/auth_secret.yaml.j2)
DEPLOY_SECRET = {"metadata": {"name": "mlflow-auth"},
                 "data": {"admin_username": b64("admin"), "admin_password": b64(PW), "flask_secret_key": b64("x")}}


class Api:
    """The Kubernetes API at the module_utils boundary: ``get(what, path)`` as _verify_reader.Reader.get."""

    def __init__(self, objects=None, status=None):
        self.objects, self.status, self.paths = objects or {}, status, []

    def get(self, what, path):
        self.paths.append(path)
        if self.status:
            exc = Exception(f"HTTP {self.status}")
            exc.status = self.status
            raise exc
        return self.objects.get(path)


SECRET_PATH = "/api/v1/namespaces/ml/secrets/mlflow-auth"


@pytest.mark.parametrize("given", [
    {"name": "mlflow-auth"},
    '{"name": "mlflow-auth"}',  # -e 'verify_auth_secret={"name": "mlflow-auth"}'
    "mlflow-auth",  # -e verify_auth_secret=mlflow-auth
    "name=mlflow-auth",
    "name=mlflow-auth key=admin_password",
])
def test_secret_forms_an_operator_types(given):
    assert parse_secret(given) == SecretRef("mlflow-auth", "admin_password", "admin_username")


@pytest.mark.parametrize("given, field, expected", [
    ({"key": "pw"}, "verify_auth_secret.name", "missing"),
    ({"name": "Bad_Name"}, "verify_auth_secret.name", "not a Secret name"),
    ({"name": "x", "paswd": "y"}, "verify_auth_secret", "unknown key(s) paswd"),
    ({"name": "x", "key": "a b"}, "verify_auth_secret.key", "not a Secret key"),
    ('{"name": ', "verify_auth_secret", "not a JSON object"),
    (["mlflow-auth"], "verify_auth_secret", "expected a mapping"),
])
def test_bad_secret_names_the_field(given, field, expected):
    with pytest.raises(VerifyError, match=r"^" + re.escape(field) + r": .*" + re.escape(expected)):
        parse_secret(given, "verify_auth_secret")


@pytest.mark.parametrize("params, expected", [
    ({"auth_username": "admin"}, "verify_auth_username: set where its password comes from: verify_auth_secret"),
    ({"auth_password": PW}, "verify_auth_password: set verify_auth_username too"),
    ({"auth_username": "admin", "auth_password": PW, "auth_secret": {"name": "mlflow-auth"}}, "give one password source"),
    ({"auth_username": "ad:min", "auth_password": PW}, "cannot contain ':'"),
    ({"auth_username": "admin", "auth_secret": {"key": "admin_password"}}, "verify_auth_secret.name: missing"),
])
def test_bad_options_fail_before_anything_is_read_and_never_echo_the_password(params, expected):
    with pytest.raises(VerifyError) as exc:
        Options.from_params({"variable_prefix": "verify_", **params})
    assert expected in str(exc.value) and PW not in str(exc.value)


def test_good_options_and_the_password_out_of_repr():
    o = Options.from_params({"variable_prefix": "verify_", "auth_username": "admin", "auth_password": PW})
    assert PW not in repr(o)
    Options.from_params({"auth_secret": "mlflow-auth"})  # the user then comes from the Secret


def test_deploy_secret_alone_gives_user_and_password_one_get():
    api = Api({SECRET_PATH: DEPLOY_SECRET})
    c = resolve(api.get, "ml", "", "", {"name": "mlflow-auth"}, n)
    assert c.pair == ("admin", PW) and api.paths == [SECRET_PATH]
    assert c.source == "verify_auth_secret (Secret ml/mlflow-auth, key admin_password)"
    assert PW not in repr(c)
    # a user given wins over the Secret's admin_username
    assert resolve(api.get, "ml", "ops", "", "mlflow-auth", n).pair == ("ops", PW)


def test_password_variable_reads_nothing():
    api = Api()
    assert resolve(api.get, "ml", "admin", PW, None, n).pair == ("admin", PW) and api.paths == []
    assert resolve(api.get, "ml", "", "", {}, n) is None and api.paths == []


@pytest.mark.parametrize("api, given, expected", [
    (Api(), {"name": "mlflow-auth"}, "verify_auth_secret.name: Secret ml/mlflow-auth does not exist"),
    (Api(status=403), {"name": "mlflow-auth"}, "verify_auth_secret: reading Secret ml/mlflow-auth was refused (403)"),
    (Api({SECRET_PATH: DEPLOY_SECRET}), {"name": "mlflow-auth", "key": "password"},
     "verify_auth_secret.key: Secret ml/mlflow-auth has no key 'password' (its keys: admin_password, admin_username, "
     "flask_secret_key)"),
    (Api({SECRET_PATH: {"data": {"admin_password": b64(PW)}}}), {"name": "mlflow-auth"},
     "verify_auth_username: empty, and Secret ml/mlflow-auth has no key 'admin_username'"),
])
def test_secret_problems_name_the_field_never_the_password(api, given, expected):
    with pytest.raises(VerifyError) as exc:
        resolve(api.get, "ml", "", "", given, n)
    assert str(exc.value).startswith(expected), str(exc.value)
    assert PW not in str(exc.value) and b64(PW) not in str(exc.value)


# ------------------------------------------------------------------ the probe through real tunnels
@pytest.fixture
def basic_auth_mlflow():
    pf = PortForwardServer()
    kube = MemoryKube(pf)
    kube.services[("asgard", "mlflow-service")] = service()
    server = MlflowLike(allowed_hosts=["*"], basic_auth=("admin", PW))
    pf.backends["mlflow-0"] = server.addr
    kube.pods["asgard"] = [pod("mlflow-0")]
    yield kube, server
    server.close()
    pf.close()


FAST = {"timeout": 5, "deadline": 30, "retries": 0}


def test_probe_sends_credentials_to_root_version_api_never_to_health(basic_auth_mlflow):
    kube, server = basic_auth_mlflow
    r = run_probe(kube, Target(), ProbeOptions(auth=("admin", PW), **FAST))
    assert r["healthy"] is True, r["findings"]
    assert [f["code"] for f in r["findings"]] == []
    sent = {p.split("?")[0]: h for p, h in server.authorization}
    assert sent["/health"] is None
    assert all(sent[p] and sent[p].startswith("Basic ") for p in ("/", "/version", "/api/2.0/mlflow/experiments/search"))
    assert PW not in repr(r)


def test_probe_401_without_credentials_is_auth_required(basic_auth_mlflow):
    kube, server = basic_auth_mlflow
    r = run_probe(kube, Target(), ProbeOptions(**FAST))
    assert [f["code"] for f in r["findings"]] == ["AUTH_REQUIRED"]
    assert r["findings"][0]["evidence"]["paths"] == ["/", "/version", "/api/2.0/mlflow/experiments/search?max_results=1"]
    assert r["checks"]["health"]["ok"] is True
    assert probe_result(r)["status"] == "warning"


def test_probe_401_with_wrong_credentials_is_auth_rejected(basic_auth_mlflow):
    kube, server = basic_auth_mlflow
    r = run_probe(kube, Target(), ProbeOptions(auth=("admin", "wrong-Pw-000"), auth_source="verify_auth_password",
                                               **FAST))
    assert [f["code"] for f in r["findings"]] == ["AUTH_REJECTED"]
    f = r["findings"][0]
    assert f["severity"] == "critical" and f["evidence"]["source"] == "verify_auth_password"
    assert "wrong-Pw-000" not in repr(r)
    step = probe_result(r)
    assert step["status"] == "failed" and [x["code"] for x in step["findings"]] == ["AUTH_REJECTED"]


def test_deep_check_credentials_rejected_name_their_own_variables(basic_auth_mlflow):
    """verify_transaction_username/password (the deep check's own credentials) refused: AUTH_REJECTED names them as
    the source, not the round's (there are none here) nor "the options"."""
    from ansible_collections.asgard.mlflow.plugins.module_utils import _verify_round
    from test_verify_round import opts

    kube, server = basic_auth_mlflow
    o = opts(namespace="asgard", transaction_username="admin", transaction_password="wrong-Pw-000",
             transaction_options={"timeout": 5, "deadline": 30})
    r = _verify_round._probe(kube, o, None, transaction=True)
    rejected = [f for f in r["findings"] if f["code"] == "AUTH_REJECTED"]
    assert rejected and rejected[0]["evidence"]["source"] == "verify_transaction_password", r["findings"]
    assert "wrong-Pw-000" not in repr(r)
