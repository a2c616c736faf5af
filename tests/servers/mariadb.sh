# MariaDB for the tests: sourced by tests/run (see lib.sh for the conventions).
#
# Starts two private mariadbd instances on free loopback ports under
# $CLOAKROOM_TEST_DIR, each with its own data directory, socket and config
# file (the machine's own MariaDB, if any, is not touched):
#   * the main one, shared by the tests that run in parallel (each uses its
#     own table):                              CLOAKROOM_MARIADB_URL
#   * a second one that only the fault test uses, because that test stops
#     and restarts it:                         CLOAKROOM_MARIADB_FAULT_URL,
#                                              CLOAKROOM_MARIADB_FAULT_PIDFILE,
#                                              CLOAKROOM_MARIADB_FAULT_START
#
# Each gets the database, user and grant that crates/cloakroom-sql/README.md
# tells operators to create, so the tests also check those commands.
# Durability is traded for speed where only a machine crash could tell: no
# binlog, and InnoDB writes its log at each commit but syncs it once a second
# (a killed mariadbd keeps every acknowledged write).

need_packages mariadb-server mariadb-client

mariadb_password="cloakroom-test-pw"

# mariadb_config NAME PORT: writes $CLOAKROOM_TEST_DIR/NAME/my.cnf.
mariadb_config() {
  local name=$1 port=$2
  local dir="$CLOAKROOM_TEST_DIR/$name"
  mkdir -p "$dir/data" "$dir/run"
  cat >"$dir/my.cnf" <<EOF
[mariadbd]
user = mysql
datadir = $dir/data
socket = $dir/run/sock
pid-file = $dir/run/pid
log-error = $dir/run/err
bind-address = 127.0.0.1
port = $port
skip-name-resolve
skip-log-bin
max-connections = 400
innodb-buffer-pool-size = 256M
innodb-log-file-size = 256M
innodb-flush-log-at-trx-commit = 2
EOF
  # mariadbd runs as mysql and writes its pid and log files here.
  chown -R mysql:mysql "$dir"
}

# mariadb_instance NAME PORT: writes $CLOAKROOM_TEST_DIR/NAME/start, a script
# that starts mariadbd on an existing data directory and returns once it
# answers, runs it, registers the pid file, and creates the test database.
mariadb_instance() {
  local name=$1 port=$2
  local dir="$CLOAKROOM_TEST_DIR/$name"
  {
    echo '#!/usr/bin/env bash'
    echo 'set -eu'
    printf 'setsid mariadbd --defaults-file=%q </dev/null >/dev/null 2>&1 &\n' "$dir/my.cnf"
    printf 'for _ in $(seq 300); do\n'
    printf '  mariadb-admin --no-defaults -uroot -S %q ping >/dev/null 2>&1 && exit 0\n' "$dir/run/sock"
    printf '  sleep 0.05\ndone\n'
    printf 'echo "mariadbd on port %q did not start; see %q" >&2\nexit 1\n' "$port" "$dir/run/err"
  } >"$dir/start"
  chmod +x "$dir/start"
  track_pidfile "$dir/run/pid"
  "$dir/start"
  # The commands of the README's "MySQL / MariaDB setup"; 127.0.0.1 because
  # with skip-name-resolve a TCP client is known by its address.
  mariadb --no-defaults -uroot -S "$dir/run/sock" <<EOF
CREATE DATABASE cloakroom CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
CREATE USER 'cloakroom'@'127.0.0.1' IDENTIFIED BY '$mariadb_password';
GRANT ALL PRIVILEGES ON cloakroom.* TO 'cloakroom'@'127.0.0.1';
EOF
}

mariadb_port=$(free_port)
mariadb_config mariadb "$mariadb_port"
mariadb-install-db --defaults-file="$CLOAKROOM_TEST_DIR/mariadb/my.cnf" \
  --auth-root-authentication-method=normal --skip-test-db >/dev/null
# The fault instance starts from a copy of the fresh data directory, which is
# faster than a second mariadb-install-db.
if extra_instances; then
  mariadb_fault_port=$(free_port)
  mariadb_config mariadb-fault "$mariadb_fault_port"
  cp -a "$CLOAKROOM_TEST_DIR/mariadb/data/." "$CLOAKROOM_TEST_DIR/mariadb-fault/data/"
fi

mariadb_instance mariadb "$mariadb_port"
export CLOAKROOM_MARIADB_URL="mysql://cloakroom:$mariadb_password@127.0.0.1:$mariadb_port/cloakroom"

if extra_instances; then
  mariadb_instance mariadb-fault "$mariadb_fault_port"
  export CLOAKROOM_MARIADB_FAULT_URL="mysql://cloakroom:$mariadb_password@127.0.0.1:$mariadb_fault_port/cloakroom"
  export CLOAKROOM_MARIADB_FAULT_PIDFILE="$CLOAKROOM_TEST_DIR/mariadb-fault/run/pid"
  export CLOAKROOM_MARIADB_FAULT_START="$CLOAKROOM_TEST_DIR/mariadb-fault/start"
fi
unset mariadb_port mariadb_fault_port mariadb_password
