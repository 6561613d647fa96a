#!/usr/bin/env bash
# Make sure the system programs the tests start are installed: redis-server and PostgreSQL.
# As root, missing ones are installed with apt-get; otherwise this names them and fails.
set -euo pipefail

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || command -v initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
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
echo "error: the tests need these system packages: ${missing[*]}" >&2
echo "       install them (e.g. sudo apt-get install ${missing[*]}) or run 'make test' as root" >&2
exit 1
