"""A real, private PostgreSQL server from the Debian packages, for tests and molecule.

Needs Debian's ``postgresql`` package (``apt-get install -y postgresql``; any major version: initdb/pg_ctl are
found under ``/usr/lib/postgresql/<major>/bin``, newest first). Run as root, the server runs as the ``postgres``
user (PostgreSQL refuses to run as root); run as another user, as that user. The cluster lives in ``--dir``
(``data/``, ``server.log``, the Unix socket, and ``asgard-pg.json`` with the connection facts, mode 0600).

By default it listens on 127.0.0.1 and on the lab bridge address 10.244.0.1 (how pods reach the host; the lab
must be up so the address exists), on a free port, accepts password logins (scram-sha-256) from 127.0.0.1 and
the pod network 10.244.0.0/16, and has a database and a login role owning it.

pytest::

    from helpers.postgres import PostgresServer
    with PostgresServer(tmp_path / "pg", password="s3cret") as pg:
        pg.uri(host="10.244.0.1")   # postgresql://mlflow:s3cret@10.244.0.1:<port>/mlflow
        pg.psql("SELECT count(*) FROM experiments")

CLI (molecule)::

    python tests/helpers/postgres.py start --dir /tmp/pg [--password PW] [--db mlflow] [--user mlflow]
                                           [--port N] [--listen 127.0.0.1,10.244.0.1]
    python tests/helpers/postgres.py status --dir /tmp/pg      # prints asgard-pg.json (password included)
    python tests/helpers/postgres.py stop --dir /tmp/pg [--remove]
    python tests/helpers/postgres.py driver [--version 3.17.2]   # psycopg (3) + psycopg2 in the lab's runtime
    python tests/helpers/postgres.py old-store --uri URI [--version 2.16.2]   # a store made by an older MLflow

``old-store`` (``seed_store()``): MLflow releases the lab has no image for write a backend store from the host, with
a real ``mlflow-skinny==<version>`` in a virtualenv made by Debian's python3 under ``$ASGARD_LAB_CACHE/clients/``
(installed on first use, ~30 s). MLflow 2.16.2 leaves a store at alembic revision 4465047574b1 with exactly the
tables 2.22.5 expects, which 2.22.5 refuses ("Detected out-of-date database schema"): the real starting point of
an upgrade that needs ``mlflow db upgrade``.

``start`` prints the JSON of ``asgard-pg.json``: host addresses, port, db, user, password, ``uri`` (pods:
via 10.244.0.1) and ``local_uri`` (via 127.0.0.1). It is idempotent: a running cluster in ``--dir`` is reused.
"""

from __future__ import annotations

import argparse
import glob
import ipaddress
import json
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

LAB_BRIDGE_ADDRESS = "10.244.0.1"
POD_NETWORK = "10.244.0.0/16"
STATE_FILE = "asgard-pg.json"


class PostgresError(RuntimeError):
    pass


# SQLAlchemy >= 2.1 maps postgresql:// to psycopg (3); postgresql+psycopg2:// needs psycopg2
DRIVERS = ("psycopg[binary]", "psycopg2-binary")


