#!/usr/bin/env bash
# Installs what the MTA benchmark (bench/mta.ts) needs, from Debian's packages: postfix (it ships
# smtp-source and smtp-sink; through scripts/install-postfix.sh, which starts no mail service),
# gcc and libmilter-dev (Sendmail's libmilter, for the C reference milter in
# bench/reference-milter/), and valgrind (bench/milter-instructions.ts counts instructions with it).
#
# - Idempotent: packages already installed are left alone; with nothing missing it returns at once
#   and `apt-get update` never runs.
# - No service start: while apt runs, a /usr/sbin/policy-rc.d that exits 101 forbids
#   invoke-rc.d to start anything; an existing one is put back afterwards, otherwise ours goes.
#
# Needs root (or sudo without a password). Exit 0: the tools are usable; non-zero: they are not.
set -euo pipefail

. "$(dirname "${BASH_SOURCE[0]}")/apt.sh"

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
"$here/install-postfix.sh"

readonly PACKAGES=(gcc libc6-dev libmilter-dev valgrind)
missing_packages "${PACKAGES[@]}"
if [ "${#missing[@]}" -eq 0 ]; then
  log "gcc, libmilter-dev, valgrind already installed"
  exit 0
fi

apt_prepare "${missing[*]}"
apt_install "${missing[@]}"

[ -r /usr/include/libmilter/mfapi.h ] || die "libmilter-dev was installed but mfapi.h is not there"
log "installed ${missing[*]} (no service started)"
