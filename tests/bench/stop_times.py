"""How long MLflow pods take to stop, in each form the collection meets (not part of `make bench`).

    PYTHONPATH=tests/lab .venv/bin/python tests/bench/stop_times.py --state-dir .lab [--runs 1] [--forms a,b]

Against a running lab (run it in the lab's network namespace). For every form it creates a one-replica
Deployment (strategy Recreate, as the seed and the deploy role with SQLite use; terminationGracePeriodSeconds
unset = 30 s unless --grace), waits until MLflow answers /health, then measures
- delete: DELETE of the pod -> every process of its container gone (and -> the pod object gone);
- rollout: a pod template change (an annotation) -> the rollout complete (observedGeneration, one updated and
  available replica, no old pod left), what `kubectl rollout status` and kubernetes.core `wait: true` wait for.
It also records which process is PID 1 in the container (the one the kubelet's SIGTERM reaches).
Prints a Markdown table and writes JSON (--out).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "lab"))

import benchlab as bl  # noqa: E402
from asgardlab.kubelet.testing import tagged_processes  # noqa: E402

V3, V2 = "ghcr.io/mlflow/mlflow:v3.17.2", "ghcr.io/mlflow/mlflow:v2.22.5"
SERVER = "mlflow server --host=0.0.0.0 --port=5000 --backend-store-uri=sqlite:////mlflow/mlflow.db --workers=2"
GUNICORN = "--gunicorn-opts=--timeout 120"

# name -> (image, command, description)
FORMS: dict[str, tuple[str, list[str], str]] = {
    "uvicorn": (V3, [*SERVER.split()], "3.17.2 `mlflow server` as the command (uvicorn)"),
    "gunicorn": (V3, [*SERVER.split(), GUNICORN], "3.17.2 `mlflow server --gunicorn-opts=...` as the command"),
    "v2": (V2, [*SERVER.split()], "2.22.5 `mlflow server` as the command (gunicorn)"),
    "sh-gunicorn": (V3, ["/bin/sh", "-c", f'{SERVER} "{GUNICORN}"'], "3.17.2 `/bin/sh -c \"mlflow server ... --gunicorn-opts=...\"` (the seed)"),
    "sh-exec-gunicorn": (V3, ["/bin/sh", "-c", f'exec {SERVER} "{GUNICORN}"'], "3.17.2 `/bin/sh -c \"exec mlflow server ... --gunicorn-opts=...\"`"),
    "sh-uvicorn": (V3, ["/bin/sh", "-c", SERVER], "3.17.2 `/bin/sh -c \"mlflow server ...\"` (uvicorn)"),
    "sh-exec-uvicorn": (V3, ["/bin/sh", "-c", f"exec {SERVER}"], "3.17.2 `/bin/sh -c \"exec mlflow server ...\"` (uvicorn)"),
    "bash-gunicorn": (V3, ["/bin/bash", "-c", f'{SERVER} "{GUNICORN}"'], "3.17.2 `/bin/bash -c \"mlflow server ...\"` (bash execs a lone command)"),
    "sh-exec-v2": (V2, ["/bin/sh", "-c", f"exec {SERVER}"], "2.22.5 `/bin/sh -c \"exec mlflow server ...\"`"),
}


def deployment(name: str, image: str, command: list[str], grace: int | None) -> dict:
    spec = {"containers": [{
        "name": "mlflow", "image": image, "command": command,
        "env": [{"name": "MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "value": "false"}],
        "ports": [{"containerPort": 5000}],
        "readinessProbe": {"httpGet": {"path": "/health", "port": 5000}, "periodSeconds": 1},
        "volumeMounts": [{"name": "data", "mountPath": "/mlflow"}]}],
        "volumes": [{"name": "data", "emptyDir": {}}]}
    if grace is not None:
        spec["terminationGracePeriodSeconds"] = grace
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": 1, "strategy": {"type": "Recreate"}, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": spec}}}


def until(fn, timeout: float, what: str, interval: float = 0.1):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = fn()
        if v:
            return v
        time.sleep(interval)
    raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")


def serving(lab: bl.Lab, ns: str, name: str) -> dict | None:
    for p in lab.pods(ns, f"app={name}"):
        ip = (p.get("status") or {}).get("podIP")
        cs = (p.get("status") or {}).get("containerStatuses") or []
        if ip and cs and cs[0].get("ready"):
            try:
                if bl.http_get(ip, "/health", timeout=2)[0] == 200:
                    return p
            except OSError:
                pass
    return None


def pid1(container_id: str) -> str:
    for pid, cmd in tagged_processes(container_id):
        try:
            with open(f"/proc/{pid}/status") as fh:
                nspid = next(line for line in fh if line.startswith("NSpid:")).split()
        except (OSError, StopIteration):
            continue
        if nspid[-1] == "1":
            argv = cmd.split()
            exe = Path(argv[0]).name if argv else "?"
            if exe.startswith("python") and len(argv) > 1:  # a console script: python /venv/bin/mlflow server ...
                return f"{Path(argv[1]).name} ({exe})"
            return f"{exe} {argv[1]}" if len(argv) > 1 and argv[1] == "-c" else exe
    return "?"


def rolled_out(lab: bl.Lab, ns: str, name: str) -> bool:
    d = lab.get(f"/apis/apps/v1/namespaces/{ns}/deployments/{name}")
    st = d.get("status") or {}
    return (st.get("observedGeneration") == d["metadata"]["generation"] and st.get("updatedReplicas") == 1
            and st.get("availableReplicas") == 1 and st.get("replicas") == 1)


def measure(lab: bl.Lab, form: str, runs: int, grace: int | None) -> dict:
    image, command, _ = FORMS[form]
    ns = f"stop-{form}-{uuid.uuid4().hex[:6]}"
    name = "mlflow"
    lab.ensure_namespace(ns)
    lab.create(f"/apis/apps/v1/namespaces/{ns}/deployments", deployment(name, image, command, grace))
    out: dict = {"form": form, "delete_gone": [], "delete_api": [], "rollout": [], "pid1": None}
    try:
        for i in range(runs):
            p = until(lambda: serving(lab, ns, name), 300, f"{form}: MLflow serving")
            cid = p["status"]["containerStatuses"][0]["containerID"].split("://")[1]
            out["pid1"] = pid1(cid)
            pname = p["metadata"]["name"]
            t0 = time.monotonic()
            lab.request("DELETE", f"/api/v1/namespaces/{ns}/pods/{pname}").raise_for_status()
            api = gone = None
            while api is None or gone is None:
                now = time.monotonic() - t0
                if api is None and lab.request("GET", f"/api/v1/namespaces/{ns}/pods/{pname}").status_code == 404:
                    api = now
                if gone is None and not tagged_processes(cid):
                    gone = now
                if now > 120:
                    raise RuntimeError(f"{form}: pod {pname} or its processes still there 120 s after the delete")
                time.sleep(0.1)
            out["delete_gone"].append(round(gone, 2))
            out["delete_api"].append(round(api, 2))
            until(lambda: serving(lab, ns, name), 300, f"{form}: the replacement pod serving")
            until(lambda: rolled_out(lab, ns, name), 60, f"{form}: deployment settled")
            t0 = time.monotonic()
            patch = {"spec": {"template": {"metadata": {"annotations": {"bench/run": f"{i}-{uuid.uuid4().hex[:4]}"}}}}}
            lab.request("PATCH", f"/apis/apps/v1/namespaces/{ns}/deployments/{name}", data=json.dumps(patch),
                        headers={"Content-Type": "application/strategic-merge-patch+json"}).raise_for_status()
            time.sleep(0.2)
            until(lambda: rolled_out(lab, ns, name), 300, f"{form}: rollout")
            out["rollout"].append(round(time.monotonic() - t0, 2))
            print(f"[stop-times] {form} run {i + 1}: delete->gone {gone:.2f}s (API {api:.2f}s), rollout {out['rollout'][-1]:.2f}s, PID 1: {out['pid1']}",
                  flush=True)
    finally:
        lab.delete_namespace(ns)
        lab.wait_namespace_gone(ns, 120)
    return out


def med(xs: list[float]) -> str:
    if not xs:
        return "-"
    return f"{statistics.median(xs):.1f}" + (f" ({min(xs):.1f}-{max(xs):.1f})" if len(xs) > 1 else "")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--state-dir", default=".lab")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--grace", type=int, default=None, help="terminationGracePeriodSeconds (default: unset = 30)")
    ap.add_argument("--forms", default=",".join(FORMS), help=f"comma list of: {', '.join(FORMS)}")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args()
    forms = [f.strip() for f in args.forms.split(",") if f.strip()]
    for f in forms:
        if f not in FORMS:
            ap.error(f"--forms: unknown form {f!r} (known: {', '.join(FORMS)})")
    lab = bl.Lab(Path(args.state_dir).resolve())
    results = [measure(lab, f, args.runs, args.grace) for f in forms]
    print(f"\ngrace period: {args.grace if args.grace is not None else '30 (default)'} s; median (min-max) of {args.runs} run(s)\n")
    print("| form | PID 1 in the container | delete -> processes gone (s) | delete -> pod gone (s) | rollout, Recreate (s) |")
    print("|---|---|---|---|---|")
    for r in results:
        print(f"| {FORMS[r['form']][2]} | `{r['pid1']}` | {med(r['delete_gone'])} | {med(r['delete_api'])} | {med(r['rollout'])} |")
    if args.out:
        Path(args.out).write_text(json.dumps({"grace": args.grace, "runs": args.runs, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
