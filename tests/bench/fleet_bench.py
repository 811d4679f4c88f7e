"""`make bench`, fleet section: playbooks/fleet.yml on the asgard.mlflow.mlflow_servers inventory over TWO labs
(two clusters), forks 1 and N, and what a big fleet would cost on AWX, computed from what one instance cost here.

Called by bench.py (``bench_fleet``); its own lab B is started here (``BENCH_LAB_B_DIR``, default
``$BENCH_OUT/lab-b``) and stopped at the end. Instances: small healthy MLflows (uvicorn, one worker, job execution
off), half in each lab, as many as fit: one pod's RSS is measured and ``BENCH_FLEET_RESERVE_MB`` (4096) stay
available, capped by ``BENCH_FLEET_MAX`` (8). ``BENCH_FLEET_FORKS`` (``1,max``: max = the number of instances),
``BENCH_FLEET_RUNS`` (1), ``BENCH_FLEET_PROJECTION`` (``500,20``: instances, clusters).

Per run: wall time, controller CPU seconds (ansible-playbook and every process it waited for:
``getrusage(RUSAGE_CHILDREN)`` before/after), peak RSS of the controller side, API requests of both labs; the
fleet report must say every instance is healthy and nothing was remediated. Not a test module.
"""

from __future__ import annotations

import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import benchlab as bl
import runner
import yaml

sys.path.insert(0, str(bl.REPO / "tests"))
from helpers import fleet_objects as fo  # noqa: E402

PREFIX = "bfleet"


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    if raw and not raw.isdigit():
        raise SystemExit(f"{name}: {raw!r} is not a non-negative integer")
    return int(raw) if raw else default


def _log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _children_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


