"""Where a run's CPU goes, from Linux process accounting (BSD acct, Debian package ``acct``).

    apt-get install acct; touch /tmp/pacct; accton /tmp/pacct
    make test                                   # or any command
    accton off; python tests/bench/cpu_budget.py /tmp/pacct

Prints the CPU seconds (user + sys, every descendant included) of each process tree, the trees under ``make``
by step (the children of scripts/test.sh), and two totals the suite's time depends on: ansible-playbook runs
(count, mean) and the MLflow server processes of the lab's pods. Accounting records a process when it exits,
in exit order, and pids wrap (pid_max is often 32768): a record's parent is the first later record that has its
ppid as pid (a parent is alive while its child exits). Processes still running when accounting stops are missing.
"""

from __future__ import annotations

import collections
import subprocess
import sys


def load(path: str) -> tuple[list[dict], list[int | None]]:
    out = subprocess.run(["dump-acct", path], capture_output=True, text=True, check=True).stdout
    recs = []
    for line in out.splitlines():
        f = [x.strip() for x in line.split("|")]
        recs.append({"cmd": f[0], "cpu": (float(f[2]) + float(f[3])) / 100.0, "wall": float(f[4]) / 100.0,
                     "pid": int(f[9]), "ppid": int(f[10])})
    parent: list[int | None] = [None] * len(recs)
    later: dict[int, int] = {}
    for i in range(len(recs) - 1, -1, -1):
        parent[i] = later.get(recs[i]["ppid"])
        later[recs[i]["pid"]] = i
    return recs, parent


def main(path: str) -> None:
    recs, parent = load(path)
    kids = collections.defaultdict(list)
    for i, p in enumerate(parent):
        kids[p].append(i)
    tree = [r["cpu"] for r in recs]
    for i in range(len(recs)):  # children exit first: one forward pass adds each subtree to its parent
        if parent[i] is not None:
            tree[parent[i]] += tree[i]

    def under(i: int) -> collections.Counter:
        c, todo = collections.Counter(), [i]
        while todo:
            j = todo.pop()
            c[recs[j]["cmd"]] += recs[j]["cpu"]
            todo += kids.get(j, [])
        return c

    def line(i: int, depth: int = 0) -> str:
        top = ", ".join(f"{k} {v:.0f}" for k, v in under(i).most_common(4))
        return f"{'  ' * depth}{recs[i]['cmd']} (pid {recs[i]['pid']}): {tree[i]:.0f} cpu-s, {recs[i]['wall']:.0f} s  [{top}]"

    total = sum(r["cpu"] for r in recs)
    print(f"all: {total:.0f} cpu-s ({total / 60:.1f} cpu-min) in {len(recs)} processes")
    for i in sorted(kids[None], key=lambda k: -tree[k]):
        if tree[i] >= 0.02 * total:
            print(line(i))
    makes = [i for i, r in enumerate(recs) if r["cmd"] == "make"]
    for m in makes:
        steps = [k for j in kids.get(m, []) for k in kids.get(j, [])]  # make -> bash scripts/test.sh -> steps
        if steps:
            print("steps of make:")
            for k in sorted(steps, key=lambda k: -tree[k]):
                if tree[k] >= 5:
                    print(line(k, 1))
    pb = [i for i, r in enumerate(recs) if r["cmd"] == "ansible-playboo"
          and (parent[i] is None or recs[parent[i]]["cmd"] != "ansible-playboo")]
    if pb:
        s = sum(tree[i] for i in pb)
        print(f"ansible-playbook runs: {len(pb)}, {s:.0f} cpu-s, mean {s / len(pb):.1f} cpu-s")
    mlflow = [r for r in recs if r["cmd"] in ("mlflow", "jemalloc_bg_thd", "gunicorn", "uvicorn")]
    if mlflow:
        s = sum(r["cpu"] for r in mlflow)
        print(f"MLflow server processes (mlflow CLI, uvicorn/gunicorn; 'jemalloc_bg_thd' is how their workers "
              f"exit): {len(mlflow)}, {s:.0f} cpu-s")


if __name__ == "__main__":
    main(sys.argv[1])
