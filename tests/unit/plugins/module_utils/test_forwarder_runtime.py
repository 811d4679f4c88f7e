"""The background forwarder runs from a copy of its module_utils (``_forwarder.RUNTIME_MODULES``): the copy alone,
without the collection on sys.path, must import the forwarder and the target resolution with the container rule."""

from __future__ import annotations

import subprocess
import sys

from ansible_collections.asgard.mlflow.plugins.module_utils._forwarder import install_runtime


def test_runtime_copy_is_self_contained(tmp_path):
    root = install_runtime(str(tmp_path))
    code = (
        "import sys; sys.path[:] = [sys.argv[1]] + [p for p in sys.path if 'collections' not in p]\n"
        "from ansible_collections.asgard.mlflow.plugins.module_utils import _forwarder, _target\n"
        "pod = {'metadata': {'name': 'p'}, 'spec': {'containers': [\n"
        "  {'name': 'tail', 'command': ['tail', '-F', '/mlflow/logs/server.log']},\n"
        "  {'name': 'mlflow', 'command': ['mlflow', 'server', '--static-prefix=/x']}]}}\n"
        "print(_target._resolved(pod, 5000, 'ns', None).container)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, root], capture_output=True, text=True, timeout=60, cwd=tmp_path,
                         check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "mlflow"
