#!/usr/bin/env python3
# Copyright: (c) 2026, asgard.mlflow contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Generate the documentation tables that have one source in the code: docs/verify.md's finding table from the
finding catalogue (plugins/module_utils/_findings.py).

    scripts/gen-docs.py           # rewrite the generated parts
    scripts/gen-docs.py --check   # exit 1 when a page differs from what the code says (CI, tests/repo/test_docs.py)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / ".collections"))

from ansible_collections.asgard.mlflow.plugins.module_utils._findings import docs_table  # noqa: E402

BEGIN = "<!-- BEGIN generated: finding catalogue (scripts/gen-docs.py from plugins/module_utils/_findings.py) -->"
END = "<!-- END generated: finding catalogue -->"
PAGES = {ROOT / "docs" / "verify.md": (BEGIN, END, docs_table)}


def render(text: str, begin: str, end: str, make) -> str:
    if begin not in text or end not in text:
        raise SystemExit(f"the page lacks the markers {begin!r} ... {end!r}")
    head, rest = text.split(begin, 1)
    _old, tail = rest.split(end, 1)
    return f"{head}{begin}\n{make()}\n{end}{tail}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only check; exit 1 when a page is out of date")
    args = ap.parse_args()
    stale = []
    for page, (begin, end, make) in PAGES.items():
        text = page.read_text(encoding="utf-8")
        new = render(text, begin, end, make)
        if new != text:
            stale.append(page.relative_to(ROOT))
            if not args.check:
                page.write_text(new, encoding="utf-8")
    if args.check and stale:
        print(f"out of date (run scripts/gen-docs.py): {', '.join(map(str, stale))}", file=sys.stderr)
        return 1
    print(("up to date: " if args.check or not stale else "rewrote: ") + ", ".join(
        map(str, stale or [p.relative_to(ROOT) for p in PAGES])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
