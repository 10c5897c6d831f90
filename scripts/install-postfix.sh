#!/usr/bin/env bash
# Install Debian's postfix for the end-to-end tests (test/e2e/postfix*.test.ts), without starting
# or configuring the system mail service: the tests run their own throwaway instance from a temp
# config dir (test/support/postfix.ts, shared/reference/mta-protocols.md §10.1).
#
# - Idempotent: when postfix (postconf, postfix, postsuper, the daemons) is already installed it
#   does nothing and returns at once; `apt-get update` runs only when the package is missing.
# - Non-interactive: DEBIAN_FRONTEND=noninteractive and the debconf answer
#   `postfix/main_mailer_type = No configuration`, so no /etc/postfix/main.cf is written and no
#   question is asked.
# - No service start: installing an MTA package normally starts it. While apt runs, a
#   /usr/sbin/policy-rc.d that exits 101 forbids invoke-rc.d to start anything; an existing one
#   (Docker images ship one) is put back afterwards, otherwise ours is removed.
#
# Needs root (or sudo without a password). Exit 0: postfix is usable; non-zero: it is not.
set -euo pipefail

log() { printf 'install-postfix.sh: %s\n' "$*" >&2; }
die() {
  log "$*"
  exit 1
}

# What the tests run; the package ships all of them.
readonly NEEDED=(/usr/sbin/postfix /usr/sbin/postconf /usr/sbin/postsuper /usr/lib/postfix/sbin/master)

installed() {
  local f
  dpkg-query -W -f='${Status}' postfix 2>/dev/null | grep -q '^install ok installed$' || return 1
  for f in "${NEEDED[@]}"; do [ -x "$f" ] || return 1; done
}

version() { /usr/sbin/postconf -d -h mail_version 2>/dev/null || echo unknown; }

if installed; then
  log "postfix $(version) already installed"
  exit 0
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || die "must run as root (or with sudo) to install postfix"
  SUDO=(sudo -n)
fi
command -v apt-get >/dev/null || die "apt-get not found: install postfix >= 3.7 by hand"

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
printf '#!/bin/sh\n# relaylease scripts/install-postfix.sh: start no services while installing\nexit 101\n' |
  "${SUDO[@]}" tee "$POLICY" >/dev/null
"${SUDO[@]}" chmod 0755 "$POLICY"

echo 'postfix postfix/main_mailer_type select No configuration' |
  "${SUDO[@]}" debconf-set-selections

export DEBIAN_FRONTEND=noninteractive
# Another apt run (unattended upgrades, a parallel job) may hold the dpkg lock: wait for it.
apt=("${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -y -q -o DPkg::Lock::Timeout=600
  -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
# An update is needed only on a machine that never fetched the package lists, or whose lists
# predate the current package version; try without one first.
if ! "${apt[@]}" install --no-install-recommends postfix >/dev/null 2>&1; then
  log "apt-get update"
  "${SUDO[@]}" apt-get -q -o DPkg::Lock::Timeout=600 update >/dev/null
  "${apt[@]}" install --no-install-recommends postfix >/dev/null
fi

installed || die "postfix was installed but ${NEEDED[*]} are not all there"
log "postfix $(version) installed (system service not started)"
