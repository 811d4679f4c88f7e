"""`make bench`: probe latency, verify and heal times, fleet scale and cost, each side by side with a floor/peer.

Run by scripts/bench.sh against a private lab (BENCH_LAB_DIR, default .bench/lab). Writes .bench/results.json,
prints a table and rewrites docs/benchmarks.md. Repetition counts come from the environment:

  BENCH_WARMUP (1)              warm-up runs before each measured series
  BENCH_PROBE_RUNS (10)         in-process / floor / peer probe rounds (interleaved)
  BENCH_PROBE_PLAYBOOK_RUNS (3) mlflow_probe through ansible-playbook
  BENCH_VERIFY_RUNS (3)         playbooks/verify.yml on a healthy server (and as many bare-Python replays)
  BENCH_HEAL_RUNS (2)           verify.yml healing the seed's broken Deployment (fresh namespace each)
  BENCH_FLEET_MAX (8)           fleet instances over two labs (capped by what fits in memory): tests/bench/fleet_bench.py
  BENCH_FLEET_FORKS (1,max)     Ansible forks of playbooks/fleet.yml; "max" = the number of instances
  BENCH_FLEET_RUNS (1)          runs per fleet point; BENCH_LAB_B_DIR: the second lab ($BENCH_OUT/lab-b)
  BENCH_SECTIONS (probe,verify,heal,fleet)
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path
from urllib.parse import parse_qsl

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import benchlab as bl  # noqa: E402
import probes  # noqa: E402
import runner  # noqa: E402

REPO = bl.REPO
OUT = Path(os.environ.get("BENCH_OUT") or REPO / ".bench")
LAB_DIR = Path(os.environ.get("BENCH_LAB_DIR") or OUT / "lab").resolve()
TMP = OUT / "tmp"
# BENCH_DOC: where to write the results page (default docs/benchmarks.md); "none" writes no page
_DOC_ENV = os.environ.get("BENCH_DOC", "")
DOC = None if _DOC_ENV == "none" else Path(_DOC_ENV or REPO / "docs" / "benchmarks.md").resolve()
HOST_VARS = {"verify_port_forward": False, "verify_min_workers": 1}


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    if not raw:
        return default
    if not raw.isdigit():
        raise SystemExit(f"{name}: {raw!r} is not a non-negative integer")
    return int(raw)


def env_list(name: str, default: str) -> list[str]:
    return [x.strip() for x in (os.environ.get(name) or default).split(",") if x.strip()]


WARMUP = env_int("BENCH_WARMUP", 1)
PROBE_RUNS = max(1, env_int("BENCH_PROBE_RUNS", 10))
try:  # the mlflow_probe option `resolved` (an already-resolved pod); absent in older checkouts (before/after runs)
    from ansible_collections.asgard.mlflow.plugins.module_utils._target import RESOLVED_ARG_SPEC as _RESOLVED  # noqa: F401

    RESOLVED_OPTION = True
except ImportError:
    RESOLVED_OPTION = False
PROBE_PB_RUNS = max(1, env_int("BENCH_PROBE_PLAYBOOK_RUNS", 3))
VERIFY_RUNS = max(1, env_int("BENCH_VERIFY_RUNS", 3))
HEAL_RUNS = max(1, env_int("BENCH_HEAL_RUNS", 2))
FLEET_RUNS = max(1, env_int("BENCH_FLEET_RUNS", 1))
SECTIONS = set(env_list("BENCH_SECTIONS", "probe,verify,heal,fleet"))
for _s in SECTIONS - {"probe", "verify", "heal", "fleet"}:
    raise SystemExit(f"BENCH_SECTIONS: unknown section {_s!r} (expected a comma list of probe, verify, heal, fleet)")


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def stats(samples: list[float], nd: int = 3) -> dict:
    s = sorted(samples)
    if not s:
        return {"n": 0}
    p95 = s[min(len(s) - 1, max(0, round(0.95 * len(s) + 0.5) - 1))]
    return {"median": round(statistics.median(s), nd), "min": round(s[0], nd), "max": round(s[-1], nd),
            "p95": round(p95, nd), "n": len(s), "samples": [round(x, nd) for x in samples]}


def ratio(a: dict, b: dict) -> float | None:
    if not a.get("median") or not b.get("median"):
        return None
    return round(a["median"] / b["median"], 2)


def by_path(entries: list[dict]) -> dict[str, int]:
    c = Counter(f"{e['method']} {bl.normalise_path(e['path'])}" for e in entries)
    return dict(sorted(c.items(), key=lambda kv: (-kv[1], kv[0])))


def api_time(entries: list[dict], t0: float, t1: float) -> float:
    """Seconds of [t0, t1] during which at least one API request (REST or portforward WebSocket) was open."""
    return bl.union_seconds([(max(t0, e["t_start"]), min(t1, e["t_end"])) for e in entries
                             if e["t_end"] > t0 and e["t_start"] < t1])


# ================================================================================================ probe
def kubectl_port_forward(lab: bl.Lab, ns: str, pod: str) -> dict:
    """Does the usual peer work here: kubectl port-forward, and a GET /health through it?"""
    env = dict(os.environ, KUBECONFIG=str(lab.kubeconfig))
    try:
        proc = subprocess.Popen(["kubectl", "port-forward", "-n", ns, f"pod/{pod}", ":5000"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    except FileNotFoundError:
        return {"works": False, "detail": "kubectl is not installed"}
    # kubectl prints "Forwarding from 127.0.0.1:<port>" once it listens; a request through it proves the tunnel
    port, lines, deadline = None, [], time.monotonic() + 8
    while time.monotonic() < deadline and port is None and proc.poll() is None:
        line = proc.stdout.readline()
        lines.append(line)
        if line.startswith("Forwarding from 127.0.0.1:"):
            port = int(line.split(":")[1].split()[0])
    works = False
    if port:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=8) as r:
                works = r.status == 200
                lines.append(f"GET /health through it: {r.status}")
        except OSError as exc:
            lines.append(f"GET /health through it: {exc}")
    running = proc.poll() is None
    proc.kill()
    out = "".join(lines) + (proc.communicate()[0] or "")
    detail = " ".join(out.split())[:300] or f"exit {proc.returncode}"
    if not running and not works:
        detail = f"exit {proc.returncode}: {detail}"
    return {"works": works, "detail": detail}


def bench_probe(lab: bl.Lab) -> dict:
    ns = "bench-0"
    pod = bl.serving_pod(lab, ns)
    netns = bl.netns_of(pod)
    client = probes.api_client(str(lab.kubeconfig))
    kpf = kubectl_port_forward(lab, ns, pod["metadata"]["name"])
    log(f"kubectl port-forward against the lab: {'works' if kpf['works'] else 'does NOT work'}: {kpf['detail'][:160]}")
    coll, floor, peer, reqs, given, given_reqs = [], [], [], [], [], []
    resolved = None
    for i in range(WARMUP + PROBE_RUNS):
        c = probes.collection_round(client, ns)
        f = bl.in_netns(netns, probes.floor_round)
        p = probes.peer_round(client, ns)
        # the same round with the pod already resolved (option resolved, as the verify role calls it)
        g = probes.collection_round(client, ns, resolved=resolved or c["resolved"]) if RESOLVED_OPTION else None
        resolved = resolved or c["resolved"]
        if i >= WARMUP:
            coll.append(c["ms"])
            reqs.append(c["api_requests"])
            floor.append(f)
            peer.append(p)
            if g:
                given.append(g["ms"])
                given_reqs.append(g["api_requests"])
    log(f"probe in-process {statistics.median(coll):.1f} ms, floor {statistics.median(floor):.1f} ms, "
        f"peer {statistics.median(peer):.1f} ms"
        + (f", with a resolved target {statistics.median(given):.1f} ms" if given else ""))
    pb_wall, pb_module = [], []
    for i in range(WARMUP + PROBE_PB_RUNS):
        r = runner.run_playbook(HERE / "probe.yml", kubeconfig=lab.kubeconfig, tmpdir=TMP,
                                extra_vars={"bench_namespace": ns})
        if r.rc != 0:
            raise RuntimeError("probe playbook failed\n" + r.output)
        if i >= WARMUP:
            pb_wall.append(r.wall_s * 1000)
            pb_module.append(r.host_results("Probe")[0]["elapsed_ms"])
    log(f"probe via ansible-playbook {statistics.median(pb_wall):.0f} ms (module's own {statistics.median(pb_module):.1f} ms)")
    s_coll, s_floor, s_peer = stats(coll, 2), stats(floor, 2), stats(peer, 2)
    s_pb, s_mod = stats(pb_wall, 1), stats(pb_module, 2)
    extra = {}
    if given:
        s_given = stats(given, 2)
        extra = {"resolved_ms": s_given, "resolved_median_ms": s_given["median"], "resolved_p95_ms": s_given["p95"],
                 "resolved_vs_floor_ratio": ratio(s_given, s_floor),
                 "resolved_api_requests_per_round": stats(given_reqs, 0)["median"]}
    return {**extra,
        "median_ms": s_coll["median"], "min_ms": s_coll["min"], "max_ms": s_coll["max"], "p95_ms": s_coll["p95"],
        "vs_floor_ratio": ratio(s_coll, s_floor), "vs_peer_ratio": ratio(s_coll, s_peer),
        "in_process_ms": s_coll, "floor_ms": s_floor, "peer_ms": s_peer,
        "playbook_wall_ms": s_pb, "module_elapsed_ms": s_mod,
        "playbook_vs_floor_ratio": ratio(s_pb, s_floor), "module_vs_floor_ratio": ratio(s_mod, s_floor),
        "api_requests_per_round": stats(reqs, 0)["median"],
        "peer_kind": "kubernetes.stream.portforward (plain example usage)",
        "kubectl_port_forward": kpf,
        "round": "GET /health, GET /, GET /version on one keep-alive connection (api_check off)",
    }


# ================================================================================================ verify
def verify_vars(ns: str, report: Path, **extra) -> dict:
    ev = {"verify_namespace": ns, "verify_report_path": str(report), **HOST_VARS}
    ev.update(extra)
    return ev


def replay(lab: bl.Lab, entries: list[dict]) -> float:
    """The bare-Python floor: the same API calls, in the same order, from one process (one keep-alive session for
    REST; the collection's tunnel code for each portforward with the probe's four HTTP requests)."""
    from probes import KubeAPI

    from ansible_collections.asgard.mlflow.plugins.module_utils._tunnel import http_request

    t0 = time.perf_counter()
    import requests

    s = requests.Session()
    s.trust_env = False
    s.verify = lab.ca
    s.headers.update({"Authorization": f"Bearer {lab.token}", "Accept": "application/json"})
    api = None
    for e in entries:
        if e["method"] != "GET":
            raise RuntimeError(f"replay handles GETs only, got {e['method']} {e['path']}")
        if e["path"].endswith("/portforward"):
            if api is None:
                api = KubeAPI(probes.api_client(str(lab.kubeconfig)))
            parts = e["path"].split("/")
            ns, pod = parts[4], parts[6]
            port = int(dict(parse_qsl(e["query"]))["ports"])
            with api.open_portforward(ns, pod, port) as t:
                for path, host in (("/health", "localhost:5000"), ("/", "localhost:5000"),
                                   ("/version", "localhost:5000"),
                                   ("/api/2.0/mlflow/experiments/search?max_results=1",
                                    f"mlflow-service.{ns}.svc.cluster.local:5000")):
                    r = http_request(t, "GET", path, host)
                    if r.status != 200:
                        raise RuntimeError(f"replay: GET {path} through the tunnel: {r.status}")
        else:
            r = s.get(lab.api + e["path"] + ("?" + e["query"] if e["query"] else ""), timeout=30)
            if r.status_code != e["status"]:
                raise RuntimeError(f"replay: GET {e['path']}: {r.status_code}, verify got {e['status']}")
    return time.perf_counter() - t0


SEED_SCRIPT = HERE / "seed-test-script.sh"


def executed_tasks(r) -> tuple[int, int]:
    """(tasks executed, tasks skipped) of a run, from the JSON callback (an included file counts as a task)."""
    ran = skipped = 0
    for t in r.tasks():
        hosts = list(t.get("hosts", {}).values())
        if hosts and all(h.get("skipped") for h in hosts):
            skipped += 1
        elif hosts:
            ran += 1
    return ran, skipped


def run_seed_script(lab: bl.Lab, ns: str) -> tuple[float | None, str]:
    """The seed's six-step script (kubectl + curl), when tests/bench/seed-test-script.sh exists; its port-forward is
    stopped afterwards. Returns (wall seconds or None, detail)."""
    if not SEED_SCRIPT.exists():
        return None, "tests/bench/seed-test-script.sh is not in this checkout"
    import re
    import signal
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = dict(os.environ, KUBECONFIG=str(lab.kubeconfig), NAMESPACE=ns, PORT=str(port),
               PF_LOG=str(TMP / f"seed-pf-{port}.log"))
    t0 = time.perf_counter()
    proc = subprocess.run(["bash", str(SEED_SCRIPT)], env=env, capture_output=True, text=True, timeout=300,
                          check=False)
    wall = time.perf_counter() - t0
    m = re.search(r"kubectl port-forward pid (\d+)", proc.stdout)
    if m:  # the script leaves its forward running, as the seed's does: stop it by the pid it printed
        try:
            os.kill(int(m.group(1)), signal.SIGTERM)
        except ProcessLookupError:
            pass
    if proc.returncode != 0:
        return None, f"rc {proc.returncode}: {(proc.stderr or proc.stdout)[-300:]}"
    return wall, "ok"


def bench_verify(lab: bl.Lab) -> dict:
    ns = "bench-0"
    walls, api_s, overhead, nreq, rss_tree, rss_proc, module_s = [], [], [], [], [], [], []
    floor_walls, script_walls, ntasks = [], [], []
    script_detail = ""
    last_entries: list[dict] = []
    paths: dict = {}
    cold: dict = {}
    for i in range(WARMUP + VERIFY_RUNS):
        report = OUT / "verify-report.json"
        mark = lab.log_mark()
        r = runner.run_playbook(REPO / "playbooks" / "verify.yml", kubeconfig=lab.kubeconfig, tmpdir=TMP,
                                extra_vars=verify_vars(ns, report))
        end = lab.log_mark()
        rep = json.loads(report.read_text()) if report.exists() else {}
        if r.rc != 0 or rep.get("status") != "healthy":
            raise RuntimeError(f"verify.yml on the healthy server: rc={r.rc} status={rep.get('status')}\n" + r.output)
        if rep.get("remediated"):
            raise RuntimeError(f"verify.yml remediated a healthy server: {rep['remediated']}")
        # the log is written when a request ends: the seed script's kubectl port-forward of the previous iteration,
        # stopped just before, can end inside this window; count only what started during verify.yml
        entries = [e for e in lab.requests_since(mark, end) if e["t_start"] >= r.started]
        # side by side: the Ansible floor (one k8s_info task) and the seed's script, interleaved with verify.yml
        fl = runner.run_playbook(HERE / "floor.yml", kubeconfig=lab.kubeconfig, tmpdir=TMP,
                                 extra_vars={"bench_namespace": ns})
        if fl.rc != 0:
            raise RuntimeError("the Ansible floor playbook failed:\n" + fl.output)
        sw, script_detail = run_seed_script(lab, ns)
        if i == 0:
            # the first run of a bench starts with an empty kubernetes.core discovery cache ($TMPDIR)
            cold = {"wall_s": round(r.wall_s, 2), "api_requests": len(entries), "requests_by_path": by_path(entries),
                    "warmup": i < WARMUP}
        if i < WARMUP:
            continue
        a = api_time(entries, r.started, r.ended)
        walls.append(r.wall_s)
        floor_walls.append(fl.wall_s)
        if sw is not None:
            script_walls.append(sw)
        api_s.append(a)
        overhead.append(r.wall_s - a)
        nreq.append(len(entries))
        ntasks.append(executed_tasks(r))
        rss_tree.append(r.peak_tree_mb)
        rss_proc.append(r.peak_proc_mb)
        module_s.append(sum(_task_s(t) for t in r.tasks() if _is_module_task(t)))
        last_entries, paths = entries, by_path(entries)
    log(f"verify.yml healthy: {statistics.median(walls):.1f} s (API/tunnel {statistics.median(api_s):.2f} s), "
        f"{statistics.median(nreq):.0f} API requests; Ansible floor {statistics.median(floor_walls):.1f} s; seed script "
        + (f"{statistics.median(script_walls):.1f} s" if script_walls else script_detail))
    floors = []
    for i in range(WARMUP + VERIFY_RUNS):
        t = replay(lab, last_entries)
        if i >= WARMUP:
            floors.append(t)
    s_wall, s_floor, s_ansible = stats(walls, 2), stats(floors, 3), stats(floor_walls, 2)
    s_script = stats(script_walls, 2)
    log(f"bare-Python replay of the same {len(last_entries)} API calls: {s_floor['median']:.3f} s")
    return {
        "healthy_s": s_wall["median"], "wall_s": s_wall, "api_tunnel_s": stats(api_s, 3),
        "ansible_overhead_s": stats(overhead, 2), "module_tasks_s": stats(module_s, 2),
        "floor_bare_python_s": s_floor, "vs_floor_ratio": ratio(s_wall, s_floor),
        "ansible_floor_s": s_ansible, "vs_ansible_floor_ratio": ratio(s_wall, s_ansible),
        "seed_script_s": s_script, "vs_seed_script_ratio": ratio(s_wall, s_script), "seed_script_detail": script_detail,
        "tasks_executed": stats([t[0] for t in ntasks], 0), "tasks_skipped": stats([t[1] for t in ntasks], 0),
        "api_requests": stats(nreq, 0), "requests_by_path": paths, "first_run_cold_cache": cold,
        "module_tasks": "tasks running a module (kubernetes.core.*, asgard.mlflow.*): process start, imports, client, API",
        "controller_peak_rss_mb": stats(rss_tree, 1), "controller_peak_single_process_mb": stats(rss_proc, 1),
    }


def _task_s(t: dict) -> float:
    d = t.get("task", {}).get("duration", {})
    try:
        return (bl.parse_ts(d["end"]) - bl.parse_ts(d["start"]))
    except (KeyError, ValueError):
        return 0.0


MODULE_PREFIXES = ("kubernetes.core.", "asgard.mlflow.mlflow_probe", "asgard.mlflow.port_forward",
                   "asgard.mlflow.mlflow_verify", "asgard.mlflow.remediation_lock")


def _is_module_task(t: dict) -> bool:
    return any(h.get("action", "").startswith(MODULE_PREFIXES) for h in t.get("hosts", {}).values())


# ================================================================================================ heal
def bench_heal(lab: bl.Lab) -> dict:
    rows = []
    for i in range(HEAL_RUNS):
        ns = f"bench-heal-{i}"
        bl.apply(lab, ns, bl.seed_objects())
        bl.wait_serving(lab, ns, "/static/health")
        bl.wait_ready(lab, ns)
        watcher = bl.DashboardWatcher(lab, ns)
        watcher.start()
        report = OUT / f"heal-report-{i}.json"
        mark = lab.log_mark()
        r = runner.run_playbook(REPO / "playbooks" / "verify.yml", kubeconfig=lab.kubeconfig, tmpdir=TMP,
                                extra_vars={"verify_namespace": ns, "verify_report_path": str(report),
                                            "verify_port_forward": False, "verify_rollout_timeout": 300})
        watcher.join(timeout=120)
        watcher.stop()
        entries = lab.requests_since(mark)
        rep = json.loads(report.read_text()) if report.exists() else {}
        if r.rc != 0 or rep.get("status") != "healthy" or watcher.answered_at is None:
            raise RuntimeError(f"heal run {i}: rc={r.rc} status={rep.get('status')} "
                               f"dashboard={'answered' if watcher.answered_at else 'never answered'}\n" + r.output)
        writes = [e for e in entries if e["method"] in ("PATCH", "PUT", "POST", "DELETE")
                  and "/deployments/" in e["path"] + "/" and e["t_start"] < watcher.answered_at]
        if not writes:
            raise RuntimeError(f"heal run {i}: no write to the Deployment in the request log")
        t0 = r.started
        # detection ends when the first check has planned the remediation (the end of the first task that ran
        # asgard.mlflow.mlflow_verify, JSON callback; 0.1.0: "Plan the remediation"), else at the first write
        plan = [t for t in r.tasks() if any(h.get("plan") for h in t.get("hosts", {}).values())
                or t.get("task", {}).get("name", "").endswith("Plan the remediation from the findings")]
        detect_end = writes[0]["t_start"]
        if plan:
            try:
                detect_end = bl.parse_ts(plan[0]["task"]["duration"]["end"])
            except (KeyError, ValueError):
                pass
        # MLflow's own rollout: the first new pod seen -> it serves the dashboard; the heal goal is
        # verify.yml wall <= this + 10 s
        mlflow_rollout = (watcher.answered_at - watcher.first_new_pod_at) if watcher.first_new_pod_at else None
        ran, skipped = executed_tasks(r)
        patch_end = writes[-1]["t_end"]
        row = {
            "total_s": round(watcher.answered_at - t0, 2),
            "detection_s": round(detect_end - t0, 2),
            "patch_s": round(patch_end - detect_end, 2),
            "rollout_s": round(watcher.answered_at - patch_end, 2),
            "reverify_s": round(r.ended - watcher.answered_at, 2),
            "verify_wall_s": round(r.wall_s, 2),
            "mlflow_rollout_s": round(mlflow_rollout, 2) if mlflow_rollout is not None else None,
            "overhead_vs_rollout_s": round(r.wall_s - mlflow_rollout, 2) if mlflow_rollout is not None else None,
            "tasks_executed": ran, "tasks_skipped": skipped,
            "api_requests": len(entries), "requests_by_path": by_path(entries),
            "writes": [f"{e['method']} {bl.normalise_path(e['path'])} {e['status']}" for e in writes],
            "remediated": [a.get("action") for a in rep.get("remediated", [])],
            "controller_peak_rss_mb": r.peak_tree_mb,
        }
        rows.append(row)
        log(f"heal {i}: dashboard back {row['total_s']} s after verify.yml started (detect {row['detection_s']}, "
            f"patch {row['patch_s']}, rollout {row['rollout_s']}, re-verify {row['reverify_s']})")
        lab.delete_namespace(ns)
        lab.wait_namespace_gone(ns)
    keys = ("total", "detection", "patch", "rollout", "reverify", "verify_wall", "mlflow_rollout",
            "overhead_vs_rollout")
    out: dict = {k: stats([row[f"{k}_s"] for row in rows if row.get(f"{k}_s") is not None], 2) for k in keys}
    out["api_requests"] = stats([row["api_requests"] for row in rows], 0)
    out["tasks_executed"] = stats([row["tasks_executed"] for row in rows], 0)
    return {"total_s": out["total"]["median"], **out, "runs": rows}


# ================================================================================================ fleet
def meminfo_kb(key: str) -> int:
    with open("/proc/meminfo", encoding="ascii") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def pod_rss_mb(pod: dict) -> float:
    """RSS of every process in the pod's network namespace."""
    try:
        target = os.stat(f"/run/netns/{bl.netns_of(pod)}").st_ino
    except OSError:
        return 0.0
    total = 0
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if os.stat(f"/proc/{d}/ns/net").st_ino == target:
                    total += runner._rss_kb(int(d))
            except OSError:
                continue
    return round(total / 1024, 1)


