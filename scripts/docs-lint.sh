#!/usr/bin/env bash
# Documentation lint for the collection: every plugin and role renders with ansible-doc, and
# antsibull-docs accepts the collection (plugin docs schema, markup, references, RST generation).
# Plugins and roles are discovered, not listed, so whatever lands under plugins/ or roles/ is covered.
#   scripts/docs-lint.sh            all checks
#   SKIP_ANTSIBULL=1 scripts/docs-lint.sh   ansible-doc checks only (a few seconds)
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
bin=${VENV_BIN:-$root/.venv/bin}
export PATH="$bin:$PATH" ANSIBLE_CONFIG="$root/ansible.cfg" ANSIBLE_NOCOLOR=1 ANSIBLE_DEPRECATION_WARNINGS=0
coll=$root/.collections/ansible_collections/asgard/mlflow
[ -e "$coll/galaxy.yml" ] || { echo "docs-lint: $coll is missing; run make setup" >&2; exit 2; }
failed=0
fail() { echo "docs-lint: FAIL $*"; failed=1; }

# ---- ansible-doc: every plugin of every type, every role
types=()
for dir in plugins/*/; do
  t=$(basename "$dir")
  case $t in module_utils|doc_fragments|plugin_utils) continue ;; modules) t=module ;; esac
  types+=("$t")
done
for t in "${types[@]}"; do
  list=$(ansible-doc -t "$t" -l asgard.mlflow --json 2>/dev/null) || { fail "ansible-doc -t $t -l asgard.mlflow"; continue; }
  mapfile -t names < <(printf '%s' "$list" | "$bin/python" -c 'import json,sys; [print(k) for k in sorted(json.load(sys.stdin))]')
  if [ ${#names[@]} -eq 0 ]; then
    # a plugins/<type>/ directory with files but nothing ansible-doc can see is a failure too
    if ls "plugins/$( [ "$t" = module ] && echo modules || echo "$t")"/*.py >/dev/null 2>&1; then fail "-t $t: no plugin of asgard.mlflow found"; fi
    continue
  fi
  # One call for all (fast when everything is fine), then one per plugin to name the broken ones.
  if ansible-doc -t "$t" "${names[@]}" >/dev/null 2>&1; then
    echo "docs-lint: ok ansible-doc -t $t: ${#names[@]} plugin(s): ${names[*]}"
  else
    for n in "${names[@]}"; do
      if ! err=$(ansible-doc -t "$t" "$n" 2>&1 >/dev/null); then fail "ansible-doc -t $t $n: $(echo "$err" | grep -m1 -E 'ERROR' || echo "$err" | tail -1)"; fi
    done
  fi
done
roles=()
for r in roles/*/; do roles+=("$(basename "$r")"); done
for r in "${roles[@]}"; do
  [ -f "roles/$r/meta/argument_specs.yml" ] || [ -f "roles/$r/meta/argument_specs.yaml" ] \
    || { fail "role $r has no meta/argument_specs.yml (ansible-doc -t role shows nothing)"; continue; }
  out=$(ansible-doc -t role "asgard.mlflow.$r" 2>&1) || { fail "ansible-doc -t role asgard.mlflow.$r: $(echo "$out" | grep -m1 ERROR)"; continue; }
  grep -qE "ENTRY POINT: \*?main\*?( |$)" < <(sed 's/\x1b\[[0-9;]*m//g' <<<"$out") || { fail "ansible-doc -t role asgard.mlflow.$r has no 'main' entry point"; continue; }
  echo "docs-lint: ok ansible-doc -t role asgard.mlflow.$r"
done

# ---- antsibull-docs: schema, markup, references and RST generation of every plugin and role
if [ -z "${SKIP_ANTSIBULL:-}" ]; then
  # antsibull-docs copies the collection and its dependencies with `git ls-files` when they sit in a
  # git work tree; kubernetes.core lives in .venv (ignored by git), so stop git discovery above it.
  sp=$("$bin/python" -c 'import os, ansible_collections.kubernetes.core as k; print(os.path.dirname(os.path.dirname(k.__path__[0])))')
  if out=$(GIT_CEILING_DIRECTORIES="$sp" antsibull-docs lint-collection-docs --plugin-docs "$coll" 2>&1); then
    echo "docs-lint: ok antsibull-docs lint-collection-docs --plugin-docs"
  else
    echo "$out" | sed "s#^$coll/##; s#^\.collections/ansible_collections/asgard/mlflow/##"
    fail "antsibull-docs lint-collection-docs --plugin-docs ($(echo "$out" | grep -c .) message(s))"
  fi
fi
[ $failed -eq 0 ] && echo "docs-lint: all documentation renders" || echo "docs-lint: documentation problems above"
exit $failed
