"""Pod networking: one network namespace per pod, a veth pair into the host bridge.

Host side: bridge ``asgardlab0`` with 10.244.0.1/16 (the address pods use to reach the host, e.g. a
PostgreSQL a test started on the host listening on 10.244.0.1 or 0.0.0.0). Each pod: namespace
``asgl-<uid prefix>`` with ``lo`` up, ``eth0`` = the peer of ``va<id>`` on the bridge, an address from
10.244.0.0/16 (status.podIP) and a default route via 10.244.0.1. Pods reach each other by pod IP.
Needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) and iproute2.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import random
import shutil

log = logging.getLogger("asgardlab.kubelet")

BRIDGE = "asgardlab0"
HOST_IP = "10.244.0.1"
CIDR = ipaddress.ip_network("10.244.0.0/16")
NS_PREFIX = "asgl-"


class HostLacks(RuntimeError):
    """The host cannot run the lab's pods (says what is missing)."""


async def run(*argv: str, check: bool = True) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    text = out.decode(errors="replace").strip()
    if check and proc.returncode:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {text}")
    return proc.returncode, text


def check_host() -> None:
    missing = []
    if os.geteuid() != 0:
        missing.append("root privileges (the lab's kubelet creates network namespaces, a bridge and veth pairs; run as root, as CI does)")
    for tool in ("ip", "unshare", "nsenter"):
        if not shutil.which(tool):
            missing.append(f"the '{tool}' command (Debian packages iproute2 / util-linux)")
    if not os.path.exists("/proc/self/ns/net") or not os.path.exists("/proc/self/ns/mnt"):
        missing.append("network and mount namespaces (kernel CONFIG_NET_NS / CONFIG_NAMESPACES)")
    if not os.path.exists("/usr/bin/python3"):
        missing.append("Debian's /usr/bin/python3 (runs the container launcher and host-image containers)")
    if missing:
        raise HostLacks("the lab cannot run pods on this host; it lacks: " + "; ".join(missing))


def proc_read(name: str):
    """(pid, content of /proc/<pid>/<name>) for every other process on the host that can be read."""
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            with open(f"/proc/{d}/{name}", "rb") as fh:
                yield int(d), fh.read()
        except OSError:
            continue


def other_labs_running() -> list[int]:
    """pids of other lab servers on this host (``python -m asgardlab ... serve``), even those with no pods yet:
    they (and e.g. a PostgreSQL a test bound to 10.244.0.1) still need the bridge."""
    return [pid for pid, cmdline in proc_read("cmdline")
            if {b"asgardlab", b"serve"} <= set(cmdline.split(b"\0"))]


class Network:
    def __init__(self, state_dir) -> None:
        self.used: set[str] = {HOST_IP}
        # a random start keeps two labs on one host (sharing the bridge) from handing out the same IPs
        self._next = int(ipaddress.ip_address(HOST_IP)) + 1 + random.randrange(0, 60000)
        self.record = state_dir / "netns"

    async def setup(self) -> None:
        check_host()
        rc, _ = await run("ip", "netns", "add", f"{NS_PREFIX}probe", check=False)
        if rc:
            _, out = await run("ip", "netns", "add", f"{NS_PREFIX}probe", check=False)
            raise HostLacks(f"the lab cannot run pods on this host: 'ip netns add' fails ({out}); network namespaces are unavailable")
        await run("ip", "netns", "del", f"{NS_PREFIX}probe", check=False)
        await self.cleanup_stale()
        rc, _ = await run("ip", "link", "show", BRIDGE, check=False)
        if rc:
            await run("ip", "link", "add", BRIDGE, "type", "bridge")
        await run("ip", "addr", "replace", f"{HOST_IP}/{CIDR.prefixlen}", "dev", BRIDGE)
        await run("ip", "link", "set", BRIDGE, "up")

    async def cleanup_stale(self) -> None:
        """Remove the namespaces this lab (same state dir) left behind, e.g. after a crash."""
        self.record.mkdir(parents=True, exist_ok=True)
        for f in self.record.iterdir():
            log.info("removing stale pod network namespace %s", f.name)
            await run("ip", "netns", "del", f.name, check=False)
            f.unlink(missing_ok=True)

    def allocate(self) -> str:
        for _ in range(CIDR.num_addresses):
            cand = ipaddress.ip_address(self._next)
            self._next += 1
            if self._next >= int(CIDR.broadcast_address) - 1:
                self._next = int(ipaddress.ip_address(HOST_IP)) + 1
            s = str(cand)
            if s not in self.used and not s.endswith(".0") and not s.endswith(".255"):
                self.used.add(s)
                return s
        raise RuntimeError("pod CIDR 10.244.0.0/16 exhausted")

    async def ensure_bridge(self) -> None:
        """The bridge is shared by every lab on this host; recreate it if another lab's teardown removed it."""
        rc, _ = await run("ip", "link", "show", BRIDGE, check=False)
        if rc:
            log.warning("bridge %s is gone (removed by another lab?): recreating it", BRIDGE)
            await run("ip", "link", "add", BRIDGE, "type", "bridge", check=False)
            await run("ip", "addr", "replace", f"{HOST_IP}/{CIDR.prefixlen}", "dev", BRIDGE)
            await run("ip", "link", "set", BRIDGE, "up")

    async def create(self, uid: str) -> tuple[str, str]:
        await self.ensure_bridge()
        ns = NS_PREFIX + uid.replace("-", "")[:12]
        veth = "va" + uid.replace("-", "")[:12]
        ip = self.allocate()
        await run("ip", "netns", "del", ns, check=False)
        await run("ip", "netns", "add", ns)
        (self.record / ns).touch()
        await run("ip", "-n", ns, "link", "set", "lo", "up")
        await run("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
        await run("ip", "link", "set", veth, "master", BRIDGE, "up")
        await run("ip", "-n", ns, "addr", "add", f"{ip}/{CIDR.prefixlen}", "dev", "eth0")
        await run("ip", "-n", ns, "link", "set", "eth0", "up")
        await run("ip", "-n", ns, "route", "add", "default", "via", HOST_IP)
        return ns, ip

    async def delete(self, ns: str | None, ip: str | None) -> None:
        if ns:
            await run("ip", "netns", "del", ns, check=False)
            (self.record / ns).unlink(missing_ok=True)
        if ip:
            self.used.discard(ip)

    async def teardown(self) -> None:
        await self.cleanup_stale()
        others = [n for n in (os.listdir("/run/netns") if os.path.isdir("/run/netns") else []) if n.startswith(NS_PREFIX)]
        if not others and not other_labs_running():  # another lab on this host may still use the bridge
            await run("ip", "link", "del", BRIDGE, check=False)
