#!/usr/bin/env bash
# Print the absolute path of a nats-server binary new enough for relaylease.
#
# relaylease needs nats-server >= 2.11.2: older servers accept per-message TTL settings and
# silently ignore them (docs: shared/reference/nats.md §4). Debian 12 ships 2.9.10, so a plain
# `nats-server` on PATH is not good enough on its own.
#
# Order:
#   1. $NATS_SERVER_BIN, if set (must be executable; an old version only warns: the caller asked
#      for it, e.g. a degraded-mode test).
#   2. the first `nats-server` on PATH whose --version is >= 2.11.2.
#   3. the pinned build cached at
#      ${RELAYLEASE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/relaylease}/nats-server-v2.15.2/,
#      built with `go install` (Go >= 1.25) if missing.
#
# stdout: the path, nothing else. stderr: progress and errors. Exit 1 if nothing usable is found.
set -euo pipefail

readonly MIN_VERSION="2.11.2"
readonly PINNED_VERSION="2.15.2"
readonly MIN_GO_VERSION="1.25"
readonly MODULE="github.com/nats-io/nats-server/v2"

log() { printf 'nats-server.sh: %s\n' "$*" >&2; }
die() {
  log "$*"
  exit 1
}

# version_ge A B: true if dotted version A >= B. Numeric per component, so 2.9.10 < 2.11.2
# (a string or `sort` comparison without -V gets this wrong). A pre-release suffix (2.11.2-RC.1)
# counts as older than the release it precedes.
version_ge() {
  local a="${1%%-*}" b="${2%%-*}" a_pre="" i x y
  [[ "$1" == *-* ]] && a_pre=1
  local -a av bv
  IFS=. read -r -a av <<<"$a"
  IFS=. read -r -a bv <<<"$b"
  for i in 0 1 2; do
    x="${av[i]:-0}"
    y="${bv[i]:-0}"
    [[ "$x" =~ ^[0-9]+$ && "$y" =~ ^[0-9]+$ ]] || return 1
    if ((10#$x > 10#$y)); then return 0; fi
    if ((10#$x < 10#$y)); then return 1; fi
  done
  [[ -z "$a_pre" ]]
}

# server_version BIN: "2.9.10" from "nats-server: v2.9.10"; empty if BIN does not answer.
server_version() {
  local out
  out="$("$1" --version 2>/dev/null || true)"
  if [[ "$out" =~ v([0-9]+\.[0-9]+\.[0-9]+[^[:space:]]*) ]]; then
    printf '%s\n' "${BASH_REMATCH[1]}"
  fi
}

absolute() {
  case "$1" in
    /*) printf '%s\n' "$1" ;;
    *) printf '%s/%s\n' "$PWD" "$1" ;;
  esac
}

from_env() {
  [[ -x "$NATS_SERVER_BIN" && -f "$NATS_SERVER_BIN" ]] ||
    die "NATS_SERVER_BIN=$NATS_SERVER_BIN is not an executable file"
  local v
  v="$(server_version "$NATS_SERVER_BIN")"
  if [[ -z "$v" ]]; then
    log "warning: NATS_SERVER_BIN=$NATS_SERVER_BIN did not report a version"
  elif ! version_ge "$v" "$MIN_VERSION"; then
    log "warning: NATS_SERVER_BIN is nats-server $v (< $MIN_VERSION: per-message TTL is ignored)"
  fi
  absolute "$NATS_SERVER_BIN"
}

from_path() {
  local bin v
  # type -ap lists every match on PATH, not just the first, so an old /usr/sbin/nats-server
  # does not hide a newer one further along.
  while IFS= read -r bin; do
    [[ -n "$bin" ]] || continue
    v="$(server_version "$bin")"
    if [[ -n "$v" ]] && version_ge "$v" "$MIN_VERSION"; then
      absolute "$bin"
      return 0
    fi
    log "skipping $bin: version ${v:-unknown} < $MIN_VERSION"
  done < <(type -ap nats-server || true)
  return 1
}

go_is_new_enough() {
  command -v go >/dev/null 2>&1 || return 1
  local v
  v="$(go env GOVERSION 2>/dev/null || true)" # "go1.26.8"
  v="${v#go}"
  [[ -n "$v" ]] && version_ge "$v" "$MIN_GO_VERSION"
}

from_cache() {
  local cache="${RELAYLEASE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/relaylease}"
  local dir="$cache/nats-server-v$PINNED_VERSION"
  local bin="$dir/nats-server"
  if [[ -x "$bin" ]]; then
    absolute "$bin"
    return 0
  fi
  go_is_new_enough || die "no nats-server >= $MIN_VERSION on PATH and none cached at $bin." \
    "Install Go >= $MIN_GO_VERSION so this script can build v$PINNED_VERSION into $dir," \
    "or set NATS_SERVER_BIN to a nats-server >= $MIN_VERSION" \
    "(https://github.com/nats-io/nats-server/releases)."
  mkdir -p "$cache"
  # Parallel test files may all arrive here; one builds, the rest wait and reuse its result.
  if command -v flock >/dev/null 2>&1; then
    exec 9>"$cache/.nats-server-build.lock"
    flock 9
    if [[ -x "$bin" ]]; then
      absolute "$bin"
      return 0
    fi
  fi
  # Build into a temp dir on the same filesystem, then rename: an interrupted build never
  # leaves a half-written binary at $bin.
  build_tmp="$(mktemp -d "$cache/.build.XXXXXX")"
  trap 'rm -rf "$build_tmp"' EXIT
  log "building nats-server v$PINNED_VERSION with $(go env GOVERSION) (about 1-2 minutes)..."
  GOBIN="$build_tmp" GOFLAGS=-trimpath CGO_ENABLED=0 go install "$MODULE@v$PINNED_VERSION" >&2 ||
    die "go install $MODULE@v$PINNED_VERSION failed; set NATS_SERVER_BIN to use another build"
  mkdir -p "$dir"
  mv -f "$build_tmp/nats-server" "$bin"
  log "built $bin"
  absolute "$bin"
}

if [[ -n "${NATS_SERVER_BIN:-}" ]]; then
  from_env
  exit 0
fi
from_path && exit 0
from_cache