def bench_fleet(lab: bl.Lab, errors: list[str]) -> dict:
    """playbooks/fleet.yml over two labs, forks 1 and N, and the AWX projection: tests/bench/fleet_bench.py."""
    import fleet_bench

    return fleet_bench.bench_fleet(lab, errors, out=OUT, tmp=TMP, pod_rss_mb=pod_rss_mb, meminfo_kb=meminfo_kb)


# ================================================================================================ findings
def findings_from(results: dict) -> list[str]:
    out = []
    v = results.get("verify") or {}
    paths = v.get("requests_by_path") or {}
    cold = (v.get("first_run_cold_cache") or {}).get("requests_by_path") or {}
    if cold:
        cdisc = {k: n for k, n in cold.items() if k.split()[1] in ("/version", "/api", "/apis")
                 or (k.split()[1].startswith(("/apis/", "/api/v1")) and "namespaces" not in k)}
        if cdisc:
            out.append(f"discovery on the first verify run (empty $TMPDIR cache): {sum(cdisc.values())} requests ({cdisc})")
    if paths:
        disc = {k: n for k, n in paths.items() if k.split()[1] in ("/version", "/api", "/apis")
                or (k.split()[1].count("/") <= 3 and k.split()[1].startswith(("/apis/", "/api/v1")) and "namespaces" not in k)}
        if disc:
            out.append(f"discovery requests per healthy verify run: {sum(disc.values())} ({disc})")
        rep = {k: n for k, n in paths.items() if n > 1 and k not in disc}
        if rep:
            out.append(f"the same path requested more than once per run: {rep}")
    if v.get("ansible_overhead_s") and v.get("wall_s"):
        share = v["ansible_overhead_s"]["median"] / v["wall_s"]["median"]
        out.append(f"{share:.1%} of a healthy verify run is outside API/tunnel time (Ansible: task/module start-up, "
                   f"templating); bare Python does the same API calls {v.get('vs_floor_ratio')}x faster")
    for row in (results.get("heal") or {}).get("runs", [])[:1]:
        hp = row.get("requests_by_path") or {}
        pf = sum(n for k, n in hp.items() if k.endswith("/portforward"))
        dep = hp.get("GET /apis/apps/v1/namespaces/{ns}/deployments/mlflow-deployment", 0)
        out.append(f"one heal run sent {row['api_requests']} API requests: {pf} portforward WebSockets (the seed's "
                   f"gunicorn sync workers close every connection, so each probe HTTP request opens a new tunnel), "
                   f"{dep} GETs of the Deployment (reads and rollout-wait polling), by path: {hp}")
    if results.get("fleet"):
        import fleet_bench

        out += fleet_bench.findings(results["fleet"])
    return out


