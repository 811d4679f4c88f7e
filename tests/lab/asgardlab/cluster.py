"""Controllers and kubelet wired into the lab's API server (see server.py for the contract).

``setup(app, store, lab)`` (awaited by the server at startup, before its generic routes): prepares pod
networking (fails with a clear message if the host lacks root / namespaces / iproute2), creates the Node
``asgard-lab-node``, starts the controllers and the kubelet, and registers
``/api/v1/namespaces/{ns}/pods/{name}/log|exec|portforward`` and ``/lab/pods/{ns}/{name}/fault``.
``shutdown()`` stops every pod (SIGTERM to each container's PID 1, grace capped at 10 s, SIGKILL, sweep of
tagged processes) and removes the pod network namespaces and the lab's bridge.

Networking for tests (kubelet/network.py): each lab has its own pod network, a /20 of 10.244.0.0/16 on its
own bridge; the first lab in a network namespace gets 10.244.0.0/20 on ``asgardlab0``, and the host is
10.244.0.1 from inside its pods (e.g. a PostgreSQL on the host listening on 0.0.0.0 or 10.244.0.1). A lab's
gateway is in ``<state-dir>/network.json``, the Node's InternalIP and every pod's status.hostIP; the host
reaches pods at their status.podIP.
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
    cm = ControllerManager(store, rec, node_ip=kubelet.net.gateway, pod_cidr=str(kubelet.net.cidr))
    cm.start()
    Streams(kubelet).register(app)
    try:
        lab.namespace_controller = False  # ours waits for pods to terminate gracefully
    except AttributeError:
        pass
    await ingress.start()
    _state.update(kubelet=kubelet, cm=cm, ingress=ingress)
    log.info("kubelet and controllers started (node asgard-lab-node, pod network %s on bridge %s, gateway %s)",
             kubelet.net.cidr, kubelet.net.bridge, kubelet.net.gateway)


async def shutdown() -> None:
    cm, kubelet, ingress = _state.pop("cm", None), _state.pop("kubelet", None), _state.pop("ingress", None)
    if ingress is not None:
        await ingress.stop()
    if cm is not None:
        await cm.stop()
    if kubelet is not None:
        await kubelet.shutdown()
