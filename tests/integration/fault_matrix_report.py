"""Collects the fault matrix results (tests/integration/test_fault_matrix.py) and writes docs/fault-matrix.md.

Each row is recorded by the test itself after its assertions passed, so a row in the table is a passing case; a
failing case records nothing. At the end of a session:

- every case passed: the whole table is written from this session ("Last full run" moves);
- some cases passed (e.g. a ``-k`` re-run): their rows replace the same cases' rows of the committed table, the
  other rows keep their last results, and each row's "Ran (UTC)" column says when it last passed; the table is
  only rewritten when every case then has a row (nothing is invented for a case that never passed);
- no case passed: the table is left alone.

Under pytest-xdist each worker hands its rows to the controller (``handover``, through xdist's workeroutput), and
the controller writes the table once at the end (``take_over``, tests/conftest.py).

Rows are matched by the case id in the first column. A table written before that column existed is read by
position (its rows were in ``CASES`` order, all from its "Last full run").
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
REPORT = REPO / "docs" / "fault-matrix.md"
# every case of the matrix, in table order (test_fault_matrix.py, then test_fault_matrix_ingress.py)
CASES = ["worker_timeout", "static_prefix_404", "invalid_host_403", "liveness_kills", "crash_loop_bad_flag",
         "service_selector_mismatch", "service_links_mlflow", "schema_outdated_after_upgrade", "api_429_503_drop",
         "pod_deleted_mid_probe", "port_held_by_stale_kubectl", "port_held_by_unrelated_process",
         # issue 14: what an operator types is what happens
         "audit_typed_on_command_line", "two_verify_runs_at_once", "forward_retarget_to_a_typo",
         "sidecars_before_mlflow", "gunicorn_cmd_args_timeout",
         # issue 18: the production path (Ingress, TLS, basic auth)
         "ingress_body_size_413", "ingress_read_timeout_504", "ingress_host_not_allowed_403", "ingress_path_404",
         "ingress_tls_expired"]
HEADER = "| Case | Fault | Injected by | Finding | Detected by | Outcome | Store unchanged | Time (s) | Ran (UTC) |"
_OLD_HEADER = "| Fault | Injected by | Finding | Detected by | Outcome | Store unchanged | Time (s) |"
_FULL_RUN = re.compile(r"^Last full run: (?P<when>\d{4}-\d\d-\d\d \d\d:\d\d UTC)")


@dataclass
class Row:
    case: str
    fault: str
    injected_by: str
    finding: str
    detected_by: str
    outcome: str
    store: str
    seconds: float
    ran: str = ""


ROWS: dict[str, Row] = {}
STARTED = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")  # this session (import time)


def record(case: str, *, fault: str, injected_by: str, finding: str, detected_by: str, outcome: str,
           store: str, seconds: float) -> None:
    ROWS[case] = Row(case, fault, injected_by, finding, detected_by, outcome, store, round(seconds, 1), _now())


def handover(expected_cases: list[str]) -> dict:
    """This process's rows, for the pytest-xdist controller, which writes the table once (``take_over``)."""
    return {"cases": list(expected_cases), "started": STARTED, "rows": {c: asdict(r) for c, r in ROWS.items()}}


def take_over(parts: list[dict]) -> list[str]:
    """Rows the pytest-xdist workers handed over become this session's; returns the expected cases."""
    global STARTED
    for part in parts:
        ROWS.update({c: Row(**r) for c, r in part["rows"].items()})
    STARTED = min(p["started"] for p in parts)
    return parts[0]["cases"]


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _cells(line: str) -> list[str]:
    """The cells of a table line, unescaped (the inverse of _cell)."""
    inner = line.strip().removeprefix("|").removesuffix("|")
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", inner)]


def _line(r: Row) -> str:
    return (f"| `{r.case}` | {_cell(r.fault)} | {_cell(r.injected_by)} | {_cell(r.finding)} | {_cell(r.detected_by)} | "
            f"{_cell(r.outcome)} | {_cell(r.store)} | {r.seconds} | {r.ran} |")


