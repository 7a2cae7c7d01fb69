#!/usr/bin/env bash
# Install Debian's PostgreSQL if it is missing, and start a private server for the tests that need one
# (tests/test_rate_*.py with a postgresql:// database). Idempotent: an installed server is not installed
# again and a running one is left running. The server listens on 127.0.0.1 only, trusts local
# connections (a throw-away test cluster, never a real campaign's), and its data lives in
# $BENCH_PG_DIR. Prints the URL the tests read from $BENCH_TEST_POSTGRES_URL.
set -euo pipefail
PG_DIR="${BENCH_PG_DIR:-/tmp/imagen-bench-pg}"
PG_PORT="${BENCH_PG_PORT:-54329}"
PG_USER=bench
PG_DB=bench_test

bindir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

SUDO=""
if [ "$(id -u)" != 0 ]; then
    SUDO="sudo"
fi
if [ -z "$(bindir)" ] || [ ! -x "$(bindir)/postgres" ]; then
    $SUDO apt-get update
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql
fi
BIN="$(bindir)"

# PostgreSQL refuses to run as root: root runs it as the postgres user the package created
as_owner() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

if [ ! -f "$PG_DIR/PG_VERSION" ]; then
    mkdir -p "$PG_DIR"
    if [ "$(id -u)" = 0 ]; then chown postgres:postgres "$PG_DIR"; fi
    chmod 700 "$PG_DIR"
    as_owner "$BIN/initdb" -D "$PG_DIR" --username="$PG_USER" --auth=trust --encoding=UTF8 >/dev/null
fi
if ! as_owner "$BIN/pg_ctl" -D "$PG_DIR" status >/dev/null 2>&1; then
    as_owner "$BIN/pg_ctl" -D "$PG_DIR" -l "$PG_DIR/server.log" -w -t 60 start \
        -o "-c listen_addresses=127.0.0.1 -c port=$PG_PORT -c unix_socket_directories=$PG_DIR -c max_connections=200" >/dev/null
fi
"$BIN/pg_isready" -h 127.0.0.1 -p "$PG_PORT" -t 30 >/dev/null
if ! "$BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" -d postgres -tAc \
        "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'" | grep -q 1; then
    "$BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" "$PG_DB"
fi
echo "postgresql://$PG_USER@127.0.0.1:$PG_PORT/$PG_DB"