# ================================================================================================ output
def fmt(s: dict | None, unit: str = "", nd: int = 1) -> str:
    if not s or not s.get("n"):
        return "n/a"
    return f"{s['median']:.{nd}f}{unit} [{s['min']:.{nd}f}-{s['max']:.{nd}f}] n={s['n']}"


def table(results: dict) -> list[list[str]]:
    rows = [["measure", "median [min-max] n", "floor / peer", "ratio"]]
    p = results.get("probe")
    if p:
        rows.append(["probe round, collection in-process", fmt(p["in_process_ms"], " ms"),
                     "floor (in pod netns) " + fmt(p["floor_ms"], " ms"), f"{p['vs_floor_ratio']}x floor"])
        if p.get("resolved_ms"):
            rows.append(["probe round, resolved target (no GETs)", fmt(p["resolved_ms"], " ms"),
                         f"{p['resolved_api_requests_per_round']} API request(s) vs {p['api_requests_per_round']}",
                         f"{p['resolved_vs_floor_ratio']}x floor"])
        rows.append(["probe round, peer: " + ("kubectl" if p["kubectl_port_forward"]["works"] else "k8s client portforward"),
                     fmt(p["peer_ms"], " ms"), "", f"collection = {p['vs_peer_ratio']}x peer"])
        rows.append(["probe via ansible-playbook (wall)", fmt(p["playbook_wall_ms"], " ms", 0),
                     "module's own " + fmt(p["module_elapsed_ms"], " ms"), f"{p['playbook_vs_floor_ratio']}x floor"])
    v = results.get("verify")
    if v:
        rows.append(["verify.yml, healthy server", fmt(v["wall_s"], " s"),
                     "bare Python, same API calls " + fmt(v["floor_bare_python_s"], " s", 2), f"{v['vs_floor_ratio']}x floor"])
        if v.get("ansible_floor_s"):
            rows.append(["  vs the Ansible floor (one k8s_info task)", fmt(v["ansible_floor_s"], " s"),
                         "goal: verify <= 2x floor", f"{v['vs_ansible_floor_ratio']}x"])
        if v.get("seed_script_s", {}).get("n"):
            rows.append(["  vs the seed's script (kubectl + curl)", fmt(v["seed_script_s"], " s"),
                         "goal: verify <= script", f"{v['vs_seed_script_ratio']}x"])
        elif v.get("seed_script_detail"):
            rows.append(["  vs the seed's script", "n/a", v["seed_script_detail"][:60], ""])
        if v.get("tasks_executed"):
            rows.append(["  tasks executed (skipped)", fmt(v["tasks_executed"], "", 0),
                         "skipped " + fmt(v["tasks_skipped"], "", 0), ""])
        rows.append(["  of which API/tunnel time", fmt(v["api_tunnel_s"], " s", 2), "", ""])
        rows.append(["  of which Ansible overhead", fmt(v["ansible_overhead_s"], " s"), "", ""])
        rows.append(["  (module tasks, incl. their API time)", fmt(v["module_tasks_s"], " s"), "", ""])
        rows.append(["  API requests per run", fmt(v["api_requests"], "", 0),
                     f"first run, cold discovery cache: {v['first_run_cold_cache'].get('api_requests')}", ""])
        rows.append(["  controller peak RSS (tree)", fmt(v["controller_peak_rss_mb"], " MiB", 0),
                     "largest process " + fmt(v["controller_peak_single_process_mb"], " MiB", 0), ""])
    h = results.get("heal")
    if h:
        rows.append(["heal: verify start -> dashboard 200", fmt(h["total"], " s"), "", ""])
        for k in ("detection", "patch", "rollout", "reverify"):
            rows.append([f"  {k}", fmt(h[k], " s"), "", ""])
        rows.append(["  verify.yml wall (heal)", fmt(h["verify_wall"], " s"), "", ""])
        if h.get("mlflow_rollout", {}).get("n"):
            rows.append(["  MLflow rollout (new pod -> dashboard)", fmt(h["mlflow_rollout"], " s"), "", ""])
            rows.append(["  verify wall - MLflow rollout", fmt(h["overhead_vs_rollout"], " s"), "goal: <= 10 s", ""])
        if h.get("api_requests"):
            rows.append(["  API requests / tasks executed (heal)", fmt(h["api_requests"], "", 0),
                         "tasks " + fmt(h["tasks_executed"], "", 0), ""])
    if results.get("fleet"):
        import fleet_bench

        rows += fleet_bench.table_rows(results["fleet"], fmt)
    return rows