def ensure_lab_driver(version: str = "3.17.2") -> str:
    """Make the lab's MLflow runtime ``mlflow-<version>`` able to use a PostgreSQL backend store.

    The lab's runtimes (tests/lab/asgardlab/runtimes.py) ship psycopg2-binary and psycopg 3 now, so this only
    repairs an older runtime cache: installs ``DRIVERS`` with the runtime's own pip when it cannot import them.
    Returns "present" or "installed". Note: SQLAlchemy < 2.1 (the 2.22.5 runtime) uses psycopg2 only.
    """
    cache = Path(os.environ.get("ASGARD_LAB_CACHE") or "/var/cache/asgard-mlflow-lab")
    rt = cache / "runtimes" / f"mlflow-{version}"
    if not (rt / ".asgard-complete").exists():
        raise PostgresError(f"the lab's runtime mlflow-{version} is not installed in {rt} "
                            f"(make runtimes, or python -m asgardlab.runtimes install {version})")
    py = rt / "bin" / "python"
    probe = "import psycopg2, sqlalchemy; sqlalchemy.__version__ < '2.1' or __import__('psycopg')"
    if subprocess.run([str(py), "-c", probe], capture_output=True, check=False).returncode == 0:
        return "present"
    p = subprocess.run([str(rt / "bin" / "pip"), "install", "--disable-pip-version-check", "-q", *DRIVERS],
                       capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        raise PostgresError(f"could not install {' '.join(DRIVERS)} into {rt}: {p.stderr.strip()[-500:]}")
    return "installed"


OLD_MLFLOW_REQUIREMENTS = ("sqlalchemy<2.1", "alembic", "psycopg2-binary")

# Runs inside the older MLflow's virtualenv: creates experiments and a run with a param and a metric through that
# MLflow's own SqlAlchemyStore (what its server uses), prints their ids as JSON. The URI comes from the environment.
_SEED_SCRIPT = """
import json, os, sys
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
from mlflow.entities import Metric, Param
import mlflow
store = SqlAlchemyStore(os.environ["ASGARD_STORE_URI"], os.environ["ASGARD_ARTIFACT_ROOT"])
out = {"mlflow_version": mlflow.__version__, "experiments": {}, "runs": {}}
for name in json.loads(os.environ["ASGARD_EXPERIMENTS"]):
    eid = store.create_experiment(name)
    run = store.create_run(eid, "asgard-tests", 1700000000000, [], name + "-run")
    store.log_batch(run.info.run_id, metrics=[Metric("m", 1.5, 1700000000000, 0)], params=[Param("p", name)], tags=[])
    out["experiments"][name] = eid
    out["runs"][name] = run.info.run_id
print(json.dumps(out))
"""


def ensure_mlflow_client(version: str = "2.16.2") -> Path:
    """A virtualenv (Debian's /usr/bin/python3) with ``mlflow-skinny==<version>`` and a PostgreSQL driver, for
    MLflow releases the lab has no image for. Returns its python. Installed once under $ASGARD_LAB_CACHE/clients/."""
    if not version.replace(".", "").isdigit():
        raise PostgresError(f"version: expected an MLflow release like 2.16.2, got {version!r}")
    cache = Path(os.environ.get("ASGARD_LAB_CACHE") or "/var/cache/asgard-mlflow-lab")
    venv = cache / "clients" / f"mlflow-skinny-{version}"
    py = venv / "bin" / "python"
    if (venv / ".asgard-complete").exists():
        return py
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["/usr/bin/python3", "-m", "venv", str(venv)], check=True, capture_output=True, timeout=120)
    p = subprocess.run([str(venv / "bin" / "pip"), "install", "--disable-pip-version-check", "-q",
                        f"mlflow-skinny=={version}", *OLD_MLFLOW_REQUIREMENTS],
                       capture_output=True, text=True, timeout=900, check=False)
    if p.returncode != 0:
        raise PostgresError(f"could not install mlflow-skinny=={version} into {venv}: {p.stderr.strip()[-500:]}")
    (venv / ".asgard-complete").write_text(version + "\n")
    return py


