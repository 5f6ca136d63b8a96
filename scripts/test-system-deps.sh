#!/usr/bin/env bash
# Installs the system packages the test suite drives for real: Debian's PostgreSQL server (the API's
# PostgreSQL tests start one, see postgres-test-server.sh), Debian's Chromium (the browser tests drive it
# with Playwright; Playwright's own browser download is never used) and iproute2 (the across-hosts test puts
# each organisation in its own network namespace, tests/deployment/). Does nothing when all are present.
set -euo pipefail

have_postgres() { compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; }
have_chromium() { [ -x /usr/bin/chromium ]; }
have_iproute2() { command -v ip >/dev/null; }

if have_postgres && have_chromium && have_iproute2; then
    exit 0
fi

packages=()
have_postgres || packages+=(postgresql)
have_chromium || packages+=(chromium)
have_iproute2 || packages+=(iproute2)

if [ "$(id -u)" -ne 0 ]; then
    echo "test-system-deps: missing ${packages[*]}; install them as root: apt-get install -y ${packages[*]}" >&2
    exit 1
fi

echo "test-system-deps: installing ${packages[*]} with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${packages[@]}"