class SecondLab:
    """Lab B: another API server and pod network in the same network namespace (started and stopped here)."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir

    def _cmd(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        env = dict(os.environ, PYTHONPATH=str(bl.REPO / "tests" / "lab"))
        return subprocess.run([sys.executable, "-m", "asgardlab", "--state-dir", str(self.state_dir), *args],
                              env=env, capture_output=True, text=True, timeout=timeout)

    def __enter__(self) -> bl.Lab:
        if (self.state_dir / "lab.pid").exists():
            self._cmd("down")
        up = self._cmd("up")
        if up.returncode != 0:
            raise RuntimeError(f"lab B did not start ({self.state_dir}): {up.stdout[-800:]} {up.stderr[-800:]}")
        return bl.Lab(self.state_dir)

    def __exit__(self, *exc) -> None:
        down = self._cmd("down")
        if down.returncode != 0:
            _log(f"WARNING: lab B did not stop: {down.stderr[-400:]}; run: PYTHONPATH=tests/lab "
                 f".venv/bin/python -m asgardlab --state-dir {self.state_dir} down")


def _inventory(path: Path, lab_a: bl.Lab, lab_b: bl.Lab) -> Path:
    cfg = {"plugin": "asgard.mlflow.mlflow_servers", "connections": [
        {"name": "lab-a", "kubeconfig": str(lab_a.kubeconfig), "namespaces": [f"{PREFIX}-*"]},
        {"name": "lab-b", "kubeconfig": str(lab_b.kubeconfig), "namespaces": [f"{PREFIX}-*"]}]}
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def bench_fleet(lab: bl.Lab, errors: list[str], *, out: Path, tmp: Path, pod_rss_mb, meminfo_kb) -> dict:
    pod_mb = pod_rss_mb(bl.serving_pod(lab, "bench-0")) or 550.0
    avail_mb = meminfo_kb("MemAvailable") / 1024
    reserve = _env_int("BENCH_FLEET_RESERVE_MB", 4096)
    cap = max(2, _env_int("BENCH_FLEET_MAX", 8))
    fits = max(2, int((avail_mb - reserve) // max(pod_mb, 1)))
    n = min(cap, fits)
    forks_list = sorted({n if f == "max" else int(f) for f in
                         (x.strip() for x in (os.environ.get("BENCH_FLEET_FORKS") or "1,max").split(",")) if f})
    runs = max(1, _env_int("BENCH_FLEET_RUNS", 1))
    proj_n, proj_clusters = (int(x) for x in (os.environ.get("BENCH_FLEET_PROJECTION") or "500,20").split(","))
    mem = {"pod_rss_mb": pod_mb, "mem_available_mb": round(avail_mb), "reserve_mb": reserve,
           "instances_that_fit": fits, "cap": cap, "n": n}
    _log(f"fleet: one MLflow pod uses {pod_mb:.0f} MiB, {avail_mb:.0f} MiB available -> {n} instances over two labs, "
         f"forks {forks_list}")
    lab_b_dir = Path(os.environ.get("BENCH_LAB_B_DIR") or out / "lab-b").resolve()
    result: dict = {"memory": mem, "points": [], "instances": n, "clusters": 2}
    with SecondLab(lab_b_dir) as lab_b:
        labs = {"lab-a": lab, "lab-b": lab_b}
        placed = {"lab-a": [f"{PREFIX}-a{i}" for i in range(math.ceil(n / 2))],
                  "lab-b": [f"{PREFIX}-b{i}" for i in range(n // 2)]}
        try:
            t0 = time.monotonic()
            for name, nss in placed.items():
                for ns in nss:
                    fo.apply(labs[name], ns, fo.healthy(ns))
            for name, nss in placed.items():
                for ns in nss:
                    fo.wait_serving(labs[name], ns, "app=mlflow", timeout=900)
            _log(f"fleet: {n} MLflow instances serving after {time.monotonic() - t0:.0f} s")
            mem["mem_available_after_mb"] = round(meminfo_kb("MemAvailable") / 1024)
            inv = _inventory(out / "fleet.mlflow_servers.yml", lab, lab_b)
            result["discovery"] = _discovery(inv, labs, n, tmp)
            for forks in forks_list:
                for _ in range(runs):
                    result["points"].append(_run(inv, labs, n, forks, out, tmp, errors))
        finally:
            for name, nss in placed.items():
                for ns in nss:
                    labs[name].delete_namespace(ns)
    result["projection"] = projection(result, proj_n, proj_clusters)
    return result


def _requests(labs: dict, marks: dict) -> int:
    return sum(len(labs[k].requests_since(marks[k])) for k in labs)


def _discovery(inv: Path, labs: dict, n: int, tmp: Path) -> dict:
    marks = {k: lab.log_mark() for k, lab in labs.items()}
    env = runner.ansible_env(labs["lab-a"].kubeconfig, tmpdir=str(tmp))
    t0 = time.perf_counter()
    proc = subprocess.run([str(Path(sys.executable).parent / "ansible-inventory"), "-i", str(inv), "--list"],
                          cwd=bl.REPO, env=env, capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"ansible-inventory failed: {proc.stderr[-1500:]}")
    hosts = json.loads(proc.stdout)["_meta"]["hostvars"]
    if len(hosts) != n:
        raise RuntimeError(f"ansible-inventory found {len(hosts)} instances, expected {n}: {sorted(hosts)}")
    reqs = _requests(labs, marks)
    _log(f"fleet: discovery of {n} instances in 2 clusters: {wall:.1f} s, {reqs} API requests")
    return {"wall_s": round(wall, 2), "api_requests": reqs, "instances": n}


def _run(inv: Path, labs: dict, n: int, forks: int, out: Path, tmp: Path, errors: list[str]) -> dict:
    report = out / f"fleet-report-forks{forks}.json"
    report.unlink(missing_ok=True)
    marks = {k: lab.log_mark() for k, lab in labs.items()}
    cpu0 = _children_cpu_s()
    r = runner.run_playbook(bl.REPO / "playbooks" / "fleet.yml", kubeconfig=labs["lab-a"].kubeconfig, tmpdir=tmp,
                            inventory=inv, forks=forks,
                            extra_vars={"verify_min_workers": 1, "fleet_report_path": str(report)})
    cpu = _children_cpu_s() - cpu0
    rep = json.loads(report.read_text()) if report.exists() else {}
    s = rep.get("summary") or {}
    ok = r.rc == 0 and s.get("instances") == n and s.get("healthy") == n and not s.get("remediated_instances")
    point = {"n": n, "forks": forks, "wall_s": round(r.wall_s, 1), "per_instance_s": round(r.wall_s / n, 2),
             "controller_cpu_s": round(cpu, 1), "cpu_per_instance_s": round(cpu / n, 2),
             "api_requests": _requests(labs, marks), "controller_peak_rss_mb": r.peak_tree_mb,
             "controller_peak_procs": r.peak_procs, "ok": ok}
    if not ok:
        logf = out / f"fleet-forks{forks}-failed.log"
        logf.write_text(r.stdout + "\n--- stderr\n" + r.stderr)
        errors.append(f"fleet forks={forks}: rc={r.rc}, summary={s} (output in {logf}): " + " | ".join(r.failures()[:6]))
    _log(f"fleet n={n} forks={forks}: {r.wall_s:.1f} s ({point['per_instance_s']} s/instance), controller CPU "
         f"{cpu:.1f} s ({point['cpu_per_instance_s']} s/instance), {point['api_requests']} API requests, peak RSS "
         f"{r.peak_tree_mb} MiB")
    return point


def _median(points: list[dict], forks: int, key: str):
    vals = [p[key] for p in points if p["forks"] == forks and p["ok"]]
    return statistics.median(vals) if vals else None


# AWX set-ups the projection is written for: (label, execution nodes = job slices, vCPUs per node, forks per job)
SETUPS = [("1 execution node, 4 vCPU, forks 10", 1, 4, 10),
          ("1 execution node, 8 vCPU, forks 25", 1, 8, 25),
          ("4 execution nodes (job_slice_count 4), 8 vCPU each, forks 25", 4, 8, 25)]
CPU_USABLE = 0.8  # of a node's vCPUs, for Ansible's forks (the rest: callback/event processing, the OS)


def projection(result: dict, instances: int, clusters: int) -> dict:
    """What ``instances`` MLflows in ``clusters`` clusters would take on AWX, from the measured per-instance cost.

    Per job slice of ``m`` instances on a node with ``V`` vCPUs and ``F`` forks: a fork verifies one instance at a
    time, so at least ``m * w1 / F`` (w1: wall per instance with one fork, where nothing waits for a CPU), and the
    controller work needs ``m * c / (V * 0.8)`` (c: controller CPU seconds per instance): the larger of the two.
    Plus the inventory sync: the plugin lists the clusters one after the other, ``clusters * d`` (d: discovery
    wall per cluster). Memory per node: ``F * r`` (r: controller RSS per fork).
    """
    pts = result.get("points") or []
    forks_all = sorted({p["forks"] for p in pts if p["ok"]})
    if not forks_all or 1 not in forks_all:
        return {}
    fmax = forks_all[-1]
    n = result["instances"]
    w1 = _median(pts, 1, "wall_s") / n
    c = _median(pts, fmax, "controller_cpu_s") / n
    wn = _median(pts, fmax, "wall_s") / n
    r_fork = _median(pts, fmax, "controller_peak_rss_mb") / max(1, min(fmax, n))
    d = result["discovery"]["wall_s"] / result["clusters"]
    rows = []
    for label, nodes, vcpu, forks in SETUPS:
        m = math.ceil(instances / nodes)
        t_forks = m * w1 / forks
        t_cpu = m * c / (vcpu * CPU_USABLE)
        t_sync = clusters * d
        total = t_sync + max(t_forks, t_cpu)
        rows.append({"setup": label, "nodes": nodes, "vcpu": vcpu, "forks": forks, "per_node": m,
                     "forks_bound_s": round(t_forks), "cpu_bound_s": round(t_cpu), "sync_s": round(t_sync),
                     "total_min": round(total / 60, 1), "bound": "forks" if t_forks >= t_cpu else "CPU",
                     "memory_gib": round(forks * r_fork / 1024, 1)})
    return {"instances": instances, "clusters": clusters, "w1_s": round(w1, 2), "wn_s": round(wn, 2),
            "forks_max": fmax, "speedup": round(w1 / wn, 2) if wn else None, "cpu_per_instance_s": round(c, 2),
            "rss_per_fork_mb": round(r_fork), "discovery_per_cluster_s": round(d, 2), "rows": rows}


def table_rows(result: dict, fmt) -> list[list[str]]:
    rows = []
    d = result.get("discovery")
    if d:
        rows.append([f"fleet discovery, {d['instances']} instances in 2 clusters", f"{d['wall_s']} s",
                     f"{d['api_requests']} API requests", "ansible-inventory --list"])
    for p in result.get("points") or []:
        rows.append([f"fleet.yml n={p['n']} forks={p['forks']}" + ("" if p["ok"] else " (FAILED)"), f"{p['wall_s']} s",
                     f"{p['per_instance_s']} s/instance, CPU {p['cpu_per_instance_s']} s/instance",
                     f"RSS {p['controller_peak_rss_mb']} MiB, {p['api_requests']} req"])
    return rows


def findings(result: dict) -> list[str]:
    p = result.get("projection") or {}
    if not p:
        return []
    return [f"fleet: {result['instances']} instances in 2 clusters: {p['w1_s']} s/instance with 1 fork, "
            f"{p['wn_s']} s/instance with {p['forks_max']} forks (speed-up {p['speedup']}x on {os.cpu_count()} cores); "
            f"controller CPU {p['cpu_per_instance_s']} s/instance"]


def projection_markdown(result: dict) -> list[str]:
    p = result.get("projection") or {}
    if not p:
        return []
    lines = [f"### What {p['instances']} instances across {p['clusters']} clusters would take on AWX", "",
             "From this run's measurements (the arithmetic in `tests/bench/fleet_bench.py projection()`):", "",
             f"- w1 = wall per instance with 1 fork = **{p['w1_s']} s** (nothing waits for a CPU);",
             f"- c = controller CPU per instance (ansible-playbook and its forks, `getrusage`) = **{p['cpu_per_instance_s']} s**;",
             f"- r = controller memory per fork = **{p['rss_per_fork_mb']} MiB** (peak RSS with {p['forks_max']} forks / forks);",
             f"- d = inventory sync per cluster (`ansible-inventory --list`) = **{p['discovery_per_cluster_s']} s**.", "",
             f"Per job slice of m instances on a node with V vCPUs and F forks: time = {p['clusters']} x d + "
             f"max(m x w1 / F, m x c / (V x {CPU_USABLE})); memory = F x r.", "",
             f"| AWX set-up | instances per node | forks-bound m*w1/F | CPU-bound m*c/(V*{CPU_USABLE}) | sync "
             f"{p['clusters']}*d | total | bound by | memory per node |",
             "|---|---|---|---|---|---|---|---|"]
    for row in p["rows"]:
        lines.append(f"| {row['setup']} | {row['per_node']} | {row['forks_bound_s']} s | {row['cpu_bound_s']} s | "
                     f"{row['sync_s']} s | **{row['total_min']} min** | {row['bound']} | {row['memory_gib']} GiB |")
    lines += ["", "Each instance is a verify run (11 Ansible tasks on a healthy server since the typed core); the API "
              "calls are a small part of it (see the verify rows above). More forks help until the node's CPUs are busy; beyond that, more "
              "execution nodes (job slicing) are the lever. The lab runs on the same 2 shared cores as the controller, "
              "so w1 and c here are upper bounds for a dedicated execution node.", ""]
    return lines
