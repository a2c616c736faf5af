# PostgreSQL for the tests: sourced by tests/run (see lib.sh for the
# conventions).
#
# Starts two private clusters (initdb + pg_ctl, as the postgres user) on free
# loopback ports under $CLOAKROOM_TEST_DIR, with their sockets there too, so
# the machine's own PostgreSQL, if any, is not touched:
#   * the main one, shared by the tests (each uses its own table):
#                                              CLOAKROOM_POSTGRES_URL
#   * one that only the fault test stops and restarts:
#                                              CLOAKROOM_POSTGRES_FAULT_URL,
#                                              CLOAKROOM_POSTGRES_FAULT_PIDFILE,
#                                              CLOAKROOM_POSTGRES_FAULT_START,
#                                              CLOAKROOM_POSTGRES_FAULT_STOP_SIGNAL
# The main one trades durability for speed (fsync off); the fault one keeps
# fsync, since its test checks that acknowledged writes survive.

need_packages postgresql

pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)

# pg_instance NAME EXTRA_OPTIONS: initdb, a start script, start; sets pg_port.
pg_instance() {
  local name=$1 extra=$2
  local dir="$CLOAKROOM_TEST_DIR/$name"
  pg_port=$(free_port)
  mkdir -p "$dir"
  chown postgres "$dir"
  su postgres -c "$(printf '%q -D %q -A trust -U postgres --no-sync' "$pg_bin/initdb" "$dir/data")" >/dev/null
  # pg_ctl waits (-w) until the server accepts connections. postmaster.pid
  # holds more than the pid, so its first line is copied to a pid file of
  # the kind lib.sh reads.
  local opts
  opts=$(printf -- "-p %q -k %q -c listen_addresses=127.0.0.1 -c max_connections=400 %s" "$pg_port" "$dir" "$extra")
  {
    echo '#!/usr/bin/env bash'
    echo 'set -eu'
    printf 'su postgres -c %q\n' "$(printf '%q -D %q -o %q -l %q -w start' "$pg_bin/pg_ctl" "$dir/data" "$opts" "$dir/postgres.log")"
    printf 'head -n 1 %q >%q\n' "$dir/data/postmaster.pid" "$dir/postgres.pid"
  } >"$dir/start"
  chmod +x "$dir/start"
  # A fast shutdown first (disconnects clients, no waiting for them); the
  # pid file is the fallback.
  on_stop "su postgres -c $(printf '%q' "$(printf '%q -D %q -m fast -w stop' "$pg_bin/pg_ctl" "$dir/data")")"
  track_pidfile "$dir/postgres.pid"
  "$dir/start" >/dev/null
}

pg_instance postgres "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
export CLOAKROOM_POSTGRES_URL="postgres://postgres@127.0.0.1:$pg_port/postgres"

if extra_instances; then
  pg_instance postgres-fault ""
  export CLOAKROOM_POSTGRES_FAULT_URL="postgres://postgres@127.0.0.1:$pg_port/postgres"
  export CLOAKROOM_POSTGRES_FAULT_PIDFILE="$CLOAKROOM_TEST_DIR/postgres-fault/postgres.pid"
  export CLOAKROOM_POSTGRES_FAULT_START="$CLOAKROOM_TEST_DIR/postgres-fault/start"
fi
# SIGTERM would be a "smart" shutdown that waits for the pool's connections
# to close; SIGINT is PostgreSQL's fast shutdown.
export CLOAKROOM_POSTGRES_FAULT_STOP_SIGNAL=INT
unset pg_bin pg_port
