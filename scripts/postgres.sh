#!/usr/bin/env bash
# Start or stop a throwaway local PostgreSQL for trying the production catalog by hand (the tests start
# their own through tests/fixtures/postgres.py). Trust auth and fsync off: never for real data.
#
#   scripts/postgres.sh start [port]   # prints the metadata_url to use
#   scripts/postgres.sh stop
set -euo pipefail

dir="${STREAMHOUSE_PG_DIR:-/tmp/streamhouse-pg}"
port="${2:-55432}"
bin="${PG_BIN_DIR:-$(dirname "$(readlink -f "$(command -v pg_ctl || ls -d /usr/lib/postgresql/*/bin/pg_ctl | sort -V | tail -1)")")}"

as_pg=()
if [ "$(id -u)" = 0 ]; then
    id -u postgres >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin postgres
    as_pg=(runuser -u postgres --)
fi

case "${1:-}" in
start)
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres: "$dir"
    if [ ! -f "$dir/data/PG_VERSION" ]; then
        "${as_pg[@]}" "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --no-sync >/dev/null
    fi
    "${as_pg[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
        -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
    echo "postgresql://postgres@127.0.0.1:$port/postgres"
    ;;
stop)
    "${as_pg[@]}" "$bin/pg_ctl" -D "$dir/data" -m fast -w stop
    ;;
*)
    echo "usage: $0 start [port] | stop" >&2
    exit 2
    ;;
esac
