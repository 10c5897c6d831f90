#!/usr/bin/env bash
# Install Debian's Dovecot (dovecot-core, dovecot-pop3d, dovecot-imapd) for the end-to-end tests
# (test/e2e/dovecot.test.ts), without starting or enabling the system service: the tests run their
# own throwaway instance from a temp config (test/support/dovecot.ts,
# shared/reference/login-sources.md, Appendix).
#
# - Idempotent: when the three packages and the binaries the tests run are there it does nothing
#   and returns at once; `apt-get update` runs only when a package cannot be installed without it.
# - Non-interactive: DEBIAN_FRONTEND=noninteractive; existing config files are kept.
# - No service start: while apt runs, a /usr/sbin/policy-rc.d that exits 101 forbids invoke-rc.d
#   and deb-systemd-invoke to start anything; an existing one (Docker images ship one) is put
#   back afterwards, otherwise ours is removed.
# - Not enabled: the packages enable dovecot.service and dovecot.socket (systemd) or the init
#   script at install; a fresh install here disables them again, recorded so that upgrades keep
#   them disabled. A Dovecot that was already installed is left exactly as it was.
#
# Needs root (or sudo without a password). Exit 0: Dovecot is usable; non-zero: it is not.
set -euo pipefail

log() { printf 'install-dovecot.sh: %s\n' "$*" >&2; }
die() {
  log "$*"
  exit 1
}

readonly PACKAGES=(dovecot-core dovecot-pop3d dovecot-imapd)
# What the tests run; the packages ship all of them.
readonly NEEDED=(/usr/sbin/dovecot /usr/bin/doveadm /usr/lib/dovecot/pop3 /usr/lib/dovecot/imap
  /usr/lib/dovecot/pop3-login /usr/lib/dovecot/imap-login /usr/lib/dovecot/auth)

installed() {
  local p f
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' || return 1
  done
  for f in "${NEEDED[@]}"; do [ -x "$f" ] || return 1; done
}

version() { /usr/sbin/dovecot --version 2>/dev/null || echo unknown; }

if installed; then
  log "dovecot $(version) already installed"
  exit 0
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || die "must run as root (or with sudo) to install dovecot"
  SUDO=(sudo -n)
fi
command -v apt-get >/dev/null || die "apt-get not found: install dovecot 2.3 (pop3d, imapd) by hand"

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
printf '#!/bin/sh\n# relaylease scripts/install-dovecot.sh: start no services while installing\nexit 101\n' |
  "${SUDO[@]}" tee "$POLICY" >/dev/null
"${SUDO[@]}" chmod 0755 "$POLICY"

# Whether dovecot-core was there before: only then is its service state someone else's choice.
core_was_installed=no
if dpkg-query -W -f='${Status}' dovecot-core 2>/dev/null | grep -q '^install ok installed$'; then
  core_was_installed=yes
fi

# Another apt run (unattended upgrades, a parallel job) may hold the dpkg lock: wait for it.
apt=("${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -y -q -o DPkg::Lock::Timeout=600
  -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
# An update is needed only on a machine that never fetched the package lists, or whose lists
# predate the current package version; try without one first.
if ! "${apt[@]}" install --no-install-recommends "${PACKAGES[@]}" >/dev/null 2>&1; then
  log "apt-get update"
  "${SUDO[@]}" apt-get -q -o DPkg::Lock::Timeout=600 update >/dev/null
  "${apt[@]}" install --no-install-recommends "${PACKAGES[@]}" >/dev/null
fi

if [ "$core_was_installed" = no ]; then
  # deb-systemd-helper disable removes the links whether or not systemd runs, and remembers the
  # choice; update-rc.d does the same for the SysV script.
  if command -v deb-systemd-helper >/dev/null; then
    "${SUDO[@]}" deb-systemd-helper disable dovecot.service dovecot.socket >/dev/null 2>&1 || true
  fi
  if [ -e /etc/init.d/dovecot ] && command -v update-rc.d >/dev/null; then
    "${SUDO[@]}" update-rc.d dovecot disable >/dev/null 2>&1 || true
  fi
fi

installed || die "dovecot was installed but ${NEEDED[*]} are not all there"
log "dovecot $(version) installed (system service neither started nor enabled)"
