#!/usr/bin/env bash
# `make demo`: the seed incident, start to finish, on the local lab.
#   1 lab up  2 deploy the seed's broken MLflow  3 show the dashboard failing (404 on /)
#   4 playbooks/verify.yml finds and heals it  5 the "After" table  6 the dashboard on 127.0.0.1:5000 and
#   through the Ingress mlflow-ingress (the seed's "Option 3", the lab's nginx)
# Environment: DEMO_NAMESPACE (asgard), DEMO_PORT (5000).
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
export PATH="$REPO/.venv/bin:$PATH" PYTHONPATH="$REPO/tests/lab" ANSIBLE_CONFIG="$REPO/ansible.cfg"
export KUBECONFIG="$REPO/.lab/kubeconfig" ANSIBLE_NOCOLOR=1 ANSIBLE_DEPRECATION_WARNINGS=0
NS=${DEMO_NAMESPACE:-asgard}
PORT=${DEMO_PORT:-5000}
OUT="$REPO/.lab/demo"
mkdir -p "$OUT"
# kubernetes.core caches API discovery in $TMPDIR: one cache per demo run
export TMPDIR="$OUT/tmp"
rm -rf "$TMPDIR" && mkdir -p "$TMPDIR"
URL="http://127.0.0.1:$PORT"
INGRESS_HOST=mlflow.asgard.example  # playbooks/files/seed-ingress.yml
T0=$SECONDS

stage() { echo; echo "==== [$1/6] $2"; }
fail() {
  echo
  echo "DEMO FAILED at stage $1: $2" >&2
  echo "  next: $3" >&2
  echo "  logs: $OUT/*.log, lab log .lab/lab.log; stop everything: make lab-down" >&2
  exit 1
}
http_code() { curl -s -o "$OUT/body.html" -w '%{http_code}' --max-time 10 "$@" || echo "000"; }
# the lab's ingress controller (nginx) publishes its address in .lab/ingress.json; clients pick the host by header
ingress_url() { python -c 'import json, sys; print(json.load(open(sys.argv[1]))["http"])' "$REPO/.lab/ingress.json"; }

stage 1 "Lab: a local Kubernetes API with a kubelet running real MLflow processes"
python -m asgardlab --state-dir "$REPO/.lab" up || fail 1 "the lab did not start" \
  "run 'make lab-status' and read .lab/lab.log (the lab needs root for network namespaces)"
[ -s "$KUBECONFIG" ] || fail 1 "no $KUBECONFIG" "run 'make lab-down' then 'make demo' again"

stage 2 "Deploy MLflow with the seed's 'Before' settings (gunicorn --timeout 120 --workers 2, --static-prefix=/static)"
echo "     manifest: playbooks/files/seed-before.yml (namespace $NS)"
ansible-playbook playbooks/demo.yml -e "demo_namespace=$NS" >"$OUT/deploy.log" 2>&1 \
  || { tail -30 "$OUT/deploy.log"; fail 2 "the broken MLflow was not deployed" "read $OUT/deploy.log"; }
sed -n '/What a user sees/,/PLAY RECAP/p' "$OUT/deploy.log" | grep -E "health|dashboard|findings" | sed 's/^ *-* */     /'

stage 3 "Show the dashboard failing through a port-forward on $URL"
ansible localhost -m asgard.mlflow.port_forward -a "namespace=$NS service=mlflow-service remote_port=5000 local_port=$PORT cleanup=true" \
  >"$OUT/port-forward.log" 2>&1 \
  || { tail -20 "$OUT/port-forward.log"; fail 3 "the port-forward did not start" \
       "free port $PORT (the message above names the process holding it) or run DEMO_PORT=5001 make demo"; }
code=$(http_code "$URL/")
echo "     GET $URL/        -> $code   (the seed: '404 Error' on the dashboard)"
echo "     GET $URL/static/ -> $(http_code "$URL/static/")   (the UI hides under the prefix)"
[ "$code" = "404" ] || echo "     (expected 404: the demo continues, verify will say what it finds)"
ING=$(ingress_url)
echo "     GET $ING/ Host: $INGRESS_HOST (Ingress mlflow-ingress) -> $(http_code -H "Host: $INGRESS_HOST" "$ING/")" \
  "  (the seed's 'Option 3': MLflow refuses the host)"

