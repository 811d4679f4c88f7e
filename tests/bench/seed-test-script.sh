#!/usr/bin/env bash
# The seed incident's test script (shared/reference seed-incident-report.md: "Test Script Created" and "Manual
# Verification"), written out: the six checks an operator ran by hand, with kubectl and curl only.
#   1. pod status            kubectl get pods -l app=mlflow: a Running pod whose containers are all ready
#   2. log scan              kubectl logs <pod> --tail=30: no WORKER TIMEOUT, ERROR or CRITICAL
#   3. service connectivity  kubectl get svc and its endpoints: at least one ready address
#   4. old port-forwards     a `kubectl port-forward` listening on 127.0.0.1:$PORT is stopped (anything else there
#                            is left alone and fails the step)
#   5. new port-forward      kubectl port-forward svc/$SERVICE $PORT:$SERVICE_PORT in the background, until it prints
#                            "Forwarding from 127.0.0.1:$PORT"
#   6. health and dashboard  curl /health answers OK, / contains <title>MLflow</title>
# Environment: NAMESPACE (asgard), SERVICE (mlflow-service), PORT (5000), SERVICE_PORT (5000), SELECTOR (app=mlflow),
# KUBECONFIG (kubectl's), PF_LOG (where kubectl port-forward writes; default $TMPDIR/seed-port-forward-$PORT.log),
# CURL_TIMEOUT (60 s per request: a gunicorn whose workers are still importing MLflow answers late).
# Exit status: 0, or the number of the first step that failed (its reason on stderr). Like the seed's script it leaves
# the port-forward running (step 5 prints its pid); the next run stops it in step 4.
set -uo pipefail

NAMESPACE=${NAMESPACE:-asgard}
SERVICE=${SERVICE:-mlflow-service}
PORT=${PORT:-5000}
SERVICE_PORT=${SERVICE_PORT:-5000}
SELECTOR=${SELECTOR:-app=mlflow}
PF_LOG=${PF_LOG:-${TMPDIR:-/tmp}/seed-port-forward-$PORT.log}
CURL_TIMEOUT=${CURL_TIMEOUT:-60}
URL="http://127.0.0.1:$PORT"

step() { echo "== step $1: $2"; }
fail() { echo "FAIL step $1: $2" >&2; exit "$1"; }
k() { kubectl -n "$NAMESPACE" "$@"; }

# pids listening on 127.0.0.1:$PORT (ss from iproute2, else lsof)
listeners() {
  if command -v ss >/dev/null; then
    ss -Hltnp "( sport = :$PORT )" | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u
  else
    lsof -nP -t -iTCP:"$PORT" -sTCP:LISTEN 2>/dev/null | sort -u
  fi
}

step 1 "pod status (kubectl get pods -l $SELECTOR)"
k get pods -l "$SELECTOR" || fail 1 "kubectl get pods failed"
POD=$(k get pods -l "$SELECTOR" -o jsonpath='{range .items[*]}{.metadata.name}{"\t"}{.status.phase}{"\t"}{.metadata.deletionTimestamp}{"\t"}{.status.containerStatuses[*].ready}{"\n"}{end}' \
      | awk -F'\t' '$2 == "Running" && $3 == "" && $4 != "" && $4 !~ /false/ { print $1; exit }')
[ -n "$POD" ] || fail 1 "no Running pod with all containers ready for $SELECTOR in namespace $NAMESPACE"
echo "pod $POD is Running and ready"

step 2 "log scan (kubectl logs $POD --tail=30)"
LOGS=$(k logs "$POD" --tail=30) || fail 2 "kubectl logs $POD failed"
BAD=$(grep -E 'WORKER TIMEOUT|ERROR|CRITICAL' <<<"$LOGS")
[ -z "$BAD" ] || fail 2 "the last 30 log lines of $POD show errors:"$'\n'"$BAD"
echo "no WORKER TIMEOUT, ERROR or CRITICAL in the last 30 lines"

step 3 "service connectivity (kubectl get svc $SERVICE, endpoints)"
k get svc "$SERVICE" || fail 3 "Service $SERVICE not found in namespace $NAMESPACE"
ADDRS=$(k get endpoints "$SERVICE" -o jsonpath='{.subsets[*].addresses[*].ip}') || fail 3 "kubectl get endpoints $SERVICE failed"
[ -n "$ADDRS" ] || fail 3 "Service $SERVICE has no ready endpoints (selector matches no ready pod)"
echo "endpoints: $ADDRS"

step 4 "clean up old port-forwards on 127.0.0.1:$PORT"
for pid in $(listeners); do
  cmd=$(tr '\0' ' ' </proc/"$pid"/cmdline 2>/dev/null)
  case "$cmd" in
    *kubectl*port-forward*)
      kill "$pid" 2>/dev/null
      for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && fail 4 "old kubectl port-forward pid $pid did not stop"
      echo "stopped old kubectl port-forward pid $pid ($cmd)" ;;
    *) fail 4 "127.0.0.1:$PORT is held by pid $pid ($cmd), not a kubectl port-forward: stop it or pick another PORT" ;;
  esac
done

step 5 "kubectl port-forward svc/$SERVICE $PORT:$SERVICE_PORT"
kubectl -n "$NAMESPACE" port-forward --address 127.0.0.1 "svc/$SERVICE" "$PORT:$SERVICE_PORT" </dev/null >"$PF_LOG" 2>&1 &
PF=$!
for _ in $(seq 300); do
  grep -q "^Forwarding from 127.0.0.1:$PORT " "$PF_LOG" && break
  kill -0 "$PF" 2>/dev/null || fail 5 "kubectl port-forward exited: $(cat "$PF_LOG")"
  sleep 0.1
done
grep -q "^Forwarding from 127.0.0.1:$PORT " "$PF_LOG" || fail 5 "kubectl port-forward did not start in 30 s: $(cat "$PF_LOG")"
echo "kubectl port-forward pid $PF forwarding $URL -> svc/$SERVICE:$SERVICE_PORT (log $PF_LOG)"

step 6 "health and dashboard through $URL"
BODY=$(curl -sS -m "$CURL_TIMEOUT" -w '\n%{http_code}' "$URL/health") || fail 6 "curl $URL/health failed"
[ "$(tail -n1 <<<"$BODY")" = 200 ] && [ "$(head -n1 <<<"$BODY")" = OK ] \
  || fail 6 "/health answered $(tail -n1 <<<"$BODY") '$(head -n1 <<<"$BODY" | cut -c1-80)', expected 200 OK"
echo "/health: OK"
PAGE=$(curl -sS -m "$CURL_TIMEOUT" "$URL/") || fail 6 "curl $URL/ failed"
grep -q '<title>MLflow</title>' <<<"$PAGE" || fail 6 "$URL/ has no <title>MLflow</title> (the dashboard)"
echo "/: <title>MLflow</title>"
echo "all 6 steps passed; dashboard on $URL (kubectl port-forward pid $PF)"
