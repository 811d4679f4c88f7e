"""The lab's data plane: one real nginx (Debian's ``nginx`` package) per lab, run as a child of the lab server.

Everything lives under ``<state>/ingress/`` (its ``-p`` prefix): ``nginx.conf``, ``nginx.pid``, ``error.log``,
``access.log``, ``tmp/`` (request bodies, proxy buffers), ``certs/`` (0700; TLS key pairs 0600). No system
service and nothing under /etc/nginx is used. The master runs in the foreground (``daemon off``) in the lab's
process group, so ``make lab-down`` (SIGTERM, then SIGKILL of the group) leaves nothing behind; it also gets
SIGTERM if the lab server dies (PR_SET_PDEATHSIG), and a master left by a crashed lab with the same state dir
is stopped at the next start (its pid file).

A configuration change is applied the way ingress-nginx does it: ``nginx -t`` on the new file, then SIGHUP.
``reload()`` returns once the new configuration serves every new connection: the status server answers the
new generation and every worker of the old configuration has started its graceful shutdown (its title is
"worker process is shutting down", set right before it closes its listening sockets).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import hashlib
import logging
import os
import shutil
import signal
import socket
import time
import urllib.request
from pathlib import Path

log = logging.getLogger("asgardlab.ingress")

_PR_SET_PDEATHSIG = 1
try:  # resolved before any fork: the child only calls the function
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # pragma: no cover - non-glibc hosts
    _prctl = None


def _die_with_parent() -> None:
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class NginxError(RuntimeError):
    """nginx refused a configuration or could not start."""


def find_nginx() -> str | None:
    """The nginx binary of Debian's ``nginx`` package (``/usr/sbin/nginx``), or None."""
    for cand in (shutil.which("nginx"), "/usr/sbin/nginx"):
        if cand and os.access(cand, os.X_OK):
            return cand
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def lb_address(seed: str, tries: int = 64) -> str | None:
    """A loopback address of this lab's own (127.x.y.z, derived from ``seed``, e.g. the state directory) on which
    ports 80 and 443 are free: the load balancer address the lab publishes in ``status.loadBalancer``, served on the
    standard ports as a cloud load balancer is. Two labs in one network namespace get different addresses. None when
    no candidate is free or the ports cannot be bound (not root)."""
    digest = hashlib.sha256(seed.encode()).digest()
    for i in range(tries):
        a, b, c = digest[(3 * i) % 30: (3 * i) % 30 + 3]
        addr = f"127.{a % 254 + 1}.{(b + i) % 254 + 1}.{c % 253 + 2}"
        try:
            with socket.socket() as s80, socket.socket() as s443:
                s80.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s443.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s80.bind((addr, 80))
                s443.bind((addr, 443))
            return addr
        except PermissionError:
            return None
        except OSError:
            continue
    return None


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        out = []
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open(f"/proc/{d}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(d))
            except (OSError, IndexError, ValueError):
                continue
        return out


class Nginx:
    def __init__(self, prefix: Path, binary: str) -> None:
        self.prefix = prefix
        self.binary = binary
        self.conf = prefix / "nginx.conf"
        self.pid_file = prefix / "nginx.pid"
        self.error_log = prefix / "error.log"
        self.proc: asyncio.subprocess.Process | None = None
        self.status_port = 0

    # ------------------------------------------------------------------ helpers
    def _cmd(self, conf: Path, *extra: str) -> list[str]:
        return [self.binary, "-p", f"{self.prefix}/", "-c", str(conf), "-e", str(self.error_log), *extra]

    def prepare(self) -> None:
        for d in (self.prefix, self.prefix / "tmp"):
            d.mkdir(parents=True, exist_ok=True)
        certs = self.prefix / "certs"
        certs.mkdir(parents=True, exist_ok=True)
        certs.chmod(0o700)

    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def stop_stale(self) -> None:
        """Stop a master a crashed lab (same state dir) left behind."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return
        if str(self.conf) not in _cmdline(pid):
            return
        log.warning("stopping nginx (pid %s) left behind by a previous lab with this state dir", pid)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and _cmdline(pid):
                time.sleep(0.05)
            if not _cmdline(pid):
                break
        self.pid_file.unlink(missing_ok=True)

    async def test(self, text: str) -> str | None:
        """``nginx -t`` on ``text``; None when valid, else nginx's complaint."""
        new = self.prefix / "nginx.conf.new"
        new.write_text(text)
        proc = await asyncio.create_subprocess_exec(*self._cmd(new, "-t", "-q"), stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.STDOUT)
        out, _ = await proc.communicate()
        if proc.returncode:
            return out.decode(errors="replace").strip() or f"nginx -t exited {proc.returncode}"
        return None

    def _generation(self, timeout: float = 0.5) -> int | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.status_port}/generation", timeout=timeout) as r:
                return int(r.read().decode().strip())
        except (OSError, ValueError):
            return None

    async def _wait_generation(self, generation: int, old_workers: list[int], timeout: float = 15.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + timeout
        while True:
            if not self.running():
                raise NginxError(f"nginx exited ({self.proc.returncode if self.proc else '?'}); see {self.error_log}")
            seen = await loop.run_in_executor(None, self._generation)
            retired = all("shutting down" in _cmdline(p) or not _cmdline(p) for p in old_workers)
            if seen == generation and retired:
                return
            if time.monotonic() > deadline:
                raise NginxError(f"nginx did not load configuration generation {generation} within {timeout:.0f}s "
                                 f"(it serves {seen}); see {self.error_log}")
            await asyncio.sleep(0.01)

    def workers(self) -> list[int]:
        if not self.running():
            return []
        return [p for p in _children(self.proc.pid) if "worker process" in _cmdline(p) and "shutting down" not in _cmdline(p)]

    # ------------------------------------------------------------------ lifecycle
    async def start(self, text: str, generation: int) -> None:
        self.prepare()
        self.stop_stale()
        err = await self.test(text)
        if err:
            raise NginxError(f"nginx refused the lab's initial configuration: {err}")
        (self.prefix / "nginx.conf.new").replace(self.conf)
        with open(self.prefix / "nginx.out", "ab") as out:
            self.proc = await asyncio.create_subprocess_exec(*self._cmd(self.conf), stdin=asyncio.subprocess.DEVNULL,
                                                             stdout=out, stderr=out, preexec_fn=_die_with_parent)
        await self._wait_generation(generation, [])
        log.info("nginx %s started (pid %s, prefix %s)", self.binary, self.proc.pid, self.prefix)

    async def reload(self, text: str, generation: int) -> None:
        t0 = time.monotonic()
        err = await self.test(text)
        if err:
            raise NginxError(err)
        t1 = time.monotonic()
        (self.prefix / "nginx.conf.new").replace(self.conf)
        if not self.running():
            raise NginxError(f"nginx is not running (exit code {self.proc.returncode if self.proc else '?'}); see {self.error_log}")
        old = self.workers()
        os.kill(self.proc.pid, signal.SIGHUP)
        await self._wait_generation(generation, old)
        log.info("nginx serves configuration generation %s (nginx -t %.0f ms, reload %.0f ms)", generation,
                 (t1 - t0) * 1000, (time.monotonic() - t1) * 1000)

    async def stop(self, timeout: float = 5.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.returncode is not None:
            return
        workers = _children(proc.pid)
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)  # fast shutdown: workers exit at once
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            log.warning("nginx (pid %s) did not stop within %.0fs after SIGTERM: SIGKILL", proc.pid, timeout)
            for pid in [proc.pid, *workers]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            await proc.wait()
        for pid in workers:  # workers of an earlier generation still finishing a request
            if "nginx" in _cmdline(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)
        log.info("nginx stopped")
