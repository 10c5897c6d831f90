#!/usr/bin/env bash
# Installs what the DRAC end-to-end test builds its C client with (rpcgen, libtirpc, gcc,
# pkg-config) and rpcbind, from Debian's packages; does nothing when they are present.
set -euo pipefail
readonly PACKAGES=(gcc pkg-config rpcsvc-proto libtirpc-dev rpcbind)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
done
[ "${#missing[@]}" -eq 0 ] && exit 0
export DEBIAN_FRONTEND=noninteractive
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo -n"
# rpcbind's package would start the service: forbid starts while apt runs.
policy=/usr/sbin/policy-rc.d
backup=""
if [ -e "$policy" ]; then backup="$(mktemp)"; $sudo cp -p "$policy" "$backup"; fi
restore() {
  if [ -n "$backup" ]; then $sudo cp -p "$backup" "$policy"; rm -f "$backup"; else $sudo rm -f "$policy"; fi
}
trap restore EXIT
printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
$sudo chmod 755 "$policy"
$sudo apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends "${missing[@]}" >/dev/null 2>&1 ||
  { $sudo apt-get -o DPkg::Lock::Timeout=600 update >/dev/null && $sudo apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends "${missing[@]}" >/dev/null; }
