# PostgreSQL for the tests: sourced by tests/run (see lib.sh for the
# conventions).
#
# Starts one private cluster (initdb + pg_ctl, as the postgres user) on a
# free loopback port under $CLOAKROOM_TEST_DIR, with its socket there too, so
# the machine's own PostgreSQL, if any, is not touched:
#                                              CLOAKROOM_POSTGRES_URL
# The tests share it; each uses its own table. Durability is traded for
# speed (fsync off).

need_packages postgresql

pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
pg_dir="$CLOAKROOM_TEST_DIR/postgres"
pg_port=$(free_port)
mkdir -p "$pg_dir"
chown postgres "$pg_dir"
su postgres -c "$(printf '%q -D %q -A trust -U postgres --no-sync' "$pg_bin/initdb" "$pg_dir/data")" >/dev/null

# The start script: pg_ctl waits (-w) until the server accepts connections.
# postmaster.pid holds more than the pid, so its first line is copied to a
# pid file of the kind lib.sh reads.
{
  echo '#!/usr/bin/env bash'
  echo 'set -eu'
  pg_opts=$(printf -- "-p %q -k %q -c listen_addresses=127.0.0.1 -c max_connections=400 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" "$pg_port" "$pg_dir")
  printf 'su postgres -c %q\n' "$(printf '%q -D %q -o %q -l %q -w start' "$pg_bin/pg_ctl" "$pg_dir/data" "$pg_opts" "$pg_dir/postgres.log")"
  printf 'head -n 1 %q >%q\n' "$pg_dir/data/postmaster.pid" "$pg_dir/postgres.pid"
} >"$pg_dir/start"
chmod +x "$pg_dir/start"
# A fast shutdown first (disconnects clients, no waiting for them); the pid
# file is the fallback.
on_stop "su postgres -c $(printf '%q' "$(printf '%q -D %q -m fast -w stop' "$pg_bin/pg_ctl" "$pg_dir/data")")"
track_pidfile "$pg_dir/postgres.pid"
"$pg_dir/start" >/dev/null

export CLOAKROOM_POSTGRES_URL="postgres://postgres@127.0.0.1:$pg_port/postgres"
unset pg_bin pg_dir pg_port pg_opts