stage 4 "playbooks/verify.yml: pod status, logs, Service, health; remediation; checks again"
t=$SECONDS
ansible-playbook playbooks/verify.yml -e "verify_namespace=$NS" -e verify_port_forward=true \
  -e "verify_port_forward_local_port=$PORT" -e "verify_report_path=$OUT/verify-report.json" \
  -e "verify_markdown_report_path=$OUT/incident-report.md" >"$OUT/verify.log" 2>&1
rc=$?
HEAL=$((SECONDS - t))
if [ -s "$OUT/verify-report.json" ]; then
  python - "$OUT/verify-report.json" <<'PY'
import json, sys
rep = json.load(open(sys.argv[1]))
print(f"     status: {rep['status'].upper()}")
for st in rep["steps"]:
    was = f" (was {st['before']})" if st.get("before") and st["before"] != st["status"] else ""
    codes = f" [{', '.join(st['findings'])}]" if st["findings"] else ""
    print(f"     [{st['status']:>7}] {st['title']}: {st['summary']}{was}{codes}")
for f in rep["findings_before"]:
    if f["severity"] != "info":
        print(f"     found:      {f['severity']:8} {f['code']}: {f['message'][:110]}")
for r in rep["remediated"]:
    state = "FAILED" if r.get("failed") else ("changed" if r.get("changed") else "no change")
    print(f"     remediated: {r['action']} ({state}) for {', '.join(r.get('reason', []))}")
for f in rep["remaining"]:
    print(f"     remaining:  {f['severity']:8} {f['code']}: {f['message'][:110]}")
for n in rep["next_steps"]:
    print(f"     next step:  {n}")
PY
fi
[ $rc -eq 0 ] || fail 4 "verify.yml did not heal MLflow (rc=$rc)" \
  "read the remaining findings and next steps in $OUT/verify.log and $OUT/incident-report.md"
echo "     verify.yml wall time: ${HEAL} s"

stage 5 "Before vs After (measured by verify, from $OUT/verify-report.json)"
python - "$OUT/verify-report.json" <<'PY'
import json, sys
rep = json.load(open(sys.argv[1]))
rows = [["Metric", "Before", "After", "Change"]] + [[r["metric"], r["before"], r["after"], r["change"]]
                                                   for r in rep["before_after"]]
w = [max(len(str(r[i])) for r in rows) for i in range(4)]
for n, r in enumerate(rows):
    print("     | " + " | ".join(str(c).ljust(w[i]) for i, c in enumerate(r)) + " |")
    if n == 0:
        print("     |" + "|".join("-" * (x + 2) for x in w) + "|")
PY

stage 6 "The dashboard on $URL"
ok=0
for _ in $(seq 1 20); do
  code=$(http_code "$URL/")
  if [ "$code" = "200" ] && grep -q "<title>MLflow</title>" "$OUT/body.html"; then ok=1; break; fi
  sleep 1
done
[ $ok -eq 1 ] || fail 6 "GET $URL/ answered $code, not the MLflow UI" \
  "ansible-playbook playbooks/verify.yml -e verify_namespace=$NS (steps 5-6 restart the forward)"
echo "     GET $URL/        -> 200 <title>MLflow</title>"
echo "     GET $URL/health  -> $(http_code "$URL/health") $(cat "$OUT/body.html")"
for _ in $(seq 1 20); do  # nginx reloads within a second of the healed Ingress
  code=$(http_code -H "Host: $INGRESS_HOST" "$ING/")
  grep -q "<title>MLflow</title>" "$OUT/body.html" && break
  code="$code (no MLflow title)"
  sleep 1
done
echo "     GET $ING/ Host: $INGRESS_HOST (Ingress mlflow-ingress) -> $code"
[ "${code%% *}" = "200" ] || fail 6 "the dashboard through the Ingress answered $code" \
  "read the ingress step in $OUT/verify-report.json (kubectl get ingress -n $NS mlflow-ingress -o yaml)"
echo
echo "Done in $((SECONDS - T0)) s. Open $URL/ in a browser (the forward survives pod restarts)."
echo "Reports: $OUT/verify-report.json, $OUT/incident-report.md"
echo "Stop everything:"
echo "  ansible localhost -m asgard.mlflow.port_forward -a 'state=absent local_port=$PORT'   # the port-forward"
echo "  make lab-down                                                                  # the lab and every pod"
