#!/usr/bin/env bash
# A throw-away PostgreSQL server for the API's PostgreSQL tests: Debian's binaries, a fresh cluster in a
# temp dir, trust auth bound to 127.0.0.1 on a free port, never the system cluster.
#
#   postgres-test-server.sh start        -> prints CAREFED_PG_DIR=<dir> and CAREFED_TEST_DATABASE_URL=<url>
#   postgres-test-server.sh stop <dir>   -> stops that server and removes its dir
#
# initdb refuses to run as root, so as root the cluster belongs to the `postgres` user (runuser).
set -euo pipefail

pg_bin() {
    local initdb
    initdb=$(compgen -G "/usr/lib/postgresql/*/bin/initdb" | sort -V | tail -n 1 || true)
    if [ -z "$initdb" ]; then
        echo "postgres-test-server: no PostgreSQL server found; run scripts/test-system-deps.sh" >&2
        exit 1
    fi
    dirname "$initdb"
}

as_owner() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

free_port() {
    local python=python3
    [ -x "$(dirname "$0")/../.venv/bin/python" ] && python="$(dirname "$0")/../.venv/bin/python"
    "$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

start() {
    local bin dir port
    bin=$(pg_bin)
    dir=$(mktemp -d -t carefed-pg.XXXXXX)
    chmod 0755 "$dir"
    if [ "$(id -u)" -eq 0 ]; then
        chown postgres: "$dir"
    fi
    as_owner "$bin/initdb" --pgdata="$dir/data" --username=carefed --auth=trust --encoding=UTF8 \
        --no-instructions >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; exit 1; }
    port=$(free_port)
    as_owner "$bin/pg_ctl" --pgdata="$dir/data" --log="$dir/server.log" --wait --timeout=60 \
        --options="-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$dir -c fsync=off" \
        start >/dev/null || { cat "$dir/server.log" >&2; exit 1; }
    echo "CAREFED_PG_DIR=$dir"
    echo "CAREFED_TEST_DATABASE_URL=postgresql+psycopg://carefed@127.0.0.1:$port/postgres"
}

stop() {
    local dir=$1 bin
    bin=$(pg_bin)
    if [ -d "$dir/data" ]; then
        as_owner "$bin/pg_ctl" --pgdata="$dir/data" --mode=immediate --wait stop >/dev/null || true
    fi
    rm -rf "$dir"
}

case "${1:-}" in
    start) start ;;
    stop) stop "${2:?usage: postgres-test-server.sh stop <dir>}" ;;
    *) echo "usage: postgres-test-server.sh start | stop <dir>" >&2; exit 2 ;;
esac