def read(expected_cases: list[str], path: Path = REPORT) -> tuple[dict[str, Row], str]:
    """The rows of the committed table by case id, and its "Last full run" time ("" when there is none)."""
    if not path.exists():
        return {}, ""
    lines = path.read_text(encoding="utf-8").splitlines()
    full = next((m["when"] for m in map(_FULL_RUN.match, lines) if m), "")
    rows: dict[str, Row] = {}
    for i, line in enumerate(lines):
        if line.strip() not in (HEADER, _OLD_HEADER):
            continue
        body = []
        for ln in lines[i + 2:]:
            if not ln.startswith("|"):
                break
            body.append(ln)
        for k, ln in enumerate(body):
            c = _cells(ln)
            if line.strip() == HEADER and len(c) == 9:
                case, rest, ran = c[0].strip("`"), c[1:8], c[8]
            elif line.strip() == _OLD_HEADER and len(c) == 7 and len(body) == len(expected_cases):
                case, rest, ran = expected_cases[k], c, full
            else:
                continue
            rows[case] = Row(case, *rest[:6], float(rest[6]), ran)
        break
    return rows, full


def write(expected_cases: list[str], path: Path = REPORT) -> str:
    """Write the table; returns "full", "merged" (rows of this session replaced in the committed table) or ""
    (not written: nothing passed, or some case has no row either from this session or from the table)."""
    ran = [c for c in expected_cases if c in ROWS]
    if not ran:
        return ""
    kept, full_run = read(expected_cases, path)
    rows = {**kept, **ROWS}
    if any(c not in rows for c in expected_cases):
        return ""
    complete = len(ran) == len(expected_cases)
    if complete:
        full_run = STARTED
    total = sum(rows[c].seconds for c in expected_cases)
    stamp = f"Last full run: {full_run}" if full_run else "No full run recorded"
    rerun = sorted({rows[c].ran for c in expected_cases if rows[c].ran != full_run})
    lines = [
        "# Fault matrix",
        "",
        "Generated by `tests/integration/test_fault_matrix.py` (do not edit by hand): each row is one fault injected",
        "through the lab, the finding that detected it, what happened, and whether the backend store kept its",
        "experiments and runs (ids compared before and after, in the SQLite file on the PVC and, when a server",
        "answers, through its API). The store is seeded before the fault: one experiment and one run created",
        "through the pod IP, except `schema_outdated_after_upgrade`, whose store is written by MLflow 2.16.2.",
        "",
        f"{stamp}, {len(expected_cases)} cases, {total:.0f} s of test time (the sum of the rows below)."
        + (f" Rows re-run alone since then ({', '.join(rerun)}) show their own time in the Ran column."
           if rerun else ""),
        "",
        HEADER,
        "|---|---|---|---|---|---|---|---|---|",
        *(_line(rows[c]) for c in expected_cases),
        "",
        "Regenerate: `make lab-up && .venv/bin/pytest tests/integration/test_fault_matrix.py` (all rows), or",
        "`-k <test name>` to re-run some rows: their rows are replaced, the others keep their last results.",
        "",
    ]
    path.write_text("\n".join(lines), encoding="utf-8")
    return "full" if complete else "merged"


def finish_module(config) -> None:
    """End of a fault-matrix module: a pytest-xdist worker hands its rows over (the controller writes the table
    once, ``take_over``); a plain session writes the table (every case of ``CASES``)."""
    if hasattr(config, "workeroutput"):
        config.workeroutput["fault_matrix"] = handover(CASES)
        return
    how = write(CASES)
    if how:
        print(f"\nwrote {REPORT} ({how}: rows of this session {sorted(ROWS)})")
    else:
        print(f"\nfault matrix not rewritten ({REPORT}): rows of this session {sorted(ROWS)}")
