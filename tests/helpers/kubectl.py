"""``kubectl port-forward`` for tests: a process named kubectl, with kubectl's command line, holding a local port.

kubectl 1.32 tunnels port-forward as SPDY over WebSocket, which the lab does not serve yet (docs/lab.md): until it
does, a stand-in script named ``kubectl`` listens on the port with the same command line and prints kubectl's
"Forwarding from" line. Switching the tests to the real kubectl is the one line below.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

REAL_KUBECTL = False  # True once the lab serves kubectl's port-forward protocol


def port_forward(lab, tmp_path: Path, namespace: str, resource: str, local_port: int, remote_port: int = 5000,
                 extra: tuple[str, ...] = ()) -> subprocess.Popen:
    """``kubectl port-forward -n NAMESPACE RESOURCE LOCAL:REMOTE`` running until killed; returns once it listens."""
    args = ["port-forward", *extra, "-n", namespace, resource, f"{local_port}:{remote_port}"]
    if REAL_KUBECTL:
        cmd = [shutil.which("kubectl") or "kubectl", "--kubeconfig", str(lab.kubeconfig), *args]
    else:
        fake = tmp_path / "bin" / "kubectl"
        fake.parent.mkdir(exist_ok=True)
        fake.write_text(f"#!{sys.executable}\nimport socket, time\n"
                        f"s = socket.create_server(('127.0.0.1', {local_port}))\n"
                        f"print('Forwarding from 127.0.0.1:{local_port} -> {remote_port}', flush=True)\n"
                        "time.sleep(3600)\n")
        fake.chmod(0o755)
        cmd = [str(fake), *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    end = time.monotonic() + 30
    line = ""
    while time.monotonic() < end and not line.startswith("Forwarding from"):
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
    if not line.startswith("Forwarding from"):
        proc.kill()
        raise AssertionError(f"kubectl port-forward did not start: {line!r} (rc {proc.poll()})")
    return proc
