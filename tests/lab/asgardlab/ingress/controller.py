"""The lab's ingress controller: watches the store, renders nginx.conf, reloads nginx, publishes status.

Started by ``asgardlab.cluster.setup`` with the kubelet and the other controllers. On start it makes sure
IngressClass ``nginx`` (controller ``k8s.io/ingress-nginx``, the default class) and GatewayClass ``asgard-lab``
exist, picks three free ports on 127.0.0.1 (HTTP, HTTPS, and nginx's internal status server) and a loopback
address of its own, 127.x.y.z, on which ports 80 and 443 are free (the load balancer: ``nginx.lb_address``), and writes
``<state>/ingress.json``::

    {"http": "http://127.0.0.1:<port>", "https": "https://127.0.0.1:<port>", "address": "127.x.y.z"}

nginx serves the same virtual hosts on both: the free ports (what tests use) and ``<address>:80`` / ``:443``, the
address published in ``status.loadBalancer`` as a cloud load balancer's, so that a client that reads the status (as
verify does) reaches it on the standard ports. Without root (ports below 1024) the address is 127.0.0.1 and
only the free ports serve.

Every change of an IngressClass, Ingress, Service, EndpointSlice, Secret, Namespace or Gateway API object wakes
it (debounced 50 ms); when the rendered configuration differs it runs ``nginx -t`` and reloads. After the reload
serves the new configuration it publishes ``status.loadBalancer.ingress: [{ip: <address>}]`` on the Ingresses it
serves (ingress-nginx with ``--publish-status-address=<address>``), the Gateway API status, Events on the
Ingresses (Normal "Sync" "Scheduled for sync" as ingress-nginx records; Warning "Sync" for what the lab could not
honour), and ``<state>/ingress/synced.json`` (``{"resourceVersion": RV, "generation": N, "ok": bool}``: every
object change up to RV is live in nginx; tests wait on it instead of sleeping). A change of any other object (a
Lease, a pod's status, an Event) only moves RV on to the store's resourceVersion, once the changes it watches are
synced: nothing nginx serves depends on it, and a test waiting for "every change so far" would otherwise wait for a
watched change that never comes (seen: another xdist worker's write landed between a test's deploy and its wait).
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import os
import re
from pathlib import Path

from .. import resources as R
from ..controllers.events import Recorder
from ..store import ApiError, Store
from . import gateway as G
from . import ingresses as I
from .common import Builder, Snapshot
from .model import Config, render
from .nginx import Nginx, NginxError, find_nginx, free_port, lb_address
from .tlsutil import fake_certificate

log = logging.getLogger("asgardlab.ingress")
INGRESSES = R.lookup("networking.k8s.io", "ingresses")
INGRESSCLASSES = R.lookup("networking.k8s.io", "ingressclasses")
WATCHED = {INGRESSES.key, INGRESSCLASSES.key, R.SERVICES.key, R.ENDPOINTSLICES.key, R.SECRETS.key, R.NAMESPACES.key,
           G.GATEWAYCLASSES.key, G.GATEWAYS.key, G.HTTPROUTES.key}
COMPONENT = "nginx-ingress-controller"


class NginxMissing(RuntimeError):
    """nginx is not installed."""


def seed_classes(store: Store) -> None:
    """The classes every new lab has (a user may delete or change them; they are not recreated while running)."""
    if store.get_ref(INGRESSCLASSES, None, I.CLASS_NAME) is None:
        store.create(INGRESSCLASSES, {
            "metadata": {"name": I.CLASS_NAME, "annotations": {I.DEFAULT_CLASS_ANNOTATION: "true"},
                         "labels": {"app.kubernetes.io/name": "ingress-nginx", "app.kubernetes.io/component": "controller"}},
            "spec": {"controller": I.CONTROLLER}})
    if store.get_ref(G.GATEWAYCLASSES, None, G.CLASS_NAME) is None:
        store.create(G.GATEWAYCLASSES, {
            "metadata": {"name": G.CLASS_NAME},
            "spec": {"controllerName": G.CONTROLLER_NAME, "description": "asgard lab nginx: listeners on the ingress.json ports"}})


class IngressController:
    def __init__(self, store: Store, rec: Recorder, state_dir: Path) -> None:
        self.store = store
        self.rec = rec
        self.state_dir = state_dir
        self.prefix = state_dir / "ingress"
        self.json_path = state_dir / "ingress.json"
        self.nginx: Nginx | None = None
        self.wake = asyncio.Event()
        self.dirty = True  # a watched object changed since the last sync began (the first sync: start())
        self.synced: dict = {}  # what synced.json says
        self.task: asyncio.Task | None = None
        self.generation = 0
        self._last = ""
        self._pairs: dict = {}
        self._seen_generations: dict[str, str] = {}
        self._refused: dict[tuple[str, str, str], tuple[str | None, str]] = {}
        self.ports: dict[str, int] = {}
        self.address = "127.0.0.1"  # the load balancer address (start() picks the lab's own)
        self.lb_served = False

    # ------------------------------------------------------------------ lifecycle
    def check_host(self) -> None:
        binary = find_nginx()
        if binary is None:
            raise NginxMissing("the lab's ingress controller needs nginx (Debian package 'nginx'): run `make setup` as root "
                               "(scripts/system-packages.sh) or `apt-get install -y nginx`")
        self.nginx = Nginx(self.prefix, binary)

    async def start(self) -> None:
        if self.nginx is None:
            self.check_host()
        self.nginx.prepare()
        seed_classes(self.store)
        ports: set[int] = set()
        while len(ports) < 3:
            ports.add(free_port())
        http, https, status = sorted(ports)
        self.ports = {"http": http, "https": https, "status": status}
        lb = lb_address(str(self.state_dir))
        self.address, self.lb_served = (lb, True) if lb else ("127.0.0.1", False)
        self.nginx.status_port = status
        self.default_cert = fake_certificate(self.prefix / "certs")
        cfg, _, _ = self._translate()
        self.generation = 1
        self._last = render(cfg)
        cfg.generation = self.generation
        await self.nginx.start(render(cfg), self.generation)
        self._write_json(self.json_path, {"http": f"http://127.0.0.1:{http}", "https": f"https://127.0.0.1:{https}",
                                          "address": self.address})
        self.store.add_listener(self._on_change)
        self.task = asyncio.get_running_loop().create_task(self._loop())
        self.wake.set()
        log.info("ingress controller: nginx on http://127.0.0.1:%s and https://127.0.0.1:%s, load balancer %s%s (%s)", http,
                 https, self.address, " ports 80/443" if self.lb_served else " (free ports only: not root)", self.json_path)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        if self.nginx is not None:
            await self.nginx.stop()
        for p in (self.json_path, self.prefix / "synced.json"):
            p.unlink(missing_ok=True)

    def _on_change(self, etype, rt, obj, old) -> None:
        if rt.key in WATCHED:
            self.dirty = True
        self.wake.set()

    async def _loop(self) -> None:
        while True:
            await self.wake.wait()
            await asyncio.sleep(0.05)
            self.wake.clear()
            if not self.dirty:
                self._caught_up()
                continue
            self.dirty = False  # a watched change during the sync sets it again: one more sync follows
            try:
                await self.sync()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the controller keeps running; the next change retries
                self.dirty = True
                log.exception("ingress controller sync failed")

    def _caught_up(self) -> None:
        """Only objects the controller does not watch changed since the last sync: nginx serves every change up to the
        store's resourceVersion now, and synced.json says so."""
        rv = self.store.resource_version
        if self.synced and int(rv) > int(self.synced["resourceVersion"]):
            self.synced = {**self.synced, "resourceVersion": rv}
            self._write_json(self.prefix / "synced.json", self.synced)

    # ------------------------------------------------------------------ one sync
    def _translate(self, excluded: dict | None = None):
        excluded = excluded or {}
        cfg = Config(http_port=self.ports["http"], https_port=self.ports["https"], status_port=self.ports["status"],
                     prefix=self.prefix, default_cert=self.default_cert,
                     lb_address=self.address if self.lb_served else None)
        b = Builder(cfg, Snapshot(self.store), self.prefix / "certs", self._pairs)
        classes = {c["metadata"]["name"]: c for c in self.store.iter_refs(INGRESSCLASSES)}
        ours = [i for i in self.store.iter_refs(INGRESSES) if I.is_ours(i, classes) and not i["metadata"].get("deletionTimestamp")]
        results = I.translate(b, ours, {k[1:]: v for k, v in excluded.items() if k[0] == "Ingress"})
        gwt = G.GatewayTranslation(b, self.store, {k[1:]: v for k, v in excluded.items() if k[0] == "HTTPRoute"},
                                   address=self.address)
        gwt.run()
        return cfg, (results, ours), (gwt, b)

    def _fingerprint(self, culprit: tuple[str, str, str]) -> str | None:
        kind, ns, name = culprit
        obj = self.store.get_ref(INGRESSES if kind == "Ingress" else G.HTTPROUTES, ns, name)
        if obj is None:
            return None
        return json.dumps([obj["metadata"]["uid"], obj["metadata"].get("annotations"), obj.get("spec")], sort_keys=True)

    async def sync(self) -> None:
        rv = self.store.resource_version
        # objects nginx refused stay out until they change (no failing nginx -t on every sync)
        excluded: dict[tuple[str, str, str], str] = {}
        for culprit, (fp, err) in list(self._refused.items()):
            if self._fingerprint(culprit) == fp:
                excluded[culprit] = err
            else:
                del self._refused[culprit]
        while True:
            cfg, (results, ours), (gwt, b) = self._translate(excluded)
            text = render(cfg)
            ok, error = True, ""
            if text == self._last and self.nginx.running():
                break
            cfg.generation = self.generation + 1
            full = render(cfg)
            try:
                if self.nginx.running():
                    await self.nginx.reload(full, cfg.generation)
                else:
                    log.warning("nginx is not running: starting it again")
                    await self.nginx.start(full, cfg.generation)
                self.generation = cfg.generation
                self._last = text
                break
            except NginxError as exc:
                ok, error = False, str(exc)
                culprit = _culprit(error, full)
                if culprit is None or culprit in excluded or len(excluded) >= 20:
                    log.error("nginx rejected configuration generation %s (the previous one stays): %s", cfg.generation, error)
                    break
                log.warning("nginx rejected the configuration of %s %s/%s: leaving it out: %s", *culprit, error)
                excluded[culprit] = error
                self._refused[culprit] = (self._fingerprint(culprit), error)
        if ok:
            self._gc_certs(b.cert_files)
        self._publish_ingresses(results, ours, ok, error)
        self._publish_gateway(gwt, ok, error)
        self.synced = {"resourceVersion": rv, "generation": self.generation, "ok": ok, **({"error": error} if error else {})}
        self._write_json(self.prefix / "synced.json", self.synced)

    # ------------------------------------------------------------------ status
    def _publish_ingresses(self, results: dict, ours: list[dict], ok: bool, error: str) -> None:
        live = {i["metadata"]["uid"] for i in ours}
        self._seen_generations = {k: v for k, v in self._seen_generations.items() if k in live}
        for ing in ours:
            md = ing["metadata"]
            res = results.get((md["namespace"], md["name"]))
            if res is None:
                continue
            seen = self._seen_generations.get(md["uid"])
            fp = json.dumps([md.get("annotations"), ing.get("spec")], sort_keys=True)
            if seen != fp:  # ingress-nginx records Sync on every add/update of an Ingress it serves
                self._seen_generations[md["uid"]] = fp
                self.rec.event(ing, "Normal", "Sync", "Scheduled for sync", COMPONENT)
                for w in res.warnings:
                    self.rec.event(ing, "Warning", "Sync", w, COMPONENT)
            if not ok:
                self.rec.event(ing, "Warning", "Sync", f"nginx rejected the configuration: {error[:300]}", COMPONENT)
                continue
            want = {"ingress": [{"ip": self.address}]} if res.served else {}
            cur = self.store.get(INGRESSES, md["namespace"], md["name"])
            if cur is None or (cur.get("status") or {}).get("loadBalancer") == want:
                continue
            cur.setdefault("status", {})["loadBalancer"] = copy.deepcopy(want)
            self._update_status(INGRESSES, cur)

    def _publish_gateway(self, gwt: G.GatewayTranslation, ok: bool, error: str) -> None:
        for name, st in gwt.class_status.items():
            cur = self.store.get(G.GATEWAYCLASSES, None, name)
            if cur is None:
                continue
            status = dict(cur.get("status") or {})
            status["conditions"] = G.merge_conditions(status.get("conditions"), st["conditions"])
            self._set_status(G.GATEWAYCLASSES, cur, status)
        for (ns, name), st in gwt.gateway_status.items():
            cur = self.store.get(G.GATEWAYS, ns, name)
            if cur is None:
                continue
            old = cur.get("status") or {}
            gen = st["generation"]
            if not ok:
                prog = G.cond("Programmed", False, "Invalid", f"nginx rejected the configuration: {error[:300]}", gen)
            elif st["programmed_reason"]:
                prog = G.cond("Programmed", False, *st["programmed_reason"], gen)
            elif st["programmable"]:
                prog = G.cond("Programmed", True, "Programmed", "programmed in the lab's nginx", gen)
            else:
                prog = G.cond("Programmed", False, "Invalid", "the Gateway is not accepted", gen)
            old_listeners = {ls.get("name"): ls for ls in old.get("listeners") or []}
            listeners = []
            for ls in st["listeners"]:
                ls = dict(ls)
                ls["conditions"] = G.merge_conditions((old_listeners.get(ls["name"]) or {}).get("conditions"), ls["conditions"])
                listeners.append(ls)
            status = {k: v for k, v in old.items() if k not in ("conditions", "listeners", "addresses")}
            if st["addresses"]:
                status["addresses"] = st["addresses"]
            status["conditions"] = G.merge_conditions(old.get("conditions"), [st["accepted"], prog])
            status["listeners"] = listeners
            self._set_status(G.GATEWAYS, cur, status)
        for (ns, name), parents in gwt.route_parents.items():
            cur = self.store.get(G.HTTPROUTES, ns, name)
            if cur is None:
                continue
            old = (cur.get("status") or {}).get("parents") or []
            mine = {json.dumps(p.get("parentRef"), sort_keys=True): p for p in old if p.get("controllerName") == G.CONTROLLER_NAME}
            new = [p for p in old if p.get("controllerName") != G.CONTROLLER_NAME]
            for p in parents:
                prev = mine.get(json.dumps(p["parentRef"], sort_keys=True)) or {}
                new.append({**p, "conditions": G.merge_conditions(prev.get("conditions"), p["conditions"])})
            if not new and not cur.get("status"):
                continue
            self._set_status(G.HTTPROUTES, cur, {**(cur.get("status") or {}), "parents": new})

    def _set_status(self, rt, cur: dict, status: dict) -> None:
        if _strip_times(cur.get("status")) == _strip_times(status):
            return
        cur["status"] = status
        self._update_status(rt, cur)

    def _update_status(self, rt, obj: dict) -> None:
        try:
            self.store.update(rt, obj, subresource="status", check_rv=True)
        except ApiError as exc:  # changed meanwhile (another sync follows) or invalid: say so
            level = logging.DEBUG if exc.code in (404, 409) else logging.ERROR
            log.log(level, "status of %s %s/%s not written: %s", rt.kind, obj["metadata"].get("namespace"),
                    obj["metadata"]["name"], exc.message)

    # ------------------------------------------------------------------ files
    def _gc_certs(self, used: set[Path]) -> None:
        keep = set(used) | set(self.default_cert)
        for p in (self.prefix / "certs").iterdir():
            if p not in keep and p.suffix in (".crt", ".key"):
                p.unlink(missing_ok=True)

    @staticmethod
    def _write_json(path: Path, data: dict) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data) + "\n")
        os.chmod(tmp, 0o644)
        tmp.replace(path)


_OWNER = re.compile(r"^\s*# (Ingress|HTTPRoute) ([a-z0-9.-]+)/([a-z0-9.-]+)")


def _culprit(error: str, text: str) -> tuple[str, str, str] | None:
    """The object whose location nginx refused: the owner comment of the location at the line nginx names."""
    m = re.search(r"nginx\.conf\.new:(\d+)", error)
    if not m:
        return None
    lines = text.splitlines()
    n = int(m.group(1)) - 1
    for i in [n, n + 1, *range(n - 1, -1, -1)]:
        if 0 <= i < len(lines):
            o = _OWNER.match(lines[i])
            if o:
                return o.group(1), o.group(2), o.group(3)
            if i < n and lines[i].strip().startswith(("server {", "upstream ")):
                return None
    return None


def _strip_times(status):
    """Status without lastTransitionTime (a recomputed condition keeps its old time anyway)."""
    if isinstance(status, dict):
        return {k: _strip_times(v) for k, v in status.items() if k != "lastTransitionTime"}
    if isinstance(status, list):
        return [_strip_times(v) for v in status]
    return status
