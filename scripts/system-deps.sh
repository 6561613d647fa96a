#!/usr/bin/env bash
# Make sure the system programs the tests start are installed: redis-server, PostgreSQL, Chromium,
# and what compiling the balancer's hot path needs (a C compiler, Python's headers).
# `--build` checks only the latter. Extra arguments name more programs (Debian packages of the
# same name). As root, missing ones are installed with apt-get; otherwise this names them and fails.
set -euo pipefail

missing=()
command -v gcc >/dev/null 2>&1 || missing+=(gcc)
"${PYTHON:-python3}" -c 'import os, sys, sysconfig
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' || missing+=(python3-dev)
if [ "${1:-}" = "--build" ]; then
  shift
else
  command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
  compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || command -v initdb >/dev/null 2>&1 || missing+=(postgresql)
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
fi
for extra in "$@"; do
  command -v "$extra" >/dev/null 2>&1 || missing+=("$extra")
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing system packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian starts a cluster and a redis service on install; tests start their own on free ports.
  exit 0
fi
echo "error: webtier needs these system packages: ${missing[*]}" >&2
echo "       install them (e.g. sudo apt-get install ${missing[*]}) or run 'make test' as root" >&2
exit 1