def seed_store(uri: str, version: str = "2.16.2", experiments: tuple[str, ...] = ("old-a", "old-b")) -> dict:
    """Write a backend store at ``uri`` with MLflow ``version`` (see ensure_mlflow_client): one experiment per name,
    each with a run (param p, metric m). Returns {mlflow_version, experiments: {name: id}, runs: {name: run_id}}."""
    py = ensure_mlflow_client(version)
    env = {**os.environ, "ASGARD_STORE_URI": uri, "ASGARD_ARTIFACT_ROOT": "/tmp/asgard-seed-artifacts",
           "ASGARD_EXPERIMENTS": json.dumps(list(experiments))}
    p = subprocess.run([str(py), "-c", _SEED_SCRIPT], env=env, capture_output=True, text=True, timeout=300, check=False)
    if p.returncode != 0:
        raise PostgresError(f"MLflow {version} could not write the store: {p.stderr.strip()[-800:].replace(uri, '<uri>')}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def find_bindir() -> Path:
    """The newest /usr/lib/postgresql/<major>/bin that has initdb and pg_ctl."""
    found = []
    for d in glob.glob("/usr/lib/postgresql/*/bin"):
        p = Path(d)
        if (p / "initdb").exists() and (p / "pg_ctl").exists():
            try:
                found.append((float(p.parent.name), p))
            except ValueError:
                continue
    if not found:
        raise PostgresError("PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin: "
                            "install Debian's postgresql package (apt-get install -y postgresql)")
    return max(found)[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _host_has_address(addr: str) -> bool:
    try:
        with socket.socket() as s:
            s.bind((addr, 0))
        return True
    except OSError:
        return False


class PostgresServer:
    def __init__(self, directory: str | os.PathLike, *, password: str | None = None, db: str = "mlflow",
                 user: str = "mlflow", port: int | None = None,
                 listen: tuple[str, ...] = ("127.0.0.1", LAB_BRIDGE_ADDRESS), remove_on_exit: bool = True) -> None:
        for field, value in (("db", db), ("user", user)):
            if not value or not value.replace("_", "").isalnum():
                raise PostgresError(f"{field}: expected a plain identifier (letters, digits, _), got {value!r}")
        for a in listen:
            try:
                ipaddress.ip_address(a)
            except ValueError:
                raise PostgresError(f"listen: expected IP addresses like 127.0.0.1, got {a!r}") from None
        self.dir = Path(directory).resolve()
        self.data = self.dir / "data"
        self.password = password or secrets.token_urlsafe(16)
        self.db, self.user = db, user
        self.port = port
        self.listen = tuple(listen)
        self.remove_on_exit = remove_on_exit
        self.bindir = find_bindir()
        self.run_as = "postgres" if os.geteuid() == 0 else None

    # ------------------------------------------------------------------ helpers
    def _run(self, *cmd: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        kw = {}
        if self.run_as:
            pw = pwd.getpwnam(self.run_as)
            kw = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": [], "env": {**os.environ, "HOME": str(self.dir)}}
        p = subprocess.run(list(cmd), input=input, capture_output=True, text=True, timeout=120, cwd=self.dir, **kw)
        if check and p.returncode != 0:
            raise PostgresError(f"{Path(cmd[0]).name} failed (exit {p.returncode}): {p.stderr.strip() or p.stdout.strip()}")
        return p

    def _chown(self, path: Path) -> None:
        if self.run_as:
            pw = pwd.getpwnam(self.run_as)
            os.chown(path, pw.pw_uid, pw.pw_gid)

    @property
    def state_file(self) -> Path:
        return self.dir / STATE_FILE

    def running(self) -> bool:
        if not (self.data / "postmaster.pid").exists():
            return False
        return self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "status", check=False).returncode == 0

    def uri(self, host: str = LAB_BRIDGE_ADDRESS) -> str:
        return f"postgresql://{quote(self.user)}:{quote(self.password, safe='')}@{host}:{self.port}/{self.db}"

    def info(self) -> dict:
        return {"dir": str(self.dir), "port": self.port, "listen": list(self.listen), "db": self.db, "user": self.user,
                "password": self.password, "uri": self.uri(LAB_BRIDGE_ADDRESS), "local_uri": self.uri("127.0.0.1"),
                "bindir": str(self.bindir)}

    def psql(self, sql: str, db: str | None = None) -> str:
        """Run SQL as the superuser over the Unix socket; returns unaligned, tuples-only output."""
        p = self._run(str(self.bindir / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", str(self.dir),
                      "-p", str(self.port), "-U", "postgres", "-d", db or self.db, "-f", "-", input=sql)
        return p.stdout.strip()

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> PostgresServer:
        if self.state_file.exists():
            saved = json.loads(self.state_file.read_text())
            self.port, self.password = saved["port"], saved["password"]
            self.db, self.user, self.listen = saved["db"], saved["user"], tuple(saved["listen"])
            if self.running():
                return self
        missing = [a for a in self.listen if not _host_has_address(a)]
        if missing:
            hint = " (the lab's bridge: start the lab first, `python -m asgardlab up`)" if LAB_BRIDGE_ADDRESS in missing else ""
            raise PostgresError(f"listen: this host has no address {', '.join(missing)}{hint}")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o755)
        self._chown(self.dir)
        if self.run_as:
            for parent in self.dir.parents:
                if not parent.stat().st_mode & 0o001:
                    raise PostgresError(f"dir: the {self.run_as} user cannot reach {self.dir} ({parent} is not searchable "
                                        "by others); use a directory under /tmp, e.g. tempfile.mkdtemp()")
        self.port = self.port or _free_port()
        if not (self.data / "PG_VERSION").exists():
            if self.data.exists():
                shutil.rmtree(self.data)
            self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth-local=trust",
                      "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8")
            hba = self.data / "pg_hba.conf"
            hba.write_text("# asgard tests: superuser over the socket only; the app role with a password over TCP\n"
                           "local all postgres trust\n"
                           f"host {self.db} {self.user} 127.0.0.1/32 scram-sha-256\n"
                           f"host {self.db} {self.user} {POD_NETWORK} scram-sha-256\n")
            self._chown(hba)
        conf = self.data / "postgresql.auto.conf"
        conf.write_text(f"listen_addresses = '{','.join(self.listen)}'\nport = {self.port}\n"
                        f"unix_socket_directories = '{self.dir}'\nmax_connections = 50\nshared_buffers = 32MB\n"
                        "fsync = off\nsynchronous_commit = off\npassword_encryption = 'scram-sha-256'\n")
        self._chown(conf)
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "server.log"), "-w", "-t", "60", "start")
        exists = self.psql(f"SELECT 1 FROM pg_roles WHERE rolname = '{self.user}'", db="postgres")
        pw_sql = self.password.replace("'", "''")
        verb = "ALTER" if exists == "1" else "CREATE"
        self.psql(f"{verb} ROLE {self.user} LOGIN PASSWORD '{pw_sql}';", db="postgres")
        if self.psql(f"SELECT 1 FROM pg_database WHERE datname = '{self.db}'", db="postgres") != "1":
            self.psql(f"CREATE DATABASE {self.db} OWNER {self.user};", db="postgres")
        self.state_file.write_text(json.dumps(self.info(), indent=2) + "\n")
        self.state_file.chmod(0o600)
        self._wait_tcp()
        return self

    def _wait_tcp(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection((self.listen[0], self.port), timeout=1):
                    return
            except OSError as e:
                if time.monotonic() > deadline:
                    raise PostgresError(f"PostgreSQL does not accept connections on {self.listen[0]}:{self.port}: {e}") from None
                time.sleep(0.1)

    def stop(self, remove: bool | None = None) -> None:
        if self.data.exists() and (self.data / "postmaster.pid").exists():
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop", check=False)
        if self.remove_on_exit if remove is None else remove:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="postgres.py", description="A private PostgreSQL for tests (Debian packages).")
    sub = p.add_subparsers(dest="cmd", required=True)
    dp = sub.add_parser("driver", help="make the lab's MLflow runtime able to use PostgreSQL (psycopg, psycopg2)")
    dp.add_argument("--version", default="3.17.2", help="MLflow runtime version (default 3.17.2)")
    op = sub.add_parser("old-store", help="write a backend store with an older MLflow (mlflow-skinny, from the host)")
    op.add_argument("--uri", required=True, help="the backend store URI as the host reaches it (local_uri)")
    op.add_argument("--version", default="2.16.2", help="MLflow release (default 2.16.2)")
    for name in ("start", "stop", "status"):
        sp = sub.add_parser(name)
        sp.add_argument("--dir", required=True, help="the cluster's directory")
        if name == "start":
            sp.add_argument("--password", help="the app role's password (default: random)")
            sp.add_argument("--db", default="mlflow")
            sp.add_argument("--user", default="mlflow")
            sp.add_argument("--port", type=int, default=None, help="default: a free port")
            sp.add_argument("--listen", default=f"127.0.0.1,{LAB_BRIDGE_ADDRESS}", help="comma-separated IP addresses")
        if name == "stop":
            sp.add_argument("--remove", action="store_true", help="also delete --dir")
    args = p.parse_args(argv)
    try:
        if args.cmd == "driver":
            print(ensure_lab_driver(args.version))
            return 0
        if args.cmd == "old-store":
            print(json.dumps(seed_store(args.uri, args.version)))
            return 0
        if args.cmd == "start":
            srv = PostgresServer(args.dir, password=args.password, db=args.db, user=args.user, port=args.port,
                                 listen=tuple(a.strip() for a in args.listen.split(",") if a.strip()))
            print(json.dumps(srv.start().info()))
            return 0
        state = Path(args.dir) / STATE_FILE
        if not state.exists():
            print(f"postgres.py: no cluster in {args.dir} ({STATE_FILE} missing)", file=sys.stderr)
            return 0 if args.cmd == "stop" else 3
        saved = json.loads(state.read_text())
        srv = PostgresServer(args.dir, password=saved["password"], db=saved["db"], user=saved["user"], port=saved["port"],
                             listen=tuple(saved["listen"]))
        if args.cmd == "status":
            ok = srv.running()
            print(json.dumps({**saved, "running": ok}))
            return 0 if ok else 3
        srv.stop(remove=args.remove)
        print(f"stopped PostgreSQL in {args.dir}")
        return 0
    except PostgresError as e:
        print(f"postgres.py: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
