"""One pod on the lab's node: its network namespace, volumes, containers (real processes) and probes."""

from __future__ import annotations

import asyncio
import base64
import datetime as _dt
import fcntl
import json
import logging
import os
import pathlib
import shutil
import signal
import time
import uuid

import aiohttp

from .. import resources as R
from .. import runtimes
from ..controllers.events import NODE_NAME
from ..managed_fields import KUBELET, SCHEDULER
from ..store import ApiError, now_iso
from .network import proc_read

log = logging.getLogger("asgardlab.kubelet")
_LAUNCH_SRC = pathlib.Path(__file__).with_name("launch.py")


def _launcher() -> str:
    """launch.py, copied where every container's mount namespace sees it.

    Containers get a private /tmp, and ``kubectl exec`` enters the container's mount namespace: a checkout
    (and so this file) under /tmp would be invisible there. The copy lives in the lab's cache directory,
    named by its content hash.
    """
    import hashlib

    data = _LAUNCH_SRC.read_bytes()
    target = runtimes.cache_dir() / "bin" / f"launch-{hashlib.sha256(data).hexdigest()[:16]}.py"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(target.parent, 0o755)
        tmp = target.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    return str(target)


LAUNCH = _launcher()
HOST_PYTHON = "/usr/bin/python3"
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
TAG = "ASGARDLAB_CONTAINER_ID"
MAX_BACKOFF = 300


def ts_nano() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def expand(s: str, env: dict[str, str]) -> str:
    """Kubernetes $(VAR) expansion: defined vars are replaced, $$ -> $, anything else stays."""
    out, i = [], 0
    while i < len(s):
        ch = s[i]
        if ch == "$" and i + 1 < len(s):
            nxt = s[i + 1]
            if nxt == "$":
                out.append("$")
                i += 2
                continue
            if nxt == "(":
                j = s.find(")", i + 2)
                if j != -1:
                    name = s[i + 2: j]
                    out.append(env[name] if name in env else s[i: j + 1])
                    i = j + 1
                    continue
        out.append(ch)
        i += 1
    return "".join(out)


def svc_env_name(name: str) -> str:
    return name.upper().replace("-", "_").replace(".", "_")


def tagged_pids(tag: str) -> list[int]:
    """Every process whose environment has a ``ASGARDLAB_CONTAINER_ID=...`` entry starting with ``tag``.

    The tag survives re-parenting and setsid, so daemonised children (gunicorn orphaned by MLflow 2.x on
    SIGTERM) are found too.
    """
    needle = b"\0" + tag.encode()
    return [pid for pid, environ in proc_read("environ") if needle in b"\0" + environ]


