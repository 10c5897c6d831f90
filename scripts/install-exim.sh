#!/usr/bin/env bash
# Print the absolute path of an Exim binary for the end-to-end test (test/e2e/exim.test.ts),
# unpacked from Debian's exim4-daemon-light into a cache dir, never installed as the system MTA.
#
# Why unpacked: exim4-daemon-light provides mail-transport-agent and so conflicts with postfix,
# which the Postfix end-to-end tests install. The test runs Exim only in host-checking mode
# (`exim -C <conf> -bh <ip>`, test/support/exim.ts): one SMTP session on stdin and stdout, the
# ACLs run, nothing is delivered, no daemon. The binary is all it needs (not exim4-base, whose
# postinst would create the Debian-exim user: the kit provides that user in a mount namespace).
#
# Order:
#   1. $EXIM_BIN, if set: must be an executable with all its shared libraries (ldd).
#   2. the unpacked copy at
#      ${RELAYLEASE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/relaylease}/exim/root/usr/sbin/exim4,
#      made here if missing: `apt-get download exim4-daemon-light` (no root needed), `dpkg-deb -x`
#      into a temp dir, renamed into place once complete. Its setuid bit is dropped: a setuid-root
#      Exim outside the package manager's care would serve anyone who can reach the cache dir,
#      and the tests run it as root anyway.
# Installs (scripts/apt.sh: root or sudo) the plain shared-library packages from the package's
# Depends that the binary cannot run without (libidn12 on a Debian 12 that has only Postfix).
#
# Idempotent and quiet once done: no apt call when the cached binary has all its libraries.
# stdout: the path, nothing else. stderr: progress and errors. Exit 1 if nothing usable is found.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/apt.sh"

readonly PACKAGE=exim4-daemon-light
readonly CACHE="${RELAYLEASE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/relaylease}"
readonly DIR="$CACHE/exim"
readonly ROOT="$DIR/root"
readonly BIN="$ROOT/usr/sbin/exim4"

# True if $1 is an executable whose shared libraries are all found.
runs() {
  [ -f "$1" ] && [ -x "$1" ] && ldd "$1" >/dev/null 2>&1 && ! ldd "$1" 2>/dev/null | grep -q 'not found'
}

absolute() {
  case "$1" in
    /*) printf '%s\n' "$1" ;;
    *) printf '%s/%s\n' "$PWD" "$1" ;;
  esac
}

cached() {
  [ -f "$DIR/.complete" ] && runs "$BIN"
}

# The library packages a .deb depends on, from its own Depends field.
library_deps() {
  dpkg-deb -f "$1" Depends | tr ',' '\n' | sed -E 's/^[[:space:]]*//; s/[[:space:](|].*$//' |
    grep -E '^lib' || true
}

ensure_libraries() {
  local deb="$1" bin="$2"
  runs "$bin" && return 0
  local -a libs
  mapfile -t libs < <(library_deps "$deb")
  missing_packages "${libs[@]}"
  [ "${#missing[@]}" -gt 0 ] || die "exim lacks shared libraries that no package it depends on names"
  log "installing shared libraries for exim: ${missing[*]}"
  # A subshell: apt_prepare's EXIT trap (putting policy-rc.d back) fires when it ends.
  (
    apt_prepare "${missing[*]}"
    apt_install "${missing[@]}"
  )
}

download() {
  # As root, stop apt dropping to the _apt user, which cannot write into our temp dir.
  (cd "$1" && apt-get -q -o APT::Sandbox::User="$(id -un)" download "$PACKAGE" >/dev/null 2>&1)
}

unpack() {
  command -v apt-get >/dev/null 2>&1 && command -v dpkg-deb >/dev/null 2>&1 ||
    die "apt-get and dpkg-deb are needed to fetch exim (Debian 12 or similar)"
  # Leftovers of an interrupted run (we hold the lock, so no other run is using them).
  rm -rf "$DIR".tmp.*
  local tmp
  tmp="$(mktemp -d "$DIR.tmp.XXXXXX")"
  if ! download "$tmp"; then
    log "apt-get update"
    if [ "$(id -u)" -eq 0 ]; then apt-get -q update >/dev/null; else sudo -n apt-get -q update >/dev/null; fi
    download "$tmp" || die "apt-get download $PACKAGE failed"
  fi
  local deb
  deb="$(ls "$tmp/$PACKAGE"_*.deb)"
  dpkg-deb -x "$deb" "$tmp/root"
  chmod u-s,g-s "$tmp/root/usr/sbin/exim4"
  ensure_libraries "$deb" "$tmp/root/usr/sbin/exim4"
  basename "$deb" >"$tmp/root.package"
  rm -rf "$ROOT" "$DIR/.complete"
  mkdir -p "$DIR"
  mv "$tmp/root" "$ROOT"
  mv "$tmp/root.package" "$DIR/.complete"
  rm -rf "$tmp"
}

if [ -n "${EXIM_BIN:-}" ]; then
  runs "$EXIM_BIN" || die "EXIM_BIN=$EXIM_BIN is not an executable with all its shared libraries (ldd)"
  log "exim from EXIM_BIN"
  absolute "$EXIM_BIN"
  exit 0
fi

if ! cached; then
  mkdir -p "$CACHE"
  # Parallel test files may all arrive here; one unpacks, the rest wait and reuse its result.
  exec 9>"$CACHE/.exim-install.lock"
  flock 9
  if ! cached; then
    log "unpacking $PACKAGE into $DIR"
    unpack
  fi
  cached || die "unpacked exim at $BIN does not run"
fi
absolute "$BIN"
