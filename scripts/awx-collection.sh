#!/usr/bin/env bash
# Install the awx.awx collection (used only by examples/awx/, the AWX objects as code) into
# .collections/ansible_collections/awx/awx, where ansible.cfg's collections_path finds it.
# awx.awx left the `ansible` package in Ansible 14 and Galaxy is not reachable here, so it is taken from
# the last `ansible` wheel that ships it (Ansible 13.8.0 -> awx.awx 24.6.1), downloaded with pip
# (--no-deps, nothing is installed into .venv) and unpacked. Idempotent; fast when already there.
set -euo pipefail
cd "$(dirname "$0")/.."
source_pin=${AWX_SOURCE_PIN:-ansible==13.8.0}
want=${AWX_COLLECTION_VERSION:-24.6.1}
dest=.collections/ansible_collections/awx/awx
py=${PYTHON:-.venv/bin/python}
have=$("$py" -c 'import json,sys; print(json.load(open(sys.argv[1]))["collection_info"]["version"])' "$dest/MANIFEST.json" 2>/dev/null || true)
if [ "$have" = "$want" ]; then echo "awx-collection: awx.awx $want already in $dest"; exit 0; fi
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
echo "awx-collection: fetching awx.awx $want from the $source_pin wheel"
"$py" -m pip download -q --disable-pip-version-check --no-deps --only-binary :all: -d "$tmp" "$source_pin" 2>&1 \
  | grep -v '^WARNING: Location' || true
wheel=$(ls "$tmp"/*.whl 2>/dev/null | head -1)
[ -n "$wheel" ] || { echo "awx-collection: pip could not download $source_pin" >&2; exit 1; }
rm -rf "$dest" && mkdir -p "$(dirname "$dest")"
"$py" - "$wheel" "$dest" "$want" <<'PY'
import json, pathlib, sys, zipfile
wheel, dest, want = sys.argv[1], pathlib.Path(sys.argv[2]), sys.argv[3]
prefix = "ansible_collections/awx/awx/"
with zipfile.ZipFile(wheel) as zf:
    members = [m for m in zf.namelist() if m.startswith(prefix) and not m.endswith("/")]
    if not members:
        sys.exit(f"awx-collection: {wheel} has no {prefix}")
    for m in members:
        target = dest / m[len(prefix):]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(zf.read(m))
got = json.loads((dest / "MANIFEST.json").read_text())["collection_info"]["version"]
if got != want:
    sys.exit(f"awx-collection: the wheel has awx.awx {got}, expected {want} (AWX_COLLECTION_VERSION)")
print(f"awx-collection: awx.awx {got} installed in {dest} ({len(members)} files)")
PY
