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

. "$(dirname "${BASH_SOURCE[0]}")/apt.sh"

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

apt_prepare "dovecot 2.3 (pop3d, imapd)"

# Whether dovecot-core was there before: only then is its service state someone else's choice.
core_was_installed=no
if dpkg-query -W -f='${Status}' dovecot-core 2>/dev/null | grep -q '^install ok installed$'; then
  core_was_installed=yes
fi

apt_install "${PACKAGES[@]}"

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
