"""Container images -> local runtimes for the lab's kubelet.

The lab has no container engine: an image name is looked up in ``IMAGES`` below and the container's
command runs on the host, in the pod's network and mount namespaces, with the runtime's ``bin`` directory
first on ``PATH``.

| image (tag)                                             | runtime                                   |
|---------------------------------------------------------|-------------------------------------------|
| ghcr.io/mlflow/mlflow:v3.17.2, :3.17.2, :latest         | virtualenv with mlflow==3.17.2            |
| ghcr.io/mlflow/mlflow:v2.22.5, :2.22.5                  | virtualenv with mlflow==2.22.5, sqlalchemy<2.1 |
| burakince/mlflow:3.17.2 / :2.22.5 (and :latest = 3.17.2) | same virtualenvs                         |
| busybox:1, :1.36, :1.36.1, :1.37, :1.37.0, :latest, :stable; python:3.11, :3.11-slim, :3.11-bookworm, :3.11-slim-bookworm; debian:12, :12-slim, :bookworm, :bookworm-slim | the host's /bin and Debian's /usr/bin/python3 |

Any other image or tag fails as containerd fails to pull a tag that does not exist (ErrImagePull with
containerd's message ``... docker.io/library/busybox:2: not found``, then ImagePullBackOff); lab.log names the
declared tags.

MLflow runtimes are virtualenvs made with Debian's ``/usr/bin/python3 -m venv`` (world-readable, so pods
running as a non-root uid can use them) under ``$ASGARD_LAB_CACHE`` (default
``/var/cache/asgard-mlflow-lab``)``/runtimes/mlflow-<version>/``; a runtime is complete when
``.asgard-complete`` exists. They are installed on first use (the pod stays ContainerCreating meanwhile)
or ahead of time with ``python -m asgardlab.runtimes install [VERSION ...]``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import pathlib
import shutil
import subprocess
import sys
from dataclasses import dataclass

log = logging.getLogger("asgardlab.runtimes")

HOST_PYTHON = "/usr/bin/python3"
DEFAULT_CACHE = "/var/cache/asgard-mlflow-lab"
COMPLETE_MARKER = ".asgard-complete"

# version -> extra pip requirements. mlflow[auth]: `--app-name basic-auth` (Flask-WTF). psycopg2-binary (and psycopg 3, which SQLAlchemy 2.1 picks for postgresql://): the PostgreSQL driver, as in the community
# burakince/mlflow image (the official ghcr.io image does not ship it; on a real cluster use an image that does).
MLFLOW_VERSIONS: dict[str, tuple[str, ...]] = {
    "3.17.2": ("psycopg2-binary==2.9.11", "psycopg[binary]", "mlflow[auth]==3.17.2"),
    "2.22.5": ("sqlalchemy<2.1", "psycopg2-binary==2.9.11", "mlflow[auth]==2.22.5"),
}


def _marker_text(version: str) -> str:
    return "\n".join([version, *MLFLOW_VERSIONS.get(version, ())]) + "\n"

# repository -> {tag: mlflow version}
IMAGES: dict[str, dict[str, str]] = {
    "ghcr.io/mlflow/mlflow": {"v3.17.2": "3.17.2", "3.17.2": "3.17.2", "latest": "3.17.2", "v2.22.5": "2.22.5", "2.22.5": "2.22.5"},
    "burakince/mlflow": {"3.17.2": "3.17.2", "latest": "3.17.2", "2.22.5": "2.22.5"},
}
# repositories whose declared tags map to the host's tools (shell, coreutils, Debian bookworm's python3 3.11)
HOST_IMAGES: dict[str, tuple[str, ...]] = {
    "busybox": ("1", "1.36", "1.36.1", "1.37", "1.37.0", "latest", "stable"),
    "python": ("3.11", "3.11-slim", "3.11-bookworm", "3.11-slim-bookworm"),
    "debian": ("12", "12-slim", "bookworm", "bookworm-slim"),
}


@dataclass(frozen=True)
class Runtime:
    image: str
    kind: str  # "mlflow" or "host"
    version: str | None = None

    @property
    def path(self) -> pathlib.Path | None:
        if self.kind != "mlflow":
            return None
        return cache_dir() / "runtimes" / f"mlflow-{self.version}"

    @property
    def bin_dirs(self) -> list[str]:
        p = self.path
        return [str(p / "bin")] if p else []

    @property
    def image_id(self) -> str:
        return f"asgardlab://{self.kind}/{self.version or 'host'}"

    def installed(self) -> bool:
        p = self.path
        if p is None:
            return True
        marker = p / COMPLETE_MARKER
        return marker.exists() and marker.read_text() == _marker_text(self.version)


class UnknownImage(Exception):
    pass


def cache_dir() -> pathlib.Path:
    return pathlib.Path(os.environ.get("ASGARD_LAB_CACHE") or DEFAULT_CACHE)


def split_image(image: str) -> tuple[str, str]:
    ref = image.split("@", 1)[0]
    last = ref.rsplit("/", 1)[-1]
    if ":" in last:
        repo, tag = ref.rsplit(":", 1)
    else:
        repo, tag = ref, "latest"
    for prefix in ("docker.io/library/", "docker.io/", "index.docker.io/library/"):
        if repo.startswith(prefix):
            repo = repo[len(prefix):]
    return repo, tag


def reference(image: str) -> str:
    """The fully qualified reference containerd pulls: ``busybox`` -> ``docker.io/library/busybox:latest``."""
    name = image.split("@", 1)[0]
    first = name.split("/", 1)[0]
    if "/" not in name:
        name = "docker.io/library/" + name
    elif "." not in first and ":" not in first and first != "localhost":
        name = "docker.io/" + name
    if ":" not in name.rsplit("/", 1)[-1]:
        name += ":latest"
    return name


def resolve(image: str) -> Runtime:
    """The runtime for ``image``; raises UnknownImage (with containerd's pull error, as the kubelet reports it in
    the ErrImagePull message) for an image or tag the lab does not declare."""
    if not image or not isinstance(image, str):
        raise UnknownImage("rpc error: code = InvalidArgument desc = image must be a non-empty string")
    repo, tag = split_image(image)
    if repo in IMAGES and tag in IMAGES[repo]:
        return Runtime(image, "mlflow", IMAGES[repo][tag])
    if repo in HOST_IMAGES and tag in HOST_IMAGES[repo]:
        return Runtime(image, "host")
    ref = reference(image)
    known = IMAGES.get(repo) or HOST_IMAGES.get(repo)
    log.warning("image %s is not in the lab's image table (%s)", image,
                f"declared tags of {repo}: {', '.join(sorted(known))}" if known else "unknown repository")
    raise UnknownImage(f'rpc error: code = NotFound desc = failed to pull and unpack image "{ref}": '
                       f'failed to resolve reference "{ref}": {ref}: not found')


def _install_sync(version: str, echo=print) -> pathlib.Path:
    if version not in MLFLOW_VERSIONS:
        raise ValueError(f"unknown MLflow runtime version {version!r}; known: {', '.join(MLFLOW_VERSIONS)}")
    target = cache_dir() / "runtimes" / f"mlflow-{version}"
    marker = target / COMPLETE_MARKER
    if marker.exists() and marker.read_text() == _marker_text(version):
        echo(f"runtime mlflow-{version} already installed at {target}")
        return target
    if not os.path.exists(HOST_PYTHON):
        raise RuntimeError(f"{HOST_PYTHON} is missing: install Debian's python3 and python3-venv")
    reqs = [f"mlflow=={version}", *MLFLOW_VERSIONS[version]]
    if marker.exists() and (target / "bin" / "pip").exists():
        # complete for an older requirement set: add what is missing in place
        echo(f"updating runtime mlflow-{version}: pip install {' '.join(reqs)}")
        subprocess.run([str(target / "bin" / "pip"), "install", "--disable-pip-version-check", "-q", *reqs], check=True)
        subprocess.run(["chmod", "-R", "a+rX", str(target)], check=True)
        marker.write_text(_marker_text(version))
        return target
    if target.exists():
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(target.parent, 0o755)
    echo(f"creating virtualenv {target}")
    subprocess.run([HOST_PYTHON, "-m", "venv", str(target)], check=True)
    echo(f"pip install {' '.join(reqs)} into {target}")
    subprocess.run([str(target / "bin" / "pip"), "install", "--disable-pip-version-check", "-q", *reqs], check=True)
    subprocess.run(["chmod", "-R", "a+rX", str(target)], check=True)
    marker.write_text(_marker_text(version))
    echo(f"runtime mlflow-{version} complete")
    return target


_locks: dict[str, asyncio.Lock] = {}


async def ensure_installed(rt: Runtime) -> None:
    """Install ``rt`` if needed, without blocking the event loop (progress goes to the lab log)."""
    if rt.installed():
        return
    lock = _locks.setdefault(rt.version or "", asyncio.Lock())
    async with lock:
        if rt.installed():
            return
        log.info("installing MLflow runtime %s for image %s (first use)", rt.version, rt.image)
        await asyncio.to_thread(_install_sync, rt.version, log.info)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m asgardlab.runtimes", description="Manage the lab's MLflow runtimes.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    inst = sub.add_parser("install", help="install MLflow runtimes (default: all)")
    inst.add_argument("versions", nargs="*", help=f"versions to install (known: {', '.join(MLFLOW_VERSIONS)})")
    sub.add_parser("list", help="show the image table and what is installed")
    args = ap.parse_args(argv)
    if args.cmd == "install":
        for v in args.versions or list(MLFLOW_VERSIONS):
            try:
                _install_sync(v)
            except (ValueError, RuntimeError, subprocess.CalledProcessError) as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 1
        return 0
    for repo, tags in IMAGES.items():
        for tag, ver in tags.items():
            rt = Runtime(f"{repo}:{tag}", "mlflow", ver)
            print(f"{repo}:{tag} -> mlflow {ver} at {rt.path} ({'installed' if rt.installed() else 'not installed'})")
    for repo, tags in HOST_IMAGES.items():
        print(f"{repo}:{{{','.join(tags)}}} -> host /bin and {HOST_PYTHON}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
