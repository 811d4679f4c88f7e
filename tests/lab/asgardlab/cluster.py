"""Controllers and kubelet wired into the lab's API server (see server.py for the contract).

``setup(app, store, lab)`` (awaited by the server at startup, before its generic routes): prepares pod
networking (fails with a clear message if the host lacks root / namespaces / iproute2), creates the Node
``asgard-lab-node``, starts the controllers and the kubelet, and registers
``/api/v1/namespaces/{ns}/pods/{name}/log|exec|portforward`` and ``/lab/pods/{ns}/{name}/fault``.
``shutdown()`` stops every pod (SIGTERM, grace capped at 10 s, SIGKILL, sweep of tagged processes) and
removes the pod network namespaces (and the bridge when no other lab uses it).

Networking for tests: pods get IPs from 10.244.0.0/16 on the host bridge ``asgardlab0``; the host is
10.244.0.1 from inside pods (e.g. a PostgreSQL on the host listening on 0.0.0.0 or 10.244.0.1), and the
host reaches pods at their status.podIP.
"""

from __future__ import annotations

import logging

from .controllers import ControllerManager
from .controllers.events import Recorder
from .ingress.controller import IngressController
from .kubelet import Kubelet
from .kubelet.streams import Streams

log = logging.getLogger("asgardlab.cluster")
_state: dict = {}


async def setup(app, store, lab) -> None:
    rec = Recorder(store)
    ingress = IngressController(store, rec, lab.state_dir)
    ingress.check_host()  # before any pod networking: say at once what the host lacks
    kubelet = Kubelet(store, rec, lab.state_dir)
    await kubelet.start()
    cm = ControllerManager(store, rec)
    cm.start()
    Streams(kubelet).register(app)
    try:
        lab.namespace_controller = False  # ours waits for pods to terminate gracefully
    except AttributeError:
        pass
    await ingress.start()
    _state.update(kubelet=kubelet, cm=cm, ingress=ingress)
    log.info("kubelet and controllers started (node asgard-lab-node, pod network 10.244.0.0/16 on bridge asgardlab0)")


async def shutdown() -> None:
    cm, kubelet, ingress = _state.pop("cm", None), _state.pop("kubelet", None), _state.pop("ingress", None)
    if ingress is not None:
        await ingress.stop()
    if cm is not None:
        await cm.stop()
    if kubelet is not None:
        await kubelet.shutdown()
