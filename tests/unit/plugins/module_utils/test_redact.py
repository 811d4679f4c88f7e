"""THE redaction (plugins/module_utils/_redact.py): every credential shape the collection may show is masked."""

from __future__ import annotations

import json

import pytest
from ansible_collections.asgard.mlflow.plugins.module_utils._redact import (
    LAST_APPLIED,
    contains_credentials,
    container_view,
    looks_secret,
    redact,
    redact_deep,
)

PW = "S3cr3t-pw"


@pytest.mark.parametrize(("text", "expected"), [
    (f"postgresql://mlflow:{PW}@db:5432/mlflow", "postgresql://mlflow:***@db:5432/mlflow"),
    (f"mysql+pymysql://u:{PW}/x@db/x", "mysql+pymysql://u:***@db/x"),
    (f"--backend-store-uri=postgresql://mlflow:{PW}@db/x --port 5000", "--backend-store-uri=postgresql://mlflow:***@db/x --port 5000"),
    (f"password={PW} rest", "password=*** rest"),
    (f"DB_PASSWORD={PW}", "DB_PASSWORD=***"),
    (f'{{"password": "{PW}", "user": "u"}}', '{"password": "***", "user": "u"}'),
    (f"MLFLOW_FLASK_SERVER_SECRET_KEY: {PW}", "MLFLOW_FLASK_SERVER_SECRET_KEY: ***"),
    ("Authorization: Bearer eyJhbGciOiJSUzI1NiIs", "Authorization: Bearer ***"),
    ("Authorization: Basic dXNlcjpwYXNzd29yZA==", "Authorization: Basic ***"),
    ("http://localhost:5000/ajax-api/2.0/mlflow/experiments/search", "http://localhost:5000/ajax-api/2.0/mlflow/experiments/search"),
    ("nothing secret here, tokens_used=5", "nothing secret here, tokens_used=5"),
    ("password=*** already masked", "password=*** already masked"),
])
def test_redact_text(text, expected):
    assert redact(text) == expected
    assert redact(redact(text)) == expected  # idempotent


@pytest.mark.parametrize(("name", "secret"), [
    ("DB_PASSWORD", True), ("MLFLOW_TRACKING_TOKEN", True), ("AWS_SECRET_ACCESS_KEY", True), ("api_key", True),
    ("MLFLOW_WORKERS", False), ("secretName", False), ("PASSWORD_FILE", False), ("secretKeyRef", False),
])
def test_names_that_hold_credentials(name, secret):
    assert looks_secret(name) is secret
    assert (redact("value", name) == "***") is secret


def test_none_and_limit():
    assert redact(None) is None
    assert redact("x" * 50, limit=10) == "xxxxxxx..."


def test_redact_deep_masks_every_place_a_deployment_can_hold_the_password():
    literal = f"postgresql://mlflow:{PW}@db:5432/mlflow"
    dep = {
        "kind": "Deployment",
        "metadata": {"annotations": {LAST_APPLIED: json.dumps({"env": [{"name": "DB_PASSWORD", "value": PW}]})}},
        "spec": {"template": {"spec": {"containers": [{
            "name": "mlflow",
            "args": [f"--backend-store-uri={literal}"],
            "env": [{"name": "DB_PASSWORD", "value": PW}, {"name": "URI", "value": literal},
                    {"name": "FROM_SECRET", "valueFrom": {"secretKeyRef": {"name": "pg", "key": "password"}}}],
        }]}}},
    }
    secret = {"kind": "Secret", "data": {"uri": "cG9zdGdyZXM="}, "stringData": {"uri": literal}}
    out = json.dumps(redact_deep([dep, secret, {"password": PW, "nested": {"token": PW}}]))
    assert PW not in out and "cG9zdGdyZXM=" not in out
    # what is not a credential stays readable
    assert '"secretKeyRef": {"name": "pg", "key": "password"}' in out and "postgresql://mlflow:***@db:5432/mlflow" in out


def test_container_view_and_contains_credentials():
    c = {"name": "m", "command": ["mlflow", "server"], "args": ["--port=5000"],
         "env": [{"name": "DB_PASSWORD", "value": PW}], "startupProbe": {"httpGet": {"path": "/health"}},
         "image": "not shown"}
    view = container_view(c)
    assert view == {"name": "m", "command": ["mlflow", "server"], "args": ["--port=5000"],
                    "env": [{"name": "DB_PASSWORD", "value": "***"}], "startupProbe": {"httpGet": {"path": "/health"}}}
    assert contains_credentials(c) is True
    assert contains_credentials({"args": [f"--backend-store-uri=postgresql://u:{PW}@db/x"]}) is True
    assert contains_credentials({"args": ["--port=5000"], "env": [{"name": "DB_PASSWORD", "valueFrom": {}}]}) is False
