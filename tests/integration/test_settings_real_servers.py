"""The settings parser's effective gunicorn/uvicorn options agree with what the real servers of MLflow 3.17.2 run
with (gunicorn 26.2, uvicorn 0.55 in the lab's runtime), for settings spread over --gunicorn-opts /
--uvicorn-opts, GUNICORN_CMD_ARGS, UVICORN_<OPTION> and mlflow's own --workers (issue 14 item 5).

For each Deployment the server's argv is built by MLflow's own code (``mlflow.server._build_gunicorn_command`` /
``_build_uvicorn_command``, as ``mlflow server`` does) and handed to the real server with the container's
environment: gunicorn prints its resolved configuration (``--print-config``), uvicorn's click command parses it
(``make_context``, which applies its ``UVICORN_`` environment variables). No lab needed, only the runtime.
gunicorn: command line > GUNICORN_CMD_ARGS > config file > defaults (gunicorn/app/base.py ``load_config``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from asgardlab import runtimes  # noqa: E402
from ansible_collections.asgard.mlflow.plugins.module_utils._settings import server_settings  # noqa: E402

SCRIPT = r'''
import json, os, subprocess, sys
from mlflow.server import _build_gunicorn_command, _build_uvicorn_command
import uvicorn.main
out = []
for case in json.load(sys.stdin):
    env = dict(os.environ, **case["env"])
    if case["server"] == "gunicorn":
        argv = _build_gunicorn_command(case["opts"] + " --print-config", "0.0.0.0", 5000, case["workers"], "app:app")
        text = subprocess.run(argv, env=env, capture_output=True, text=True, check=True, cwd=case["cwd"]).stdout
        cfg = {k.strip(): v.strip() for k, _s, v in (ln.partition(" = ") for ln in text.splitlines()) if _s}
        out.append({"timeout": int(cfg["timeout"].strip()), "keep_alive": int(cfg["keepalive"].strip()),
                    "worker_class": cfg["worker_class"].strip(), "workers": int(cfg["workers"].strip())})
    else:
        argv = _build_uvicorn_command(case["opts"], "0.0.0.0", 5000, case["workers"], "app:app")
        saved = dict(os.environ)
        os.environ.update(case["env"])
        try:
            cmd = uvicorn.main.main.__self__
            params = cmd.make_context("uvicorn", argv[3:]).params
        finally:
            os.environ.clear()
            os.environ.update(saved)
        out.append({"timeout_keep_alive": params["timeout_keep_alive"], "workers": params["workers"],
                    "port": params["port"]})
print(json.dumps(out))
'''

CASES = [
    # (mlflow server flags, env, server)
    (["--gunicorn-opts=--workers 2"], {"GUNICORN_CMD_ARGS": "--timeout 60 --keep-alive 7"}, "gunicorn"),
    (["--workers=5", "--gunicorn-opts=--timeout 120 --workers 2"], {"GUNICORN_CMD_ARGS": "--timeout 60 --workers 3"},
     "gunicorn"),
    (["--gunicorn-opts=--worker-class gthread"], {"GUNICORN_CMD_ARGS": "--worker-class sync --timeout 45 -w 9"},
     "gunicorn"),
    ([], {"MLFLOW_GUNICORN_OPTS": "--timeout 33", "GUNICORN_CMD_ARGS": "--timeout 44 --keep-alive 3"}, "gunicorn"),
    ([], {"UVICORN_TIMEOUT_KEEP_ALIVE": "9", "UVICORN_WORKERS": "7", "UVICORN_PORT": "6000"}, "uvicorn"),
    (["--uvicorn-opts=--timeout-keep-alive 3"], {"UVICORN_TIMEOUT_KEEP_ALIVE": "9"}, "uvicorn"),
    (["--workers=2"], {"MLFLOW_WORKERS": "6"}, "uvicorn"),
    ([], {"MLFLOW_WORKERS": "6"}, "uvicorn"),
]


@pytest.fixture(scope="module")
def runtime():
    return runtimes._install_sync("3.17.2", echo=lambda *_: None)


def test_parser_agrees_with_the_real_servers(runtime, tmp_path):
    (tmp_path / "app.py").write_text("def app(environ, start_response):\n    return [b'']\n")
    expected, cases = [], []
    for flags, env, server in CASES:
        dep = {"kind": "Deployment", "spec": {"template": {"spec": {"containers": [{
            "name": "mlflow", "image": "ghcr.io/mlflow/mlflow:v3.17.2", "command": ["mlflow", "server", *flags],
            "env": [{"name": k, "value": v} for k, v in env.items()]}]}}}}
        s = server_settings(dep)
        assert s["server"] == server
        # what mlflow server passes on: its option string as the parser resolved it (flag over MLFLOW_*)
        opts = (s["sources"].get(f"{server}_opts") or {}).get("value", "")
        cases.append({"server": server, "opts": opts, "workers": s["workers"], "env": env, "cwd": str(tmp_path)})
        o = s[server]
        if server == "gunicorn":
            expected.append({"timeout": o["timeout"], "keep_alive": o["keep_alive"], "worker_class": o["worker_class"],
                             "workers": o["effective_workers"]})
        else:
            expected.append({"timeout_keep_alive": o["timeout_keep_alive"], "workers": o["effective_workers"],
                             "port": s["port"]})
    proc = subprocess.run([str(runtime / "bin" / "python"), "-c", SCRIPT], input=json.dumps(cases), text=True,
                          capture_output=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    real = json.loads(proc.stdout.strip().splitlines()[-1])
    for (flags, env, _server), want, got in zip(CASES, expected, real, strict=True):
        assert want == got, f"{flags} {env}: parser {want}, real server {got}"
