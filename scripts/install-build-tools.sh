#!/usr/bin/env bash
# Installs what the DRAC end-to-end test builds its C client with (rpcgen, libtirpc, gcc,
# pkg-config) and rpcbind, from Debian's packages (through scripts/apt.sh, which starts no
# service: rpcbind's package would start one); does nothing when they are present.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/apt.sh"

readonly PACKAGES=(gcc pkg-config rpcsvc-proto libtirpc-dev rpcbind)
missing_packages "${PACKAGES[@]}"
[ "${#missing[@]}" -eq 0 ] && exit 0
apt_prepare "${missing[*]}"
apt_install "${missing[@]}"
