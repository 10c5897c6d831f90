#!/usr/bin/env bash
# Print the absolute path of a sendmail binary for the end-to-end tests (test/e2e/sendmail*.test.ts),
# unpacked from Debian's packages into a cache dir, never installed as the system MTA.
#
# Why unpacked: Debian's sendmail-bin conflicts with postfix (both provide mail-transport-agent),
# which the Postfix end-to-end tests install. The tests run their own throwaway daemon from a
# generated .cf (test/support/sendmail.ts, shared/reference/mta-protocols.md §10.2), so all they
# need is the binary, the m4 sources of the .cf files (sendmail-cf, sendmail-base) and m4.
#
# Order:
#   1. $SENDMAIL_BIN, if set: must run; its .cf sources are expected at <prefix>/usr/share/sendmail/cf
#      when it lives at <prefix>/usr/libexec/sendmail/sendmail (or set SENDMAIL_CF_DIR).
#   2. the unpacked copy at
#      ${RELAYLEASE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/relaylease}/sendmail/root/usr/libexec/sendmail/sendmail,
#      made here if missing: `apt-get download sendmail-bin sendmail-cf sendmail-base` (no root
#      needed), `dpkg-deb -x` each into a temp dir, renamed into place once complete.
# Also installs m4 (apt-get, root or sudo) when it is missing, and the shared libraries
# sendmail-bin depends on when the binary cannot run without them (plain library packages: they
# conflict with nothing). `apt-get update` runs only when a package cannot be found without it.
#
# Idempotent and fast once done: no apt call when the cached binary runs and m4 is on PATH.
# stdout: the path, nothing else. stderr: progress and errors. Exit 1 if nothing usable is found.
set -euo pipefail

log() { printf 'install-sendmail.sh: %s\n' "$*" >&2; }
die() {
  log "$*"
  exit 1
}

readonly PACKAGES=(sendmail-bin sendmail-cf sendmail-base)
readonly CACHE="${RELAYLEASE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/relaylease}"
readonly DIR="$CACHE/sendmail"
readonly ROOT="$DIR/root"
readonly BIN="$ROOT/usr/libexec/sendmail/sendmail"
readonly CF_M4="$ROOT/usr/share/sendmail/cf/m4/cf.m4"

SUDO=()
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO=(sudo -n); fi
apt_get() {
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -y -q -o DPkg::Lock::Timeout=600 "$@"
}
apt_update() {
  log "apt-get update"
  apt_get update >/dev/null
}

# runs BIN: true if BIN is an executable whose shared libraries are all found. Running it is no
# check: outside the tests' UTS namespace every invocation, even `-d0.1`, first sleeps 60 s trying
# to qualify an unqualified host name ("My unqualified host name ... sleeping for retry").
runs() {
  [ -f "$1" ] && [ -x "$1" ] && ldd "$1" >/dev/null 2>&1 && ! ldd "$1" 2>/dev/null | grep -q 'not found'
}

absolute() {
  case "$1" in
    /*) printf '%s\n' "$1" ;;
    *) printf '%s/%s\n' "$PWD" "$1" ;;
  esac
}

ensure_m4() {
  command -v m4 >/dev/null 2>&1 && return 0
  command -v apt-get >/dev/null 2>&1 || die "m4 not found and no apt-get: install m4 by hand"
  [ "$(id -u)" -eq 0 ] || [ "${#SUDO[@]}" -gt 0 ] || die "m4 not found: install it (needs root)"
  log "installing m4"
  apt_get install --no-install-recommends m4 >/dev/null 2>&1 ||
    { apt_update && apt_get install --no-install-recommends m4 >/dev/null; }
  command -v m4 >/dev/null 2>&1 || die "apt-get installed m4, but it is not on PATH"
}

# The library packages sendmail-bin depends on (libc6, libdb5.3, libldap-2.5-0, liblockfile1,
# libnsl2, libsasl2-2, libssl3, libwrap0 on Debian 12), from the .deb's own Depends field.
library_deps() {
  dpkg-deb -f "$1" Depends | tr ',' '\n' | sed -E 's/^[[:space:]]*//; s/[[:space:](|].*$//' |
    grep -E '^lib' || true
}

ensure_libraries() {
  local deb="$1" bin="$2" missing
  missing="$(ldd "$bin" 2>/dev/null | grep -c 'not found' || true)"
  [ "$missing" -eq 0 ] && return 0
  [ "$(id -u)" -eq 0 ] || [ "${#SUDO[@]}" -gt 0 ] ||
    die "sendmail lacks $missing shared libraries; install as root: $(library_deps "$deb" | xargs)"
  local -a libs
  mapfile -t libs < <(library_deps "$deb")
  log "installing shared libraries for sendmail: ${libs[*]}"
  apt_get install --no-install-recommends "${libs[@]}" >/dev/null 2>&1 ||
    { apt_update && apt_get install --no-install-recommends "${libs[@]}" >/dev/null; }
}

from_env() {
  runs "$SENDMAIL_BIN" ||
    die "SENDMAIL_BIN=$SENDMAIL_BIN is not an executable with all its shared libraries (ldd)"
  ensure_m4
  log "sendmail from SENDMAIL_BIN"
  absolute "$SENDMAIL_BIN"
}

cached() {
  [ -f "$DIR/.complete" ] && [ -x "$BIN" ] && [ -f "$CF_M4" ] && runs "$BIN"
}

unpack() {
  command -v apt-get >/dev/null 2>&1 && command -v dpkg-deb >/dev/null 2>&1 ||
    die "apt-get and dpkg-deb are needed to fetch sendmail (Debian 12 or similar)"
  local tmp
  tmp="$(mktemp -d "$DIR.tmp.XXXXXX")"
  # shellcheck disable=SC2064 # expand now: $tmp is local
  trap "rm -rf '$tmp'" EXIT
  # apt-get download needs no root; as root, stop apt dropping to the _apt user, which cannot
  # write into our temp dir ("Download is performed unsandboxed as root" warning).
  (cd "$tmp" && apt-get -q -o APT::Sandbox::User="$(id -un)" download "${PACKAGES[@]}" >/dev/null 2>&1) ||
    {
      apt_update
      (cd "$tmp" && apt-get -q -o APT::Sandbox::User="$(id -un)" download "${PACKAGES[@]}" >/dev/null)
    } || die "apt-get download ${PACKAGES[*]} failed"
  local deb
  for deb in "$tmp"/*.deb; do dpkg-deb -x "$deb" "$tmp/root"; done
  ensure_libraries "$(ls "$tmp"/sendmail-bin_*.deb)" "$tmp/root/usr/libexec/sendmail/sendmail"
  ls "$tmp"/*.deb | xargs -n1 basename >"$tmp/root.packages"
  rm -rf "$ROOT" "$DIR/.complete"
  mkdir -p "$DIR"
  mv "$tmp/root" "$ROOT"
  mv "$tmp/root.packages" "$DIR/.complete"
}

if [ -n "${SENDMAIL_BIN:-}" ]; then
  from_env
  exit 0
fi

if ! cached || ! command -v m4 >/dev/null 2>&1; then
  mkdir -p "$CACHE"
  # Parallel test files may all arrive here; one unpacks, the rest wait and reuse its result.
  if command -v flock >/dev/null 2>&1; then
    exec 9>"$CACHE/.sendmail-install.lock"
    flock 9
  fi
  ensure_m4
  if ! cached; then
    log "unpacking ${PACKAGES[*]} into $DIR"
    unpack
  fi
  cached || die "unpacked sendmail at $BIN does not run"
fi
log "sendmail from $(xargs <"$DIR/.complete")"
absolute "$BIN"
