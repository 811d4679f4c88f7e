"""Fixtures of the fault-matrix modules (test_fault_matrix*.py): a fresh namespace per case and the row table."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fault_matrix_report as report  # noqa: E402
from fault_matrix_lab import new_namespace  # noqa: E402


@pytest.fixture(scope="module")
def fault_matrix_rows(request):
    """Use in a fault-matrix module (``pytest.mark.usefixtures``): at its end, its rows go to the table."""
    yield
    report.finish_module(request.config)


@pytest.fixture
def ns(lab):
    """A fresh namespace for one fault-matrix case (deleted after it)."""
    name = new_namespace(lab)
    yield name
    lab.request("DELETE", f"/api/v1/namespaces/{name}")
