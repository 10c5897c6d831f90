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

. "$(dirname "${BASH_SOURCE[0]}")/apt.sh"

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

apt_prepare "postfix >= 3.7"

echo 'postfix postfix/main_mailer_type select No configuration' |
  "${SUDO[@]}" debconf-set-selections

apt_install postfix

installed || die "postfix was installed but ${NEEDED[*]} are not all there"
log "postfix $(version) installed (system service not started)"
