"""Controllers running inside the lab process (see workloads.py, sets.py and core.py).

They reconcile on every store change (debounced) and at least once a second (for time-based state:
minReadySeconds, progressDeadlineSeconds, Job backoff).
"""

from __future__ import annotations

import asyncio
import logging

from ..store import Store
from .core import Core, ensure_node
from .events import Recorder
from .sets import Sets
from .workloads import Workloads

log = logging.getLogger("asgardlab.controllers")
INTERESTING = {"pods", "apps/deployments", "apps/replicasets", "apps/statefulsets", "apps/daemonsets", "batch/jobs", "services",
               "namespaces", "persistentvolumeclaims"}


class ControllerManager:
    def __init__(self, store: Store, rec: Recorder, node_ip: str | None = None, pod_cidr: str | None = None) -> None:
        self.store = store
        self.rec = rec
        self.node = {k: v for k, v in (("host_ip", node_ip), ("pod_cidr", pod_cidr)) if v}
        self.workloads = Workloads(store, rec)
        self.sets = Sets(store, rec)
        self.core = Core(store)
        self.wake = asyncio.Event()
        self.task: asyncio.Task | None = None

    def _on_change(self, etype, rt, obj, old) -> None:
        if rt.key in INTERESTING:
            self.wake.set()

    def start(self) -> None:
        ensure_node(self.store, **self.node)
        self.store.add_listener(self._on_change)
        self.task = asyncio.get_running_loop().create_task(self._loop())

    def sync_once(self) -> None:
        for fn in (self.core.sync_namespaces, self.workloads.sync_deployments, self.workloads.sync_replicasets,
                   self.sets.sync_statefulsets, self.sets.sync_daemonsets, self.workloads.sync_jobs, self.core.sync_pvcs,
                   self.core.sync_services):
            try:
                fn()
            except Exception:  # keep the other controllers running
                log.exception("controller %s failed", fn.__name__)

    async def _loop(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self.wake.wait(), timeout=1.0)
            except TimeoutError:
                pass
            self.wake.clear()
            await asyncio.sleep(0.05)
            self.sync_once()

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
