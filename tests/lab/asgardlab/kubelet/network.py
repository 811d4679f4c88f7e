"""Pod networking: one network namespace per pod, a veth pair into the lab's own bridge.

Every lab gets its own pod network, so that several labs in one network namespace (different state dirs)
never hand out the same pod IP and never touch each other's bridge, veths or routes: slot ``k`` (0-15) is the
subnet ``10.244.(16k).0/20`` on bridge ``asgardlab<k>`` whose address ``10.244.(16k).1`` is the gateway (the
address pods use to reach the host). The first lab in a network namespace gets slot 0: bridge ``asgardlab0``,
gateway **10.244.0.1** (what tests/helpers/postgres.py and the docs use). A lab claims the lowest free slot under
a lock (one per network namespace) and marks its bridge with its pid (the bridge's alias); a bridge whose owner
is gone (or is an earlier run of the same state dir) is reclaimed. The choice is written to
``<state-dir>/network.json`` (bridge, cidr, gateway) and shows in the Node (``spec.podCIDR``, InternalIP) and in
every pod's ``status.hostIP``. The host reaches every lab's pods at their ``status.podIP`` (one connected route
per bridge). Each pod: namespace ``asgl-<uid prefix>`` with ``lo`` up, ``eth0`` = the peer of ``va<id>`` on the
bridge, an address from the lab's subnet and a default route via the gateway. Pods of one lab reach each other
by pod IP. Needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) and iproute2.
"""

from __future__ import annotations

import asyncio
import fcntl
import ipaddress
import json
import logging
import os
import re
import shutil

log = logging.getLogger("asgardlab.kubelet")

POD_NETWORK = ipaddress.ip_network("10.244.0.0/16")
LAB_PREFIX = 20  # one /20 (4093 pod IPs) per lab: 16 labs per network namespace
SLOTS = list(POD_NETWORK.subnets(new_prefix=LAB_PREFIX))
BRIDGE_PREFIX = "asgardlab"
HOST_IP = str(SLOTS[0][1])  # the first lab's gateway, 10.244.0.1
NS_PREFIX = "asgl-"
LOCK_DIR = "/run/asgardlab"


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
    for ns in ("net", "mnt", "pid"):
        if not os.path.exists(f"/proc/self/ns/{ns}"):
            missing.append("network, mount and PID namespaces (kernel CONFIG_NET_NS / CONFIG_PID_NS / CONFIG_NAMESPACES)")
            break
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


def _netns_id(pid: int | str = "self") -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


def lab_alive_here(pid: int) -> bool:
    """Is ``pid`` a lab server (``python -m asgardlab ... serve``) in this network namespace?"""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            argv = set(fh.read().split(b"\0"))
    except OSError:
        return False
    return {b"asgardlab", b"serve"} <= argv and _netns_id(pid) == _netns_id()


