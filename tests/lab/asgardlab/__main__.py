"""``python -m asgardlab {serve,up,down,status,token}``: run the local Kubernetes lab.

``token --user NAME`` / ``token --service-account NS/NAME`` mints a token for another identity (RBAC applies
to it, see rbac.py) and writes a kubeconfig for it, printing its path.

State lives in ``--state-dir`` (default ``.lab``): kubeconfig, lab.pid, lab.log, requests.log, pki/.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

DEFAULT_PORT = 6443


def _bind(port: int | None) -> socket.socket:
    """Bind 127.0.0.1:port (default: 6443 if free, else any free port)."""
    candidates = [port] if port else [DEFAULT_PORT, 0]
    last: OSError | None = None
    for p in candidates:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", p))
        except OSError as e:
            s.close()
            last = e
            continue
        s.listen(512)
        s.setblocking(False)
        return s
    raise SystemExit(f"asgardlab: cannot listen on 127.0.0.1:{port}: {last}")


def _require_root() -> None:
    if os.geteuid() != 0:
        raise SystemExit("asgardlab: the lab must run as root (pods need network namespaces: ip netns, veth, bridge). "
                         "Run it as root, e.g. `sudo make lab-up`.")


def _pid(state: Path) -> int | None:
    try:
        pid = int((state / "lab.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid


def _server_url(state: Path) -> tuple[str, str, str] | None:
    """(server, token, ca_path) from the kubeconfig, or None."""
    try:
        cfg = yaml.safe_load((state / "kubeconfig").read_text())
        return (cfg["clusters"][0]["cluster"]["server"], cfg["users"][0]["user"]["token"], str(state / "pki" / "ca.crt"))
    except (OSError, KeyError, TypeError, IndexError, yaml.YAMLError):
        return None


def _ready(state: Path, timeout: float = 1.0) -> bool:
    info = _server_url(state)
    if info is None:
        return False
    server, _, ca = info
    try:
        ctx = ssl.create_default_context(cafile=ca)
        with urllib.request.urlopen(server + "/readyz", context=ctx, timeout=timeout) as r:
            return r.status == 200
    except (OSError, ssl.SSLError, ValueError):
        return False


def cmd_serve(args) -> int:
    _require_root()
    from .server import Lab, serve

    state = Path(args.state_dir).resolve()
    state.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    sock = _bind(args.port)
    lab = Lab(state_dir=state, port=sock.getsockname()[1])
    (state / "lab.pid").write_text(str(os.getpid()))
    try:
        asyncio.run(serve(lab, sock=sock))
    finally:
        try:
            if (state / "lab.pid").read_text().strip() == str(os.getpid()):
                (state / "lab.pid").unlink()
        except OSError:
            pass
    return 0


def _print_where(state: Path) -> None:
    info = _server_url(state)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `up | head` must not traceback
    server = info[0] if info else "?"
    rel = os.path.relpath(state / "kubeconfig")
    print(f"lab API listening on {server}")
    print(f"kubeconfig: {state / 'kubeconfig'}")
    try:
        import json

        ing = json.loads((state / "ingress.json").read_text())
        print(f"ingress/gateway (nginx): {ing['http']} and {ing['https']} (pick the host with the Host header / SNI)")
    except (OSError, ValueError, KeyError):
        pass
    print(f"try: KUBECONFIG={rel} kubectl get ns")


def cmd_up(args) -> int:
    _require_root()
    state = Path(args.state_dir).resolve()
    state.mkdir(parents=True, exist_ok=True)
    import fcntl

    with open(state / "up.lock", "w") as lock:  # concurrent `up`s: one starts, the others find it running
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _up_locked(args, state)


def _up_locked(args, state: Path) -> int:
    if _pid(state) and _ready(state):
        print("lab already running")
        _print_where(state)
        return 0
    if _pid(state):
        # alive but not answering: stop it first
        cmd_down(args)
    for f in ("kubeconfig", "lab.pid"):
        (state / f).unlink(missing_ok=True)
    start = time.monotonic()
    cmd = [sys.executable, "-m", "asgardlab", "serve", "--state-dir", str(state)]
    if args.port:
        cmd += ["--port", str(args.port)]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(Path(__file__).resolve().parent.parent), env.get("PYTHONPATH", "")] if p)
    with open(state / "lab.log", "ab") as logf:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, env=env,
                                start_new_session=True, close_fds=True)
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = (state / "lab.log").read_text(errors="replace").splitlines()[-20:]
            print("asgardlab: the lab server exited during start-up; last lines of lab.log:", file=sys.stderr)
            print("\n".join(tail), file=sys.stderr)
            return 1
        if _ready(state, timeout=0.5):
            print(f"lab up in {time.monotonic() - start:.2f}s (pid {proc.pid})")
            _print_where(state)
            return 0
        time.sleep(0.05)
    print(f"asgardlab: the lab did not become ready within {args.timeout}s; see {state / 'lab.log'}", file=sys.stderr)
    return 1


def cmd_down(args) -> int:
    state = Path(args.state_dir).resolve()
    pid = _pid(state)
    if pid is None:
        print("lab not running")
        (state / "lab.pid").unlink(missing_ok=True)
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        print(f"lab (pid {pid}) did not stop within {args.timeout}s after SIGTERM: sending SIGKILL", file=sys.stderr)
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    (state / "lab.pid").unlink(missing_ok=True)
    (state / "kubeconfig").unlink(missing_ok=True)
    print("lab stopped")
    return 0


def cmd_status(args) -> int:
    state = Path(args.state_dir).resolve()
    pid = _pid(state)
    if pid and _ready(state):
        print(f"lab running (pid {pid})")
        _print_where(state)
        return 0
    if pid:
        print(f"lab process {pid} is alive but the API does not answer /readyz; see {state / 'lab.log'}")
        return 1
    print("lab not running")
    return 3


def cmd_token(args) -> int:
    """Mint a token for another identity (a User, or a ServiceAccount through the TokenRequest API) and write a
    kubeconfig for it (same cluster and CA as the admin's); print the kubeconfig path (or the token)."""
    import json

    state = Path(args.state_dir).resolve()
    info = _server_url(state)
    if info is None or not _ready(state):
        print(f"asgardlab: the lab is not running (no answer from {state / 'kubeconfig'}); start it with `up`", file=sys.stderr)
        return 1
    server, admin_token, ca = info
    if bool(args.user) == bool(args.service_account):
        print("asgardlab token: give exactly one of --user NAME or --service-account NAMESPACE/NAME", file=sys.stderr)
        return 2
    if args.service_account:
        ns, _, name = args.service_account.partition("/")
        if not ns or not name or "/" in name:
            print(f"asgardlab token: --service-account must be NAMESPACE/NAME, got {args.service_account!r}", file=sys.stderr)
            return 2
        path = f"/api/v1/namespaces/{ns}/serviceaccounts/{name}/token"
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                "spec": {"expirationSeconds": int(args.ttl or 3600)}}
        ident = f"system:serviceaccount:{ns}:{name}"
    else:
        path = "/lab/tokens"
        body = {"user": args.user, "groups": args.group or [], "expirationSeconds": args.ttl}
        ident = args.user
    req = urllib.request.Request(server + path, data=json.dumps(body).encode(), method="POST",
                                 headers={"Authorization": f"Bearer {admin_token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, context=ssl.create_default_context(cafile=ca), timeout=10) as r:
            answer = json.loads(r.read())
    except urllib.error.HTTPError as e:
        print(f"asgardlab token: the lab refused: HTTP {e.code}: {e.read().decode(errors='replace')}", file=sys.stderr)
        return 1
    token = answer["status"]["token"] if args.service_account else answer["token"]
    if args.print_token:
        print(token)
        return 0
    cfg = yaml.safe_load((state / "kubeconfig").read_text())
    user_name = "asgard-lab-" + ident.replace(":", "-")
    cfg["users"] = [{"name": user_name, "user": {"token": token}}]
    cfg["contexts"] = [{"name": user_name, "context": {"cluster": cfg["clusters"][0]["name"], "user": user_name,
                                                      **({"namespace": ns} if args.service_account else {})}}]
    cfg["current-context"] = user_name
    out = Path(args.kubeconfig) if args.kubeconfig else state / "identities" / f"{ident.replace(':', '_').replace('/', '_')}.kubeconfig"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(cfg, sort_keys=False))
    tmp.chmod(0o600)
    tmp.replace(out)
    print(out)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m asgardlab", description="The asgard.mlflow local Kubernetes lab.")
    p.add_argument("--state-dir", default=".lab", help="where kubeconfig, pid, logs and PKI live (default: .lab)")
    sub = p.add_subparsers(dest="cmd", required=True)
    for name, helptext in (("serve", "run the API server in the foreground"),
                           ("up", "start the lab in the background (idempotent)"),
                           ("down", "stop the lab (SIGTERM, then SIGKILL)"),
                           ("status", "is the lab running?")):
        sp = sub.add_parser(name, help=helptext)
        sp.add_argument("--state-dir", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        if name in ("serve", "up"):
            sp.add_argument("--port", type=int, default=None, help="port (default 6443 if free, else a free one)")
        if name in ("up", "down"):
            sp.add_argument("--timeout", type=float, default=60.0, help="seconds to wait (default 60)")
    tp = sub.add_parser("token", help="mint a token for another identity and write a kubeconfig for it")
    tp.add_argument("--state-dir", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    tp.add_argument("--user", help="a User identity (RBAC applies; the lab admin's token is not affected)")
    tp.add_argument("--group", action="append", help="a group of --user (repeatable)")
    tp.add_argument("--service-account", metavar="NS/NAME", help="a ServiceAccount (TokenRequest API; it must exist)")
    tp.add_argument("--ttl", type=int, default=None, help="token lifetime in seconds (default: users forever, service accounts 3600)")
    tp.add_argument("--kubeconfig", help="where to write the kubeconfig (default <state-dir>/identities/<identity>.kubeconfig)")
    tp.add_argument("--print-token", action="store_true", help="print the token instead of writing a kubeconfig")
    args = p.parse_args(argv)
    return {"serve": cmd_serve, "up": cmd_up, "down": cmd_down, "status": cmd_status, "token": cmd_token}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