def render(rows: list[list[str]]) -> str:
    w = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, r in enumerate(rows):
        lines.append("| " + " | ".join(c.ljust(w[i]) for i, c in enumerate(r)) + " |")
        if n == 0:
            lines.append("|" + "|".join("-" * (x + 2) for x in w) + "|")
    return "\n".join(lines)


DOC_HEAD = """# Benchmarks (`make bench`)

`make bench` (scripts/bench.sh -> tests/bench/bench.py) brings up a private lab in `.bench/lab`, runs real MLflow
pods in it, measures, writes `.bench/results.json`, prints a table, rewrites this file, and stops the lab.
It is not part of `make test`. Every figure is measured **side by side with its floor or peer in the same run**,
so that ratios hold on a noisy machine; absolute numbers depend on the machine's load at the time.
Each figure: several runs after `BENCH_WARMUP` warm-up run(s); median, min, max (and p95 for the probe).

## What is measured
1. **Probe**: one `mlflow_probe` round (resolve the Service's ready pod, open the v4 portforward tunnel, GET
   `/health`, `/`, `/version` on one keep-alive connection; `api_check: false`), three ways, interleaved:
   - *collection in-process*: `module_utils._probe.run_probe` (the code the module runs) without Ansible; and the
     same with the option `resolved` (the pod already known, as the verify role passes it: no Service/pod GETs);
   - *floor*: the same three requests sent to `127.0.0.1:5000` from a thread inside the pod's network namespace
     (`os.setns`), no API server and no tunnel;
   - *peer*: the `kubernetes` client's plain example usage: `list_namespaced_pod` by label +
     `kubernetes.stream.portforward` + the same HTTP over `pf.socket(5000)` (a `kubectl port-forward` is a process
     per forward: it is the seed script's transport in section 2; the run checks that it works against the lab,
     `GET /health` through it);
   - and through the module with `ansible-playbook` (tests/bench/probe.yml): process wall time, and the module's own
     `elapsed_ms`.
2. **Verify**: `playbooks/verify.yml` on a healthy MLflow (uvicorn, 1 worker; `verify_min_workers=1`,
   `verify_port_forward=false`). *API/tunnel time* is the union of the request intervals in the lab's
   `requests.log` (`ts` - `duration_ms` .. `ts`; a portforward WebSocket counts while open); *Ansible overhead* is
   wall minus that. Floor: a bare Python script replaying the same API calls in the same order (one keep-alive
   `requests` session; each portforward through the collection's tunnel with the probe's four HTTP requests).
   Interleaved with each verify run: the *Ansible floor* (tests/bench/floor.yml, `ansible-playbook` with one
   `kubernetes.core.k8s_info` task; goal: verify.yml <= 2x) and, when the checkout has it, the seed's six-step
   script (tests/bench/seed-test-script.sh, kubectl + curl; goal: verify.yml <= the script). *tasks executed*:
   from the JSON callback (a task whose host result is not skipped).
3. **Heal**: verify.yml on the seed's broken "Before" Deployment (`playbooks/files/seed-before.yml`: gunicorn
   `--timeout 120 --workers 2`, `--static-prefix=/static`), in a fresh namespace per run. A watcher polls for a new
   pod answering `GET /` with 200 and `<title>MLflow</title>`. *detection* = verify start -> the role has planned
   the remediation (end of the first `mlflow_verify` task, JSON callback); *patch* = then -> last write to the
   Deployment (request log; the patch role's own tasks); *rollout* = last write -> dashboard answers (new pod, MLflow
   start); *re-verify* = dashboard answers -> verify.yml exits (the role's wait and second round of checks).
   `total_s` = verify start -> dashboard answers. *MLflow rollout* = the watcher first sees the new pod -> it serves
   the dashboard; the goal is verify.yml's wall <= MLflow rollout + 10 s (*verify wall - MLflow rollout*).
4. **Fleet** (tests/bench/fleet_bench.py): `playbooks/fleet.yml` on the `asgard.mlflow.mlflow_servers` inventory over
   **two labs** (a second lab is started for it), N small healthy MLflows (uvicorn, one worker, half in each lab; N as
   many as fit: one pod's RSS is measured, 4 GiB stay available, at most `BENCH_FLEET_MAX`, default 8), with forks 1
   and N: wall time and controller CPU seconds per instance, the speed-up, the discovery (`ansible-inventory --list`)
   time; then what 500 instances across 20 clusters would take on AWX, computed from those (section below the table).
5. **Cost**: API requests per verify run (request log, grouped by path) and peak RSS of the controller side
   (ansible-playbook and all its descendants, sampled from /proc every 0.1 s).

Repetitions: `BENCH_WARMUP`, `BENCH_PROBE_RUNS`, `BENCH_PROBE_PLAYBOOK_RUNS`, `BENCH_VERIFY_RUNS`, `BENCH_HEAL_RUNS`,
`BENCH_FLEET_FORKS`, `BENCH_FLEET_RUNS`, `BENCH_FLEET_MAX`; `BENCH_SECTIONS` runs a subset.
`BENCH_OUT` (default `.bench`) and `BENCH_LAB_DIR` (default `$BENCH_OUT/lab`, wiped, started and stopped by the
run) move the output and the lab; `BENCH_DOC=none` leaves this page alone (for comparison runs).
kubernetes.core caches API discovery in `$TMPDIR`: the bench uses one fresh `.bench/tmp` per run, filled by the
warm-up.

## Latest results
"""


