#!/usr/bin/env bash
# Installs what the MTA benchmark (bench/mta.ts) needs, from Debian's packages: postfix (it ships
# smtp-source and smtp-sink; through scripts/install-postfix.sh, which starts no mail service),
# gcc and libmilter-dev (Sendmail's libmilter, for the C reference milter in
# bench/reference-milter/).
#
# - Idempotent: packages already installed are left alone; with nothing missing it returns at once
#   and `apt-get update` never runs.
# - No service start: while apt runs, a /usr/sbin/policy-rc.d that exits 101 forbids
#   invoke-rc.d to start anything; an existing one is put back afterwards, otherwise ours goes.
#
# Needs root (or sudo without a password). Exit 0: the tools are usable; non-zero: they are not.
set -euo pipefail

log() { printf 'install-bench-tools.sh: %s\n' "$*" >&2; }
die() {
  log "$*"
  exit 1
}

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
"$here/install-postfix.sh"

readonly PACKAGES=(gcc libc6-dev libmilter-dev)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
done
if [ "${#missing[@]}" -eq 0 ]; then
  log "gcc, libmilter-dev already installed"
  exit 0
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || die "must run as root (or with sudo) to install ${missing[*]}"
  SUDO=(sudo -n)
fi
command -v apt-get >/dev/null || die "apt-get not found: install ${missing[*]} by hand"

readonly POLICY=/usr/sbin/policy-rc.d
backup=""
restore_policy() {
  if [ -n "$backup" ]; then
    "${SUDO[@]}" mv -f "$backup" "$POLICY"
  else
    "${SUDO[@]}" rm -f "$POLICY"
  fi
}
if [ -e "$POLICY" ]; then
  backup="$("${SUDO[@]}" mktemp /usr/sbin/policy-rc.d.relaylease.XXXXXX)"
  "${SUDO[@]}" cp -p "$POLICY" "$backup"
fi
trap restore_policy EXIT
printf '#!/bin/sh\n# relaylease scripts/install-bench-tools.sh: start no services while installing\nexit 101\n' |
  "${SUDO[@]}" tee "$POLICY" >/dev/null
"${SUDO[@]}" chmod 0755 "$POLICY"

# Another apt run may hold the dpkg lock: wait for it. Try without an update first.
apt=("${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -y -q -o DPkg::Lock::Timeout=600)
if ! "${apt[@]}" install --no-install-recommends "${missing[@]}" >/dev/null 2>&1; then
  log "apt-get update"
  "${SUDO[@]}" apt-get -q -o DPkg::Lock::Timeout=600 update >/dev/null
  "${apt[@]}" install --no-install-recommends "${missing[@]}" >/dev/null
fi

[ -r /usr/include/libmilter/mfapi.h ] || die "libmilter-dev was installed but mfapi.h is not there"
log "installed ${missing[*]} (no service started)"
