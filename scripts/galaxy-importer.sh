#!/usr/bin/env bash
# Run galaxy-importer (what Galaxy / Automation Hub run on upload) on the collection tarball, offline and
# without docker: build the tarball like `make build`, then `python -m galaxy_importer.main <tarball>`
# with a config that skips ansible-test (it would need a container) and runs ansible-doc + ansible-lint.
# Prints the importer's messages; exits non-zero when it reports an error or a warning
# (set GALAXY_IMPORTER_ALLOW_WARNINGS=1 to fail on errors only). One warning is expected and tolerated:
# "Ignore files skip ansible-test sanity tests, found ignore-X.Y.txt with N statement(s)" (Galaxy prints it for
# any non-empty tests/sanity/ignore-*.txt; the entries are reviewed there, each with its reason).
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
bin=${VENV_BIN:-$root/.venv/bin}
export PATH="$bin:$PATH"
out=.build/importer
rm -rf "$out" && mkdir -p "$out"
"$bin/ansible-galaxy" collection build --force --output-path "$out" . >/dev/null || { echo "galaxy-importer: build failed" >&2; exit 2; }
tarball=$(ls "$out"/asgard-mlflow-*.tar.gz)
cfg=$out/galaxy-importer.cfg
cat > "$cfg" <<CFG
[galaxy-importer]
run_ansible_test = False
ansible_test_local_image = False
local_image_docker = False
run_ansible_doc = True
run_ansible_lint = True
offline_ansible_lint = True
run_flake8 = False
check_changelog = True
check_required_tags = False
require_v1_or_greater = False
log_level_main = INFO
tmp_root_dir = $root/$out
ansible_local_tmp = $root/$out/ansible-tmp
CFG
log=$out/importer.log
t0=$SECONDS
# Not the repo's ansible.cfg (collections_path .collections): the importer unpacks the tarball in its own tree.
(cd "$out" && env -u ANSIBLE_CONFIG GALAXY_IMPORTER_CONFIG="$root/$cfg" "$bin/python" -m galaxy_importer.main \
   "$root/$tarball") >"$log" 2>&1
rc=$?
cat "$log"
echo "galaxy-importer: exit $rc in $((SECONDS - t0)) s; result in $out/importer_result.json (if written)"
[ $rc -eq 0 ] || exit 1
if grep -qE '^(ERROR|CRITICAL)' "$log"; then exit 1; fi
warnings=$(grep -E '^WARNING' "$log" | grep -vE '^WARNING: Ignore files skip ansible-test sanity tests, found ignore-[0-9.]+\.txt with [0-9]+ statement' || true)
if [ -z "${GALAXY_IMPORTER_ALLOW_WARNINGS:-}" ] && [ -n "$warnings" ]; then
  echo "galaxy-importer: FAIL, unexpected warning(s):"; echo "$warnings"; exit 1
fi
echo "galaxy-importer: PASS"
exit 0
