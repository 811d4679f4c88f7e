"""A read-only view of the store for one translation, and the helpers both translators share: Service
backends resolved to ready endpoints (EndpointSlices, as ingress-nginx and Gateway implementations do: no
Service IP in between), TLS key pairs from Secrets written to files, upstream registration."""

from __future__ import annotations

import collections
from pathlib import Path

from .. import resources as R
from ..store import Store
from .model import Config, Upstream
from .tlsutil import KeyPair, keypair_from_secret, write_pair


class Snapshot:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.slices: dict[tuple[str, str], list[dict]] = collections.defaultdict(list)
        for sl in store.iter_refs(R.ENDPOINTSLICES):
            md = sl["metadata"]
            svc = (md.get("labels") or {}).get("kubernetes.io/service-name")
            if svc:
                self.slices[(md["namespace"], svc)].append(sl)

    def service(self, ns: str, name: str) -> dict | None:
        return self.store.get_ref(R.SERVICES, ns, name)

    def secret(self, ns: str, name: str) -> dict | None:
        return self.store.get_ref(R.SECRETS, ns, name)


class Builder:
    def __init__(self, cfg: Config, snap: Snapshot, certs_dir: Path, pair_cache: dict) -> None:
        self.cfg = cfg
        self.snap = snap
        self.certs_dir = certs_dir
        self.cert_files: set[Path] = set()
        self._pairs = pair_cache  # (ns, name, resourceVersion, require_tls_type) -> (pair, why), kept across syncs

    # ------------------------------------------------------------------ TLS
    def keypair(self, ns: str, name: str, require_tls_type: bool = False) -> tuple[KeyPair | None, str]:
        secret = self.snap.secret(ns, name)
        rv = secret["metadata"]["resourceVersion"] if secret else None
        key = (ns, name, rv, require_tls_type)
        if key not in self._pairs:
            self._pairs[key] = keypair_from_secret(secret, require_tls_type)
        return self._pairs[key]

    def files(self, ns: str, name: str, pair: KeyPair) -> tuple[Path, Path]:
        crt, key = write_pair(self.certs_dir, f"{ns}-{name}", pair)
        self.cert_files.update((crt, key))
        return crt, key

    # ------------------------------------------------------------------ backends
    def endpoints(self, ns: str, svc_name: str, port: int | str) -> tuple[list[tuple[str, int]], str]:
        """Ready endpoints of a Service port (by number or name): ([(ip, targetPort)], "") or ([], why)."""
        svc = self.snap.service(ns, svc_name)
        if svc is None:
            return [], f'service "{ns}/{svc_name}" not found'
        spec = svc.get("spec") or {}
        if spec.get("type") == "ExternalName":
            return [], f'service "{ns}/{svc_name}" is of type ExternalName, which the lab\'s data plane does not proxy to'
        match = [p for p in spec.get("ports") or []
                 if (p.get("port") == port if isinstance(port, int) else p.get("name") == port)]
        if not match:
            return [], f'service "{ns}/{svc_name}" has no port {port!r}'
        pname = match[0].get("name") or ""
        out = set()
        for sl in self.snap.slices.get((ns, svc_name), []):
            ports = [p for p in sl.get("ports") or [] if (p.get("name") or "") == pname and p.get("port")]
            if not ports:
                continue
            for ep in sl.get("endpoints") or []:
                cond = ep.get("conditions") or {}
                if cond.get("ready") is False or cond.get("terminating"):
                    continue
                for addr in ep.get("addresses") or []:
                    out.add((addr, int(ports[0]["port"])))
        if not out:
            return [], f'service "{ns}/{svc_name}" port {port!r} has no ready endpoints'
        return sorted(out), ""

    def upstream(self, name: str, servers: list[tuple[str, int, int]]) -> str:
        self.cfg.upstreams[name] = Upstream(name, servers)
        return name