def children(pid: int) -> list[int]:
    """Host pids of ``pid``'s children (/proc/<pid>/task/<pid>/children, else a scan of /proc/*/stat)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(x) for x in fh.read().split()]
    except FileNotFoundError:
        pass
    except OSError:
        return []
    found = []
    for child, stat in proc_read("stat"):
        fields = stat.rsplit(b")", 1)[-1].split()
        if len(fields) > 2 and fields[1] == str(pid).encode():
            found.append(child)
    return found


class ConfigError(Exception):
    """Container config cannot be built (CreateContainerConfigError)."""


class Container:
    def __init__(self, spec: dict, init: bool) -> None:
        self.spec = spec
        self.name = spec["name"]
        self.init = init
        self.runtime: runtimes.Runtime | None = None
        self.proc: asyncio.subprocess.Process | None = None  # the shim (launch.py's parent in the host PID namespace)
        self.init_pid: int | None = None  # host pid of the container's PID 1 (the shim's only child)
        self.container_id = ""
        self.state: dict = {"waiting": {"reason": "ContainerCreating"}}
        self.last_state: dict = {}
        self.ready = False
        self.started = False
        self.restart_count = 0
        self.crashes = 0
        self.gen = 0
        self.kill_reason: str | None = None
        self.env: dict[str, str] = {}
        self.uid: int | None = None
        self.gid: int | None = None
        self.started_mono = 0.0
        self.pumps: list[asyncio.Task] = []
        self.done = False  # terminated for good (no restart)

    def status(self) -> dict:
        img = self.spec.get("image", "")
        st = {
            "name": self.name,
            "state": self.state,
            "lastState": self.last_state,
            "ready": self.ready,
            "started": self.started,
            "restartCount": self.restart_count,
            "image": img,
            "imageID": self.runtime.image_id if self.runtime and self.container_id else "",
        }
        if self.container_id:
            st["containerID"] = f"asgardlab://{self.container_id}"
        res = self.spec.get("resources")
        if res:
            st["resources"] = res
        return st


class PodWorker:
    def __init__(self, kubelet, pod: dict) -> None:
        self.k = kubelet
        self.store = kubelet.store
        md = pod["metadata"]
        self.ns, self.name, self.uid = md["namespace"], md["name"], md["uid"]
        self.pod = pod
        self.spec = pod.get("spec") or {}
        self.init = [Container(c, True) for c in self.spec.get("initContainers") or []]
        self.containers = [Container(c, False) for c in self.spec.get("containers") or []]
        self.dir = kubelet.state_dir / "pods" / f"{self.ns}_{self.name}_{self.uid}"
        self.netns: str | None = None
        self.ip: str | None = None
        self.start_time: str | None = None
        self.initialized = not self.init
        self.stopping = False
        self.stop_event = asyncio.Event()
        self.finished = asyncio.Event()
        self.phase = "Pending"
        self.conditions: dict[str, dict] = {}
        self.mounts: dict[str, str] = {}
        self.task: asyncio.Task | None = None
        self.grace: float = 30
        self.grace_cut = asyncio.Event()  # a later delete shortened the grace period (e.g. --grace-period=0 --force)
        self.grace_cut_at = 0.0
        self._last_published: dict | None = None

    # ------------------------------------------------------------------ helpers
    @property
    def pod_ref(self) -> dict:
        return self.store.get(R.PODS, self.ns, self.name) or self.pod

    def event(self, etype: str, reason: str, message: str, container: Container | None = None) -> None:
        fp = None
        if container is not None:
            fp = f"spec.{'initContainers' if container.init else 'containers'}{{{container.name}}}"
        self.k.rec.event(self.pod_ref, etype, reason, message, "kubelet", fp)
        if etype == "Warning" or reason == "Killing":  # restarts and probe failures, in lab.log too (they cost CPU)
            log.info("event %s/%s %s %s: %s", self.ns, self.name, etype, reason, message)

    def fault(self) -> dict:
        return self.k.faults.get((self.ns, self.name)) or self.k.faults.get((self.ns, "*")) or {}

    def all_containers(self) -> list[Container]:
        return self.init + self.containers

    def container(self, name: str | None) -> Container | None:
        if not name:
            return self.containers[0] if self.containers else None
        return next((c for c in self.all_containers() if c.name == name), None)

    def log_path(self, c: Container, restart: int) -> pathlib.Path:
        return self.dir / "logs" / c.name / f"{restart}.log"

    async def sleep(self, seconds: float) -> bool:
        """Sleep unless the pod is stopping; True if it is stopping."""
        if self.stopping:
            return True
        try:
            await asyncio.wait_for(self.stop_event.wait(), timeout=max(seconds, 0))
            return True
        except TimeoutError:
            return self.stopping

    def _cond(self, ctype: str, status: bool, reason: str | None = None, message: str | None = None) -> None:
        s = "True" if status else "False"
        cur = self.conditions.get(ctype)
        if cur and cur["status"] == s and cur.get("reason") == reason:
            return
        c = {"type": ctype, "status": s, "lastProbeTime": None,
             "lastTransitionTime": now_iso() if not cur or cur["status"] != s else cur["lastTransitionTime"]}
        if reason:
            c["reason"] = reason
        if message:
            c["message"] = message
        self.conditions[ctype] = c

    def qos(self) -> str:
        cs = (self.spec.get("containers") or []) + (self.spec.get("initContainers") or [])
        any_res, guaranteed = False, True
        for c in cs:
            res = c.get("resources") or {}
            lim, req = res.get("limits") or {}, res.get("requests") or {}
            if lim or req:
                any_res = True
            for k in ("cpu", "memory"):
                if k not in lim or (k in req and req[k] != lim[k]):
                    guaranteed = False
        if not any_res:
            return "BestEffort"
        return "Guaranteed" if guaranteed else "Burstable"

    def publish(self) -> None:
        """Write the pod's status (only if it changed)."""
        cur = self.store.get(R.PODS, self.ns, self.name)
        if cur is None or cur["metadata"]["uid"] != self.uid:
            return
        ready_all = all(c.ready for c in self.containers)
        not_ready = [c.name for c in self.containers if not c.ready]
        self._cond("PodReadyToStartContainers", self.ip is not None)
        self._cond("Initialized", self.initialized, None if self.initialized else "ContainersNotInitialized",
                   None if self.initialized else f"containers with incomplete status: [{' '.join(c.name for c in self.init if not c.done)}]")
        msg = None if ready_all else f"containers with unready status: [{' '.join(not_ready)}]"
        if self.phase in ("Succeeded", "Failed"):
            self._cond("Ready", False, "PodCompleted")
            self._cond("ContainersReady", False, "PodCompleted")
        else:
            self._cond("Ready", ready_all, None if ready_all else "ContainersNotReady", msg)
            self._cond("ContainersReady", ready_all, None if ready_all else "ContainersNotReady", msg)
        self._cond("PodScheduled", True)
        st = dict(cur.get("status") or {})
        st["phase"] = self.phase
        st["conditions"] = [self.conditions[t] for t in ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled")]
        st["hostIP"] = self.k.net.gateway
        st["hostIPs"] = [{"ip": self.k.net.gateway}]
        if self.ip:
            st["podIP"] = self.ip
            st["podIPs"] = [{"ip": self.ip}]
        if self.start_time:
            st["startTime"] = self.start_time
        st["qosClass"] = self.qos()
        st["containerStatuses"] = [c.status() for c in self.containers]
        if self.init:
            st["initContainerStatuses"] = [c.status() for c in self.init]
        if st == (cur.get("status") or {}):
            return
        cur["status"] = st
        try:
            self.store.update(R.PODS, cur, internal=True, writer=KUBELET)
        except ApiError as exc:
            log.debug("pod %s/%s status: %s", self.ns, self.name, exc.message)

    # ------------------------------------------------------------------ main flow
    async def run(self) -> None:
        main = asyncio.create_task(self._main())
        await self.stop_event.wait()
        await self._stop_all(max(self.grace, 1))  # the kubelet never uses less than 1 s (a force delete included)
        done, _ = await asyncio.wait({main}, timeout=self.grace + 10)
        if not done:
            main.cancel()
            await asyncio.gather(main, return_exceptions=True)
        await self._stop_all(0)
        await self.k.net.delete(self.netns, self.ip)
        self.netns = None
        self.finished.set()
        self._finalize()

    async def _main(self) -> None:
        try:
            await self._run()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("pod %s/%s: kubelet error", self.ns, self.name)

    def _finalize(self) -> None:
        self.k.release(self)
        cur = self.store.get_ref(R.PODS, self.ns, self.name)
        if cur is not None and cur["metadata"]["uid"] == self.uid:
            self.store.finalize_delete(R.PODS, self.ns, self.name)
        shutil.rmtree(self.dir, ignore_errors=True)

    async def _run(self) -> None:
        # bind to the node
        cur = self.store.get(R.PODS, self.ns, self.name)
        if cur is None:
            return
        if not cur["spec"].get("nodeName"):
            cur["spec"]["nodeName"] = NODE_NAME
            self.store.update(R.PODS, cur, internal=True, writer=SCHEDULER)
            self.k.rec.event(cur, "Normal", "Scheduled", f"Successfully assigned {self.ns}/{self.name} to {NODE_NAME}", "default-scheduler")
        self.publish()
        if await self.sleep(float(self.fault().get("delayStartSeconds") or 0)):
            return
        # volumes (retry like the kubelet's volume manager)
        while True:
            try:
                self._prepare_volumes()
                break
            except ConfigError as exc:
                self.event("Warning", "FailedMount", str(exc))
                if await self.sleep(2):
                    return
        self.netns, self.ip = await self.k.net.create(self.uid)
        self.start_time = now_iso()
        for c in self.init:
            c.state = {"waiting": {"reason": "PodInitializing"}}
        for c in self.containers:
            c.state = {"waiting": {"reason": "PodInitializing" if self.init else "ContainerCreating"}}
        self.publish()
        policy = self.spec.get("restartPolicy", "Always")
        for c in self.init:
            while not self.stopping:
                rc = await self._run_container(c, "OnFailure" if policy == "Always" else policy)
                if rc == 0 or self.stopping:
                    break
                if policy == "Never":
                    self.phase = "Failed"
                    self.publish()
                    return
            if self.stopping:
                return
        self.initialized = True
        # images first: a container whose image cannot be pulled keeps the pod Pending
        if not all(await asyncio.gather(*(self._ensure_image(c) for c in self.containers))):
            return
        self.phase = "Running"
        self.publish()
        results = await asyncio.gather(*(self._run_container(c, policy) for c in self.containers))
        if self.stopping:
            return
        self.phase = "Succeeded" if all(r == 0 for r in results) else "Failed"
        self.publish()
        await self.k.net.delete(self.netns, None)
        self.netns = None

    # ------------------------------------------------------------------ volumes
    def _prepare_volumes(self) -> None:
        vdir = self.dir / "volumes"
        vdir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o755)
        for v in self.spec.get("volumes") or []:
            name = v["name"]
            path = vdir / name
            if "emptyDir" in v:
                path.mkdir(exist_ok=True)
                os.chmod(path, 0o777)
            elif "persistentVolumeClaim" in v:
                claim = v["persistentVolumeClaim"].get("claimName")
                pvc = self.store.get_ref(R.PVCS, self.ns, claim)
                if pvc is None:
                    raise ConfigError(f'persistentvolumeclaim "{claim}" not found')
                path = self.k.state_dir / "pvcs" / self.ns / f"{claim}-{pvc['metadata']['uid']}"
                path.mkdir(parents=True, exist_ok=True)
                os.chmod(path, 0o777)
            elif "hostPath" in v:
                path = pathlib.Path(v["hostPath"]["path"])
                if v["hostPath"].get("type") in ("DirectoryOrCreate",):
                    path.mkdir(parents=True, exist_ok=True)
            elif "secret" in v or "configMap" in v or "projected" in v or "downwardAPI" in v:
                path.mkdir(exist_ok=True)
                self._write_projection(v, path)
            else:
                raise ConfigError(f'volume "{name}": unsupported volume type (the lab supports emptyDir, persistentVolumeClaim, '
                                  "secret, configMap, projected, downwardAPI, hostPath)")
            self.mounts[name] = str(path)

    def _source_data(self, kind: str, ref: dict) -> dict[str, bytes] | None:
        if kind == "secret":
            obj = self.store.get_ref(R.SECRETS, self.ns, ref.get("secretName") or ref.get("name"))
            if obj is None:
                return None
            data = {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
            data.update({k: v.encode() for k, v in (obj.get("stringData") or {}).items()})
            return data
        obj = self.store.get_ref(R.CONFIGMAPS, self.ns, ref.get("name"))
        if obj is None:
            return None
        data = {k: v.encode() for k, v in (obj.get("data") or {}).items()}
        data.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
        return data

    def _write_items(self, path: pathlib.Path, data: dict[str, bytes], items, mode: int) -> None:
        pairs = [(i["key"], i["path"], i.get("mode", mode)) for i in items] if items else [(k, k, mode) for k in data]
        for key, rel, m in pairs:
            if key not in data:
                raise ConfigError(f'couldn\'t find key {key} in the referenced object')
            f = path / rel
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_bytes(data[key])
            os.chmod(f, m)

    def _write_projection(self, v: dict, path: pathlib.Path) -> None:
        for f in path.iterdir():
            if f.is_file():
                f.unlink()
        if "projected" in v:
            sources = v["projected"].get("sources") or []
            mode = v["projected"].get("defaultMode", 0o644)
        else:
            sources = [v]
            mode = (v.get("secret") or v.get("configMap") or v.get("downwardAPI") or {}).get("defaultMode", 0o644)
        for src in sources:
            for kind in ("secret", "configMap"):
                if kind in src:
                    ref = src[kind]
                    data = self._source_data(kind, ref)
                    if data is None:
                        if ref.get("optional"):
                            continue
                        what = ref.get("secretName") or ref.get("name")
                        raise ConfigError(f'MountVolume.SetUp failed for volume "{v["name"]}" : {kind.lower()} "{what}" not found')
                    self._write_items(path, data, ref.get("items"), ref.get("defaultMode", mode))
            if "downwardAPI" in src:
                for item in src["downwardAPI"].get("items") or []:
                    val = self._field(item.get("fieldRef", {}).get("fieldPath", ""))
                    f = path / item["path"]
                    f.parent.mkdir(parents=True, exist_ok=True)
                    f.write_text(val)
            if "serviceAccountToken" in src:
                f = path / src["serviceAccountToken"].get("path", "token")
                f.write_text("asgard-lab-placeholder-token")  # the lab does not issue service account tokens
                os.chmod(f, mode)
        os.chmod(path, 0o755)

    # ------------------------------------------------------------------ env
    def _field(self, fp: str) -> str:
        pod = self.pod_ref
        md = pod["metadata"]
        simple = {
            "metadata.name": md["name"], "metadata.namespace": md["namespace"], "metadata.uid": md["uid"],
            "spec.nodeName": NODE_NAME, "spec.serviceAccountName": pod["spec"].get("serviceAccountName", "default"),
            "status.podIP": self.ip or "", "status.hostIP": self.k.net.gateway, "status.podIPs": self.ip or "", "status.hostIPs": self.k.net.gateway,
        }
        if fp in simple:
            return simple[fp]
        for prefix, src in (("metadata.labels", md.get("labels") or {}), ("metadata.annotations", md.get("annotations") or {})):
            if fp == prefix:
                return "\n".join(f'{k}="{v}"' for k, v in sorted(src.items()))
            if fp.startswith(prefix + "['") and fp.endswith("']"):
                return src.get(fp[len(prefix) + 2: -2], "")
        raise ConfigError(f"unsupported fieldRef fieldPath {fp!r}")

    def _build_env(self, c: Container) -> dict[str, str]:
        env: dict[str, str] = {}
        rt = c.runtime
        env["PATH"] = ":".join([*(rt.bin_dirs if rt else []), BASE_PATH])
        env["HOSTNAME"] = self.name
        if self.spec.get("enableServiceLinks", True) is not False:
            for svc in sorted(self.store.iter_refs(R.SERVICES, self.ns), key=lambda s: s["metadata"]["name"]):
                ip = (svc.get("spec") or {}).get("clusterIP")
                ports = (svc.get("spec") or {}).get("ports") or []
                if not ip or ip == "None" or not ports:
                    continue
                n = svc_env_name(svc["metadata"]["name"])
                env[f"{n}_SERVICE_HOST"] = ip
                env[f"{n}_SERVICE_PORT"] = str(ports[0]["port"])
                for p in ports:
                    if p.get("name"):
                        env[f"{n}_SERVICE_PORT_{svc_env_name(p['name'])}"] = str(p["port"])
                env[f"{n}_PORT"] = f"{ports[0].get('protocol', 'TCP').lower()}://{ip}:{ports[0]['port']}"
                for p in ports:
                    proto = p.get("protocol", "TCP")
                    base = f"{n}_PORT_{p['port']}_{proto}"
                    env[base] = f"{proto.lower()}://{ip}:{p['port']}"
                    env[base + "_PROTO"] = proto.lower()
                    env[base + "_PORT"] = str(p["port"])
                    env[base + "_ADDR"] = ip
        for ef in c.spec.get("envFrom") or []:
            prefix = ef.get("prefix", "")
            for kind, key in (("configMap", "configMapRef"), ("secret", "secretRef")):
                if key in ef:
                    ref = ef[key]
                    data = self._source_data(kind, {"name": ref.get("name")})
                    if data is None:
                        if ref.get("optional"):
                            continue
                        raise ConfigError(f'{kind.lower()} "{ref.get("name")}" not found')
                    for k, v in data.items():
                        env[prefix + k] = v.decode(errors="replace")
        for e in c.spec.get("env") or []:
            name = e["name"]
            if "valueFrom" not in e:
                env[name] = expand(str(e.get("value", "")), env)
                continue
            vf = e["valueFrom"]
            if "fieldRef" in vf:
                env[name] = self._field(vf["fieldRef"].get("fieldPath", ""))
            elif "secretKeyRef" in vf or "configMapKeyRef" in vf:
                kind = "secret" if "secretKeyRef" in vf else "configMap"
                ref = vf.get("secretKeyRef") or vf.get("configMapKeyRef")
                data = self._source_data(kind, {"name": ref.get("name")})
                if data is None or ref.get("key") not in data:
                    if ref.get("optional"):
                        continue
                    if data is None:
                        raise ConfigError(f'{kind.lower()} "{ref.get("name")}" not found')
                    raise ConfigError(f"couldn't find key {ref.get('key')} in {kind.capitalize()} {self.ns}/{ref.get('name')}")
                env[name] = data[ref["key"]].decode(errors="replace")
            elif "resourceFieldRef" in vf:
                res = c.spec.get("resources") or {}
                r = vf["resourceFieldRef"].get("resource", "")
                part, _, key = r.partition(".")
                env[name] = str((res.get(part) or {}).get(key, "0"))
        env.setdefault("HOME", "/root" if c.uid in (None, 0) else "/")
        return env

    # ------------------------------------------------------------------ processes
    def _identity(self, c: Container) -> tuple[int | None, int | None, list[int]]:
        psc = self.spec.get("securityContext") or {}
        csc = c.spec.get("securityContext") or {}
        uid = csc.get("runAsUser", psc.get("runAsUser"))
        gid = csc.get("runAsGroup", psc.get("runAsGroup"))
        groups = list(psc.get("supplementalGroups") or [])
        if psc.get("fsGroup") is not None:
            groups.append(psc["fsGroup"])
        return uid, gid, groups

    def _launch_spec(self, c: Container, argv: list[str], env: dict[str, str], mounts: bool) -> dict:
        uid, gid, groups = self._identity(c)
        ms = []
        if mounts:
            for vm in c.spec.get("volumeMounts") or []:
                src = self.mounts.get(vm["name"])
                if src is None:
                    raise ConfigError(f'volumeMount "{vm["name"]}" refers to a volume the pod does not declare')
                if vm.get("subPath"):
                    src = os.path.join(src, vm["subPath"])
                    if not os.path.exists(src):
                        os.makedirs(src, mode=0o777, exist_ok=True)
                ms.append({"src": src, "dst": vm["mountPath"], "readOnly": bool(vm.get("readOnly"))})
            if not any(vm.get("mountPath", "").rstrip("/") == "/tmp" for vm in c.spec.get("volumeMounts") or []):
                # a fresh private /tmp per container run, as a new container's writable layer would be
                shutil.rmtree(self.dir / "tmp" / f"{c.name}-{c.restart_count - 1}", ignore_errors=True)
                tmp = self.dir / "tmp" / f"{c.name}-{c.restart_count}"
                tmp.mkdir(parents=True, exist_ok=True)
                os.chmod(tmp, 0o1777)
                ms.append({"src": str(tmp), "dst": "/tmp", "readOnly": False})
            ms.sort(key=lambda m: m["dst"].rstrip("/").count("/"))  # parents before children (/tmp before /tmp/x)
        return {"argv": argv, "env": env, "cwd": c.spec.get("workingDir") or "/", "uid": uid, "gid": gid,
                "groups": groups, "mounts": ms}

    @staticmethod
    def _spec_fd(spec: dict) -> int:
        """A pipe read end holding the launch spec (passed to the launcher as fd:N; never on disk or argv)."""
        data = json.dumps(spec).encode()
        r, w = os.pipe()
        try:
            fcntl.fcntl(w, 1031, max(len(data) + 4096, 65536))  # F_SETPIPE_SZ
        except OSError:
            pass
        try:
            os.write(w, data)
        finally:
            os.close(w)
        return r

    def _argv(self, c: Container, env: dict[str, str]) -> list[str]:
        cmd = [expand(str(x), env) for x in c.spec.get("command") or []]
        args = [expand(str(x), env) for x in c.spec.get("args") or []]
        if not cmd:
            default = ["sh"] if c.runtime and c.runtime.image.split(":")[0].endswith("busybox") else ["python3"]
            cmd = default if not args else []
        return cmd + args

    async def _pump(self, stream: asyncio.StreamReader, name: str, path: pathlib.Path) -> None:
        with open(path, "ab", buffering=0) as f:
            while True:
                try:
                    line = await stream.readuntil(b"\n")
                    tag = b"F"
                except asyncio.IncompleteReadError as e:
                    line, tag = e.partial, b"P"
                    if not line:
                        return
                except asyncio.LimitOverrunError as e:
                    line, tag = await stream.read(e.consumed), b"P"
                f.write(ts_nano().encode() + b" " + name.encode() + b" " + tag + b" " + line.rstrip(b"\n") + b"\n")
                if tag == b"P" and stream.at_eof():
                    return

    async def _ensure_image(self, c: Container) -> bool:
        """Resolve the container image; ErrImagePull/ImagePullBackOff for unknown images. False if stopping."""
        img = c.spec.get("image", "")
        pulls = 0
        while not self.stopping:
            try:
                c.runtime = runtimes.resolve(img)
            except runtimes.UnknownImage as exc:
                pulls += 1
                self.event("Normal", "Pulling", f'Pulling image "{img}"', c)
                msg = str(exc)
                self.event("Warning", "Failed", f'Failed to pull image "{img}": {msg}', c)
                self.event("Warning", "Failed", "Error: ErrImagePull", c)
                c.state = {"waiting": {"reason": "ErrImagePull", "message": msg}}
                self.publish()
                if await self.sleep(2):
                    return False
                delay = min(10 * 2 ** (pulls - 1), MAX_BACKOFF)
                c.state = {"waiting": {"reason": "ImagePullBackOff", "message": f'Back-off pulling image "{img}"'}}
                self.event("Normal", "BackOff", f'Back-off pulling image "{img}"', c)
                self.event("Warning", "Failed", "Error: ImagePullBackOff", c)
                self.publish()
                if await self.sleep(delay):
                    return False
                continue
            if not c.runtime.installed():
                t0 = time.monotonic()
                self.event("Normal", "Pulling", f'Pulling image "{img}"', c)
                await runtimes.ensure_installed(c.runtime)
                self.event("Normal", "Pulled", f'Successfully pulled image "{img}" in {time.monotonic() - t0:.3f}s', c)
            else:
                self.event("Normal", "Pulled", f'Container image "{img}" already present on machine', c)
            return True
        return False

    async def _start(self, c: Container) -> bool:
        """Start one run of the container. False if it could not be started (state set)."""
        uid, gid, _ = self._identity(c)
        c.uid, c.gid = uid, gid
        try:
            env = self._build_env(c)
            argv = self._argv(c, env)
            c.container_id = uuid.uuid4().hex + uuid.uuid4().hex
            env[TAG] = f"{self.k.instance}-{c.container_id}"
            c.env = env
            spec = self._launch_spec(c, argv, env, True)
            spec["pidns"] = True
        except ConfigError as exc:
            c.container_id = ""
            c.state = {"waiting": {"reason": "CreateContainerConfigError", "message": str(exc)}}
            self.event("Warning", "Failed", f"Error: {exc}", c)
            self.publish()
            return False
        path = self.log_path(c, c.restart_count)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
        fd = self._spec_fd(spec)
        self.event("Normal", "Created", f"Created container {c.name}", c)
        try:
            c.proc = await asyncio.create_subprocess_exec(
                "ip", "netns", "exec", self.netns, "unshare", "--mount", "--propagation", "private", HOST_PYTHON, LAUNCH, f"fd:{fd}",
                # stdin: true keeps a pipe open for pods/attach (remotecommand.run_attach)
                stdin=asyncio.subprocess.PIPE if c.spec.get("stdin") else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                start_new_session=True, env={"PATH": BASE_PATH}, limit=1 << 20, pass_fds=(fd,),
            )
        finally:
            os.close(fd)
        c.init_pid = None
        c.pumps = [asyncio.create_task(self._pump(c.proc.stdout, "stdout", path)),
                   asyncio.create_task(self._pump(c.proc.stderr, "stderr", path))]
        c.started_mono = time.monotonic()
        c.gen += 1
        c.kill_reason = None
        c.state = {"running": {"startedAt": now_iso()}}
        c.started = not c.spec.get("startupProbe")
        c.ready = c.started and not c.spec.get("readinessProbe") and not c.init
        self.event("Normal", "Started", f"Started container {c.name}", c)
        log.info("pod %s/%s container %s started (pid %s)", self.ns, self.name, c.name, c.proc.pid)
        self.publish()
        return True

    async def _run_container(self, c: Container, policy: str) -> int:
        if c.runtime is None and not await self._ensure_image(c):
            return -1
        rc = -1
        while not self.stopping:
            if not await self._start(c):
                if await self.sleep(5):
                    break
                continue
            probes = asyncio.create_task(self._probes(c, c.gen))
            rc = await c.proc.wait()
            await asyncio.gather(*c.pumps, return_exceptions=True)
            probes.cancel()
            exit_code = rc if rc >= 0 else 128 - rc
            ran = time.monotonic() - c.started_mono
            term = {"exitCode": exit_code, "reason": "Completed" if exit_code == 0 else "Error",
                    "startedAt": c.state.get("running", {}).get("startedAt"), "finishedAt": now_iso(),
                    "containerID": f"asgardlab://{c.container_id}"}
            if c.kill_reason == "OOMKilled":
                term["reason"] = "OOMKilled"
            self._sweep(c)
            c.proc = None
            c.init_pid = None
            c.ready = False
            c.started = False
            c.gen += 1
            rc = exit_code
            restart = not self.stopping and (policy == "Always" or (policy == "OnFailure" and exit_code != 0))
            if not restart or c.init and exit_code == 0:
                c.state = {"terminated": term}
                c.done = True
                self.publish()
                break
            c.last_state = {"terminated": term}
            if ran > 600:
                c.crashes = 0
            delay = 0 if c.crashes == 0 else min(10 * 2 ** (c.crashes - 1), MAX_BACKOFF)
            c.crashes += 1
            if delay:
                msg = f"back-off {delay}s restarting failed container={c.name} pod={self.name}_{self.ns}({self.uid})"
                c.state = {"waiting": {"reason": "CrashLoopBackOff", "message": msg}}
                self.event("Warning", "BackOff", f"Back-off restarting failed container {c.name} in pod {self.name}_{self.ns}({self.uid})", c)
            else:
                c.state = {"terminated": term}
            self.publish()
            if await self.sleep(delay):
                break
            c.restart_count += 1
        return rc

    # ------------------------------------------------------------------ stopping
    def _sweep(self, c: Container) -> None:
        """SIGKILL anything left from this container run (e.g. gunicorn orphaned by MLflow 2.x)."""
        if not c.container_id:
            return
        for pid in tagged_pids(f"{TAG}={self.k.instance}-{c.container_id}\0"):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    async def init_pid(self, c: Container) -> int | None:
        """Host pid of the container's PID 1 while it runs (None once it has exited)."""
        proc = c.proc
        deadline = time.monotonic() + 2
        while proc is not None and proc.returncode is None:
            if c.init_pid is None:
                kids = children(proc.pid)
                c.init_pid = kids[0] if kids else None
            if c.init_pid is not None or time.monotonic() > deadline:
                return c.init_pid
            await asyncio.sleep(0.01)  # the shim has not forked yet
        return None

    async def kill_container(self, c: Container, grace: float, reason: str | None = None) -> None:
        """Stop one container as the kubelet does (``grace`` > 0): the preStop hook first (its time counts
        against the grace period), then SIGTERM to the container's PID 1 only, then SIGKILL when the rest of
        the grace period (at least 2 s) has passed. PID 1 ignores SIGTERM unless it handles it (the init of a
        PID namespace gets no default signal actions), and no other process is signalled (a shell's child
        is not told); SIGKILL of PID 1 makes the kernel kill everything else in the container's namespace.
        ``grace`` <= 0: SIGKILL at once (the lab's kill fault).
        Ref: kubernetes/website content/en/docs/concepts/workloads/pods/pod-lifecycle.md "Termination of Pods";
        kubernetes pkg/kubelet/kuberuntime/kuberuntime_container.go killContainer (minimumGracePeriodInSeconds)."""
        proc = c.proc
        if proc is None or proc.returncode is not None:
            return
        c.kill_reason = reason
        pid1 = await self.init_pid(c)
        if grace > 0:
            pre_stop = (c.spec.get("lifecycle") or {}).get("preStop")
            if pre_stop:
                t0 = time.monotonic()
                await self._pre_stop(c, pre_stop, grace)
                grace -= time.monotonic() - t0
            grace = max(grace, 2)  # "always give containers a minimal shutdown window"
            if pid1 is not None and proc.returncode is None:
                try:
                    os.kill(pid1, signal.SIGTERM)
                except ProcessLookupError:
                    pass
                await self._wait_exit(proc, grace)
        if pid1 is not None and proc.returncode is None:
            try:
                os.kill(pid1, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the shim (and PID 1, should it not have been found)
        except ProcessLookupError:
            pass
        self._sweep(c)
        await proc.wait()

    async def _pre_stop(self, c: Container, hook: dict, grace: float) -> None:
        """Run a preStop hook (exec, httpGet or sleep) for at most ``grace`` seconds. A failure is a
        FailedPreStopHook event without details ("so that secrets won't leak", as the kubelet says)."""
        ok = True
        if "exec" in hook:
            rc, _ = await self.exec_capture(c, hook["exec"].get("command") or [], grace)
            ok = rc == 0 or rc is None  # a hook still running when the grace period ends is not a failure
        elif "httpGet" in hook:
            ok, _ = await self.probe_once(c, {"httpGet": hook["httpGet"], "timeoutSeconds": grace})
        elif "sleep" in hook:
            await asyncio.sleep(min(float(hook["sleep"].get("seconds") or 0), grace))
        if not ok:
            self.event("Warning", "FailedPreStopHook", "PreStopHook failed", c)

    async def _stop_all(self, grace: float) -> None:
        running = [c for c in self.all_containers() if c.proc is not None and c.proc.returncode is None]
        for c in running:
            self.event("Normal", "Killing", f"Stopping container {c.name}", c)
        await asyncio.gather(*(self.kill_container(c, grace) for c in running))

    def request_stop(self, grace: float) -> None:
        """Stop the pod with ``grace`` seconds; while stopping, only a shorter grace period changes anything
        (as the kubelet does when a pod is deleted again with a shorter one)."""
        if self.stopping:
            if grace < self.grace:
                self.grace = grace
                self.grace_cut_at = time.monotonic()
                cut, self.grace_cut = self.grace_cut, asyncio.Event()
                cut.set()  # wakes every container waiting out the old grace period
            return
        self.grace = grace
        self.stopping = True
        self.stop_event.set()

    async def _wait_exit(self, proc: asyncio.subprocess.Process, grace: float) -> None:
        """Wait until ``proc`` exits or ``grace`` seconds pass (less if the pod's grace period is cut)."""
        deadline = time.monotonic() + grace
        exited = asyncio.ensure_future(proc.wait())
        while not exited.done():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            cut = asyncio.ensure_future(self.grace_cut.wait())
            await asyncio.wait({exited, cut}, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            if cut.done():  # the kubelet stops the container again with the shorter period (at least 2 s)
                deadline = min(deadline, self.grace_cut_at + max(self.grace, 2))
            cut.cancel()
        if not exited.done():
            exited.cancel()

    # ------------------------------------------------------------------ probes
    async def _probes(self, c: Container, gen: int) -> None:
        sp, rp, lp = (c.spec.get(k) for k in ("startupProbe", "readinessProbe", "livenessProbe"))
        try:
            if sp:
                ok = await self._probe_loop(c, gen, "Startup", sp)
                if not ok:
                    return
                c.started = True
                c.ready = not rp and not c.init
                self.publish()
            await asyncio.gather(*(self._probe_loop(c, gen, kind, p) for kind, p in (("Readiness", rp), ("Liveness", lp)) if p))
        except asyncio.CancelledError:
            pass

    async def _probe_loop(self, c: Container, gen: int, kind: str, probe: dict) -> bool:
        period = probe.get("periodSeconds", 10)
        fthr = probe.get("failureThreshold", 3)
        sthr = probe.get("successThreshold", 1)
        if await self.sleep(probe.get("initialDelaySeconds", 0)):
            return False
        fails = succ = 0
        while c.gen == gen and not self.stopping:
            ok, msg = await self.probe_once(c, probe)
            if c.gen != gen or self.stopping:
                return False
            if ok:
                succ, fails = succ + 1, 0
            else:
                succ, fails = 0, fails + 1
                self.event("Warning", "Unhealthy", f"{kind} probe failed: {msg}", c)
            if kind == "Startup":
                if ok:
                    return True
                if fails >= fthr:
                    self.event("Normal", "Killing", f"Container {c.name} failed startup probe, will be restarted", c)
                    await self.kill_container(c, probe.get("terminationGracePeriodSeconds", self.spec.get("terminationGracePeriodSeconds", 30)) or 1, "liveness")
                    return False
            elif kind == "Readiness":
                if ok and succ >= sthr and not c.ready:
                    c.ready = True
                    self.publish()
                elif not ok and fails >= fthr and c.ready:
                    c.ready = False
                    self.publish()
            elif not ok and fails >= fthr:
                self.event("Normal", "Killing", f"Container {c.name} failed liveness probe, will be restarted", c)
                await self.kill_container(c, probe.get("terminationGracePeriodSeconds", self.spec.get("terminationGracePeriodSeconds", 30)) or 1, "liveness")
                return False
            if await self.sleep(period):
                return False
        return False

    def _port(self, c: Container, port) -> int:
        if isinstance(port, int) or (isinstance(port, str) and port.isdigit()):
            return int(port)
        for p in c.spec.get("ports") or []:
            if p.get("name") == port:
                return int(p["containerPort"])
        raise ValueError(f"port {port!r} not found in container {c.name}'s ports")

    async def probe_once(self, c: Container, probe: dict) -> tuple[bool, str]:
        timeout = probe.get("timeoutSeconds", 1)
        refused = set(self.fault().get("refusePorts") or [])
        try:
            if "httpGet" in probe:
                hg = probe["httpGet"]
                port = self._port(c, hg.get("port"))
                host = hg.get("host") or self.ip
                scheme = hg.get("scheme", "HTTP").lower()
                url = f"{scheme}://{host}:{port}{hg.get('path', '/')}"
                if port in refused:
                    return False, f'Get "{url}": dial tcp {host}:{port}: connect: connection refused'
                headers = {"User-Agent": "kube-probe/1.32", "Accept": "*/*"}
                for h in hg.get("httpHeaders") or []:
                    headers[h["name"]] = h["value"]
                try:
                    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as s:
                        async with s.get(url, headers=headers, allow_redirects=False, ssl=False) as r:
                            body = (await r.content.read(10240)).decode(errors="replace")
                            if 200 <= r.status < 400:
                                return True, ""
                            return False, f"HTTP probe failed with statuscode: {r.status}" + ("" if r.status != 403 else f" ({body[:80]})")
                except TimeoutError:
                    return False, f'Get "{url}": context deadline exceeded (Client.Timeout exceeded while awaiting headers)'
                except aiohttp.ClientConnectorError as exc:
                    err = exc.os_error.errno if exc.os_error else None
                    return False, f'Get "{url}": dial tcp {host}:{port}: connect: {os.strerror(err).lower() if err else "connection refused"}'
                except aiohttp.ClientError as exc:
                    return False, f'Get "{url}": {exc}'
            if "tcpSocket" in probe:
                port = self._port(c, probe["tcpSocket"].get("port"))
                host = probe["tcpSocket"].get("host") or self.ip
                if port in refused:
                    return False, f"dial tcp {host}:{port}: connect: connection refused"
                try:
                    _, w = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
                    w.close()
                    return True, ""
                except TimeoutError:
                    return False, f"dial tcp {host}:{port}: i/o timeout"
                except OSError as exc:
                    return False, f"dial tcp {host}:{port}: connect: {os.strerror(exc.errno).lower() if exc.errno else str(exc)}"
            if "exec" in probe:
                cmd = probe["exec"].get("command") or []
                rc, out = await self.exec_capture(c, cmd, timeout)
                if rc == 0:
                    return True, ""
                if rc is None:
                    return False, f"command {cmd!r} timed out"
                return False, out.strip() or f"command {cmd!r} exited with {rc}"
            if "grpc" in probe:
                return False, "grpc probes are not supported by the lab's kubelet"
        except ValueError as exc:
            return False, str(exc)
        return False, "probe has no handler (httpGet, tcpSocket or exec)"

    # ------------------------------------------------------------------ exec
    async def exec_process(self, c: Container, cmd: list[str], stdin: bool = True) -> asyncio.subprocess.Process:
        """Start ``cmd`` inside the running container's network + mount namespaces, with its env and uid."""
        if c.proc is None or c.proc.returncode is not None:
            raise ApiError(400, "BadRequest", f"container {c.name} is not running")
        pid1 = await self.init_pid(c)
        if pid1 is None:
            raise ApiError(400, "BadRequest", f"container {c.name} is not running")
        env = dict(c.env)
        spec = self._launch_spec(c, list(cmd), env, False)
        fd = self._spec_fd(spec)
        try:  # into the container's network, mount and PID namespaces (nsenter forks into the last)
            return await asyncio.create_subprocess_exec(
                "nsenter", "-t", str(pid1), "-n", "-m", "-p", HOST_PYTHON, LAUNCH, f"fd:{fd}",
                stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True, env={"PATH": BASE_PATH},
                pass_fds=(fd,),
            )
        finally:
            os.close(fd)

    async def exec_capture(self, c: Container, cmd: list[str], timeout: float) -> tuple[int | None, str]:
        try:
            proc = await self.exec_process(c, cmd, stdin=False)
        except ApiError as exc:
            return 1, exc.message
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            await proc.wait()
            return None, ""
        return proc.returncode, (out + err).decode(errors="replace")

