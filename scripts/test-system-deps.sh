#!/usr/bin/env bash
# Installs the system packages the test suite drives for real: Debian's PostgreSQL server (the API's
# PostgreSQL tests start one, see postgres-test-server.sh) and Debian's Chromium (the browser tests drive it
# with Playwright; Playwright's own browser download is never used). Does nothing when both are present.
set -euo pipefail

have_postgres() { compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; }
have_chromium() { [ -x /usr/bin/chromium ]; }

if have_postgres && have_chromium; then
    exit 0
fi

packages=()
have_postgres || packages+=(postgresql)
have_chromium || packages+=(chromium)

if [ "$(id -u)" -ne 0 ]; then
    echo "test-system-deps: missing ${packages[*]}; install them as root: apt-get install -y ${packages[*]}" >&2
    exit 1
fi

echo "test-system-deps: installing ${packages[*]} with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${packages[@]}"
