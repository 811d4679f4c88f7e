#!/usr/bin/env bash
# Debian packages the local lab needs beyond Python; run by scripts/setup.sh (so by `make setup` and every target
# that depends on it). CI starts from a fresh machine as root: this installs what is missing there.
#
# - nginx: the data plane of the lab's ingress controller and Gateway API (tests/lab/asgardlab/ingress). Only the
#   /usr/sbin/nginx binary is used: each lab runs its own nginx under <state>/ingress/ as a child of the lab server.
#   The package's system service is not started by the install (a temporary policy-rc.d denies it) and is
#   disabled where systemd runs, so nothing listens on port 80.
#
# Not root, or no apt-get: print what is missing and carry on (lint, unit tests and sanity do not need it; the lab
# refuses to start and says what to install).
set -euo pipefail
pkgs=(nginx)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "system-packages: ${pkgs[*]} installed"
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "system-packages: missing Debian package(s) ${missing[*]} (the local lab's ingress controller runs nginx);" \
       "install as root: apt-get install -y --no-install-recommends ${missing[*]}" >&2
  exit 0
fi
echo "system-packages: installing ${missing[*]} (apt-get)"
policy=/usr/sbin/policy-rc.d
own_policy=false
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\n# scripts/system-packages.sh: no service starts during this install\nexit 101\n' > "$policy"
  chmod 755 "$policy"
  own_policy=true
fi
trap '$own_policy && rm -f "$policy"' EXIT
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 \
  || { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"; }
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  systemctl disable --now nginx.service >/dev/null 2>&1 || true
fi
echo "system-packages: installed ${missing[*]} ($(/usr/sbin/nginx -v 2>&1))"