class Network:
    def __init__(self, state_dir) -> None:
        self.state_dir = state_dir
        self.record = state_dir / "netns"
        self.slot: int | None = None
        self.cidr = SLOTS[0]
        self.gateway = HOST_IP
        self.bridge = f"{BRIDGE_PREFIX}0"
        self.used: set[str] = set()
        self._next = 0

    @property
    def _alias(self) -> str:
        return f"asgardlab pid={os.getpid()} state={self.state_dir}"[:250]

    async def setup(self) -> None:
        check_host()
        probe = f"{NS_PREFIX}probe-{os.getpid()}"
        rc, out = await run("ip", "netns", "add", probe, check=False)
        if rc:
            raise HostLacks(f"the lab cannot run pods on this host: 'ip netns add' fails ({out}); network namespaces are unavailable")
        await run("ip", "netns", "del", probe, check=False)
        await self.cleanup_stale()
        os.makedirs(LOCK_DIR, exist_ok=True)
        with open(f"{LOCK_DIR}/net-{_netns_id()}.lock", "w") as lock:  # one claim at a time per network namespace
            await asyncio.to_thread(fcntl.flock, lock, fcntl.LOCK_EX)
            try:
                await self._claim()
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        self.used = {str(self.cidr.network_address), self.gateway, str(self.cidr.broadcast_address)}
        self._next = int(self.cidr.network_address) + 2
        (self.state_dir / "network.json").write_text(json.dumps(
            {"bridge": self.bridge, "cidr": str(self.cidr), "gateway": self.gateway}) + "\n")
        log.info("pod network %s on bridge %s, gateway %s", self.cidr, self.bridge, self.gateway)

    async def _bridges(self) -> dict[str, str]:
        """name -> alias of the lab bridges in this network namespace."""
        _, out = await run("ip", "-j", "link", "show", "type", "bridge", check=False)
        try:
            links = json.loads(out or "[]")
        except ValueError:
            links = []
        return {ln["ifname"]: ln.get("ifalias", "") for ln in links if ln.get("ifname", "").startswith(BRIDGE_PREFIX)}

    def _owner_alive(self, alias: str) -> bool:
        m = re.match(r"asgardlab pid=(\d+) state=(.*)$", alias)
        if m is None:  # no owner recorded (made by an older lab version): in use while another lab runs here
            return any(lab_alive_here(pid) for pid, _ in proc_read("stat"))
        if m[2] == re.match(r"asgardlab pid=\d+ state=(.*)$", self._alias)[1]:
            return False  # an earlier run of this lab (crashed, or replaced by this one)
        return int(m[1]) != os.getpid() and lab_alive_here(int(m[1]))

    async def _claim(self) -> None:
        bridges = await self._bridges()
        for k, net in enumerate(SLOTS):
            name = f"{BRIDGE_PREFIX}{k}"
            if name in bridges:
                if self._owner_alive(bridges[name]):
                    continue
                log.info("reclaiming bridge %s (its owner is gone: %s)", name, bridges[name] or "no owner recorded")
                await run("ip", "link", "del", name, check=False)
            self.slot, self.cidr, self.bridge, self.gateway = k, net, name, str(net[1])
            await self._make_bridge()
            return
        raise HostLacks(f"all {len(SLOTS)} lab pod networks in this network namespace are in use "
                        f"(bridges {BRIDGE_PREFIX}0-{len(SLOTS) - 1}); stop a lab or run this one in another network namespace")

    async def _make_bridge(self) -> None:
        await run("ip", "link", "add", self.bridge, "type", "bridge")
        await run("ip", "link", "set", "dev", self.bridge, "alias", self._alias)
        await run("ip", "addr", "replace", f"{self.gateway}/{LAB_PREFIX}", "dev", self.bridge)
        await run("ip", "link", "set", self.bridge, "up")

    async def cleanup_stale(self) -> None:
        """Remove the namespaces this lab (same state dir) left behind, e.g. after a crash."""
        self.record.mkdir(parents=True, exist_ok=True)
        for f in self.record.iterdir():
            log.info("removing stale pod network namespace %s", f.name)
            await run("ip", "netns", "del", f.name, check=False)
            f.unlink(missing_ok=True)

    def allocate(self) -> str:
        first, last = int(self.cidr.network_address) + 2, int(self.cidr.broadcast_address) - 1
        for _ in range(self.cidr.num_addresses):
            cand = self._next
            self._next = first if self._next >= last else self._next + 1
            s = str(ipaddress.ip_address(cand))
            if s not in self.used:
                self.used.add(s)
                return s
        raise RuntimeError(f"pod CIDR {self.cidr} exhausted")

    async def ensure_bridge(self) -> None:
        """Recreate this lab's bridge if it is gone (deleted by hand, or reclaimed by a lab that judged us dead)."""
        rc, _ = await run("ip", "link", "show", self.bridge, check=False)
        if rc:
            log.warning("bridge %s is gone: recreating it", self.bridge)
            await self._make_bridge()

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
        await run("ip", "link", "set", veth, "master", self.bridge, "up")
        await run("ip", "-n", ns, "addr", "add", f"{ip}/{LAB_PREFIX}", "dev", "eth0")
        await run("ip", "-n", ns, "link", "set", "eth0", "up")
        await run("ip", "-n", ns, "route", "add", "default", "via", self.gateway)
        return ns, ip

    async def delete(self, ns: str | None, ip: str | None) -> None:
        if ns:
            await run("ip", "netns", "del", ns, check=False)
            (self.record / ns).unlink(missing_ok=True)
        if ip:
            # the host's ARP entry would send the next pod given this IP to the old MAC for a while
            await run("ip", "neigh", "del", ip, "dev", self.bridge, check=False)
            self.used.discard(ip)

    async def teardown(self) -> None:
        await self.cleanup_stale()
        bridges = await self._bridges()
        if bridges.get(self.bridge) == self._alias:
            await run("ip", "link", "del", self.bridge, check=False)
        (self.state_dir / "network.json").unlink(missing_ok=True)