HISTORY_MARK = "## Before/after records"


def write_doc(results: dict, table_text: str) -> None:
    """Rewrite the page; the hand-kept section from HISTORY_MARK on (before/after of fixes) is carried over."""
    kept = ""
    if DOC.exists():
        old = DOC.read_text()
        if HISTORY_MARK in old:
            kept = old[old.index(HISTORY_MARK):]
    env = results["environment"]
    lines = [DOC_HEAD, f"Run {env['finished_at']} on {env['cpus']} CPUs, {env['mem_total_gib']} GiB, load average "
             f"{env['loadavg_start']} at start (shared machine); `make bench` took {env['duration_s']:.0f} s.\n",
             "```", table_text, "```", ""]
    if results.get("fleet"):
        import fleet_bench

        lines += fleet_bench.projection_markdown(results["fleet"])
    if results.get("findings"):
        lines += ["Findings (from this run):", ""] + [f"- {f}" for f in results["findings"]] + [""]
    if results.get("errors"):
        lines += ["Errors in this run:", ""] + [f"- {e[:600]}" for e in results["errors"]] + [""]
    DOC.write_text("\n".join(lines) + ("\n" + kept if kept else ""))


def main() -> int:
    t_start = time.monotonic()
    OUT.mkdir(parents=True, exist_ok=True)
    TMP.mkdir(parents=True, exist_ok=True)
    lab = bl.Lab(LAB_DIR)
    results: dict = {"environment": {
        "started_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "cpus": os.cpu_count(),
        "mem_total_gib": round(meminfo_kb("MemTotal") / 1048576, 1), "loadavg_start": round(os.getloadavg()[0], 2),
        "python": platform.python_version(), "image": bl.IMAGE,
        "repetitions": {"warmup": WARMUP, "probe": PROBE_RUNS, "probe_playbook": PROBE_PB_RUNS,
                        "verify": VERIFY_RUNS, "heal": HEAL_RUNS, "fleet": FLEET_RUNS}}}
    log(f"lab {lab.api}; deploying the healthy MLflow bench-0")
    bl.apply(lab, "bench-0", bl.healthy_objects("bench-0"))
    bl.wait_serving(lab, "bench-0")
    bl.wait_ready(lab, "bench-0")
    errors = []
    for name, fn in (("probe", bench_probe), ("verify", bench_verify), ("heal", bench_heal)):
        if name in SECTIONS:
            try:
                results[name] = fn(lab)
            except Exception as exc:  # noqa: BLE001 - one section failing must not lose the others
                errors.append(f"{name}: {exc}")
                log(f"{name} FAILED: {str(exc)[:2000]}")
    if "fleet" in SECTIONS:
        try:
            results["fleet"] = bench_fleet(lab, errors)
        except Exception as exc:  # noqa: BLE001
            errors.append(f"fleet: {exc}")
            log(f"fleet FAILED: {str(exc)[:2000]}")
    results["cost"] = {
        "api_requests_per_verify": (results.get("verify") or {}).get("api_requests", {}).get("median"),
        "requests_by_path": (results.get("verify") or {}).get("requests_by_path"),
        "controller_peak_rss_mb": max([(results.get("verify") or {}).get("controller_peak_rss_mb", {}).get("max", 0)]
                                      + [f["controller_peak_rss_mb"] for f in (results.get("fleet") or {}).get("points", [])]),
    }
    results["findings"] = findings_from(results)
    results["errors"] = errors
    results["environment"]["finished_at"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    results["environment"]["duration_s"] = round(time.monotonic() - t_start, 1)
    (OUT / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    text = render(table(results))
    print()
    print(text)
    p = results.get("probe")
    if p and not p["kubectl_port_forward"]["works"]:
        print("\nkubectl port-forward did not serve GET /health against the lab (the seed script's transport): "
              f"{p['kubectl_port_forward']['detail'][:200]}")
    for f in results["findings"]:
        print(f"finding: {f}")
    for e in errors:
        print(f"ERROR: {e[:500]}")
    if DOC is not None:
        write_doc(results, text)
    print(f"\nresults: {OUT / 'results.json'}; doc: {DOC or 'not written (BENCH_DOC=none)'}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
