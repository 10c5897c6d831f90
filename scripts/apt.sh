# Sourced by scripts/install-*.sh: installs Debian packages with apt-get, as root or through
# sudo, without starting any service.
#
# - No service start: while apt runs, a /usr/sbin/policy-rc.d that exits 101 forbids invoke-rc.d
#   and deb-systemd-invoke to start anything; an existing one (Docker images ship one) is put
#   back afterwards, otherwise ours is removed.
# - Non-interactive; existing config files are kept; another apt run's dpkg lock is waited for
#   (unattended upgrades, a parallel job); `apt-get update` runs only when an install without it
#   fails (a machine that never fetched the lists, or whose lists predate the package).
#
# Gives the caller `log`, `die`, `missing_packages`, `apt_prepare` and `apt_install`, and the
# array SUDO: the prefix that runs a command as root.

log() { printf '%s: %s\n' "${0##*/}" "$*" >&2; }
die() {
  log "$*"
  exit 1
}

# Sets the array `missing` to those of the packages given that are not installed.
missing_packages() {
  missing=()
  local p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
  done
}

# Root or sudo, apt-get, and the policy-rc.d (put back on exit). $1 names what is to be
# installed, for the messages.
apt_prepare() {
  SUDO=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || die "must run as root (or with sudo) to install $1"
    SUDO=(sudo -n)
  fi
  command -v apt-get >/dev/null || die "apt-get not found: install $1 by hand"
  APT_POLICY=/usr/sbin/policy-rc.d
  APT_POLICY_BACKUP=""
  if [ -e "$APT_POLICY" ]; then
    APT_POLICY_BACKUP="$("${SUDO[@]}" mktemp /usr/sbin/policy-rc.d.relaylease.XXXXXX)"
    "${SUDO[@]}" cp -p "$APT_POLICY" "$APT_POLICY_BACKUP"
  fi
  trap apt_restore_policy EXIT
  printf '#!/bin/sh\n# relaylease scripts/%s: start no services while installing\nexit 101\n' \
    "${0##*/}" | "${SUDO[@]}" tee "$APT_POLICY" >/dev/null
  "${SUDO[@]}" chmod 0755 "$APT_POLICY"
}

apt_restore_policy() {
  if [ -n "$APT_POLICY_BACKUP" ]; then
    "${SUDO[@]}" mv -f "$APT_POLICY_BACKUP" "$APT_POLICY"
  else
    "${SUDO[@]}" rm -f "$APT_POLICY"
  fi
}

# Installs the packages given (after apt_prepare).
apt_install() {
  local apt=("${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -y -q
    -o DPkg::Lock::Timeout=600 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
  if ! "${apt[@]}" install --no-install-recommends "$@" >/dev/null 2>&1; then
    log "apt-get update"
    "${SUDO[@]}" apt-get -q -o DPkg::Lock::Timeout=600 update >/dev/null
    "${apt[@]}" install --no-install-recommends "$@" >/dev/null
  fi
}
