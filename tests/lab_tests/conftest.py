"""Lab conformance tests: fixtures come from tests/conftest.py (lab, k8s_client, lab_namespace)."""
