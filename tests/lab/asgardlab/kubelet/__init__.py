"""The lab's kubelet: runs every pod bound to ``asgard-lab-node`` as real processes.

See pod.py (one pod), network.py (namespaces, bridge), launch.py (the last step before the container's
process) and streams.py (pods/log, pods/exec, pods/portforward, fault injection).

Resource limits are recorded in the pod and its container statuses but not enforced.
securityContext: runAsUser / runAsGroup / supplementalGroups / fsGroup (as a supplementary group) are honoured;
readOnlyRootFilesystem, capabilities, seccomp and privileged are recorded, not enforced.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pathlib
import signal

from .. import resources as R
from ..controllers.events import NODE_NAME, Recorder
from ..store import Store
from .network import Network, proc_read
from .pod import TAG, PodWorker, tagged_pids

log = logging.getLogger("asgardlab.kubelet")


class Kubelet:
    def __init__(self, store: Store, rec: Recorder, state_dir: pathlib.Path) -> None:
        self.store = store
        self.rec = rec
        self.state_dir = state_dir
        self.net = Network(state_dir)
        self.workers: dict[str, PodWorker] = {}  # pod uid -> worker
        self.faults: dict[tuple[str, str], dict] = {}
        self.instance = f"{os.getpid()}"
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> None:
        self.reap_orphans()
        await self.net.setup()
        (self.state_dir / "pods").mkdir(parents=True, exist_ok=True)
        self.store.add_listener(self._on_change)
        for pod in list(self.store.iter_refs(R.PODS)):
            self._on_change("ADDED", R.PODS, pod, None)

    @staticmethod
    def reap_orphans() -> None:
        """SIGKILL container processes whose lab server is gone (a lab that was killed leaves its containers
        running): their tag ``ASGARDLAB_CONTAINER_ID=<lab pid>-<container id>`` names a pid that no longer exists.
        Any lab on the host may do this, for any other lab's leftovers."""
        needle = f"{TAG}=".encode()
        for pid, environ in proc_read("environ"):
            entry = next((e for e in environ.split(b"\0") if e.startswith(needle)), None)
            if entry is None:
                continue
            owner = entry[len(needle):].split(b"-", 1)[0]
            if owner.isdigit() and not os.path.exists(f"/proc/{int(owner)}"):  # a reused pid: left alone
                log.warning("killing process %d of a container whose lab (pid %s) is gone", pid, owner.decode())
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def worker(self, ns: str, name: str) -> PodWorker | None:
        pod = self.store.get_ref(R.PODS, ns, name)
        if pod is None:
            return None
        return self.workers.get(pod["metadata"]["uid"])

    def _on_change(self, etype: str, rt, obj: dict, old) -> None:
        if rt.key != R.PODS.key:
            return
        md = obj["metadata"]
        uid = md["uid"]
        w = self.workers.get(uid)
        node = (obj.get("spec") or {}).get("nodeName")
        if etype == "DELETED":
            if w is not None:
                w.request_stop(0)  # force deletion: no grace (cuts a grace period already running)
            return
        if w is None and etype == "ADDED" and node in (None, "", NODE_NAME) and not md.get("deletionTimestamp"):
            w = PodWorker(self, obj)
            self.workers[uid] = w
            t = asyncio.get_running_loop().create_task(w.run())
            w.task = t
            self._tasks.add(t)
            t.add_done_callback(self._tasks.discard)
            return
        if w is not None and md.get("deletionTimestamp"):
            grace = md.get("deletionGracePeriodSeconds")
            if grace is None:
                grace = (obj.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
            w.request_stop(float(grace))  # while stopping: only a shorter grace period counts
        elif w is None and md.get("deletionTimestamp") and node == NODE_NAME:
            asyncio.get_running_loop().call_soon(self._finalize_orphan, md["namespace"], md["name"], uid)

    def _finalize_orphan(self, ns: str, name: str, uid: str) -> None:
        cur = self.store.get_ref(R.PODS, ns, name)
        if cur is not None and cur["metadata"]["uid"] == uid and uid not in self.workers:
            self.store.finalize_delete(R.PODS, ns, name)

    def release(self, w: PodWorker) -> None:
        self.workers.pop(w.uid, None)

    async def shutdown(self, max_grace: float = 10) -> None:
        ws = list(self.workers.values())
        for w in ws:
            w.request_stop(min(w.grace if w.stopping else float(w.spec.get("terminationGracePeriodSeconds", 30)), max_grace))
        tasks = [w.task for w in ws if w.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=max_grace + 15)
        # last resort: anything still carrying this lab's tag
        for pid in tagged_pids(f"{TAG}={self.instance}-"):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        await self.net.teardown()
