#!/usr/bin/env bash
# Builds one of the benchmark's C fixtures, `build.sh [NAME]` for NAME.c here (default: the
# reference milter, drac-milter.c, on Debian's libmilter-dev from scripts/install-bench-tools.sh;
# also floor-tables.c), with gcc into a cache dir outside the repository, and prints the
# binary's path: never a binary in the tree. Rebuilds only when the source or the flags changed
# (the binary's name carries their hash; older builds are removed), so bench/mta.ts can call it
# on every run.
#
# Cache dir: $RELAYLEASE_BENCH_CACHE, else ${XDG_CACHE_HOME:-$HOME/.cache}/relaylease.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
name="${1:-drac-milter}"
src="$here/$name.c"
[ -r "$src" ] || {
  echo "build.sh: no $src" >&2
  exit 1
}
cache="${RELAYLEASE_BENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/relaylease}"
readonly CFLAGS=(-std=gnu11 -O2 -Wall -Wextra -Werror)
# Debian ships libmilter.a only in -dev (the .so has no dev symlink): link it statically.
readonly LIBS=(-lmilter -pthread)

[ -r /usr/include/libmilter/mfapi.h ] || {
  echo "build.sh: libmilter-dev is missing; run scripts/install-bench-tools.sh" >&2
  exit 1
}
digest="$({
  cat "$src"
  echo "${CFLAGS[*]} ${LIBS[*]}"
  gcc --version | head -1
} | sha256sum | cut -c1-12)"
bin="$cache/$name-$digest"
if [ ! -x "$bin" ]; then
  mkdir -p "$cache"
  tmp="$(mktemp "$cache/.$name.XXXXXX")"
  trap 'rm -f "$tmp"' EXIT
  gcc "${CFLAGS[@]}" -o "$tmp" "$src" "${LIBS[@]}"
  mv -f "$tmp" "$bin"
  # Builds of older sources are of no further use.
  find "$cache" -maxdepth 1 -name "$name-*" ! -name "$name-$digest" -delete
fi
printf '%s\n' "$bin"
