# Memcached for the tests: sourced by tests/run (see lib.sh for the conventions).
#
# Starts four private memcached instances on free loopback ports, all with the
# default 1 MiB item size limit and state under $CLOAKROOM_TEST_DIR:
#   * two shared by the tests that run in parallel (each uses its own key
#     prefix):                      CLOAKROOM_MEMCACHED_URL (the first alone),
#                                   CLOAKROOM_MEMCACHED_PAIR_URL (both)
#   * two that only the fault test uses, because it stops and restarts the
#     second of them:               CLOAKROOM_MEMCACHED_FAULT_URL (both),
#                                   CLOAKROOM_MEMCACHED_FAULT_VICTIM (host:port),
#                                   CLOAKROOM_MEMCACHED_FAULT_PIDFILE,
#                                   CLOAKROOM_MEMCACHED_FAULT_START
#
# memcached keeps nothing on disk: every run starts empty.

need_packages memcached

# memcached_instance NAME PORT: writes $CLOAKROOM_TEST_DIR/NAME/start, a script
# that starts one daemonized memcached on PORT and returns once it accepts
# connections, runs it, and registers its pid file.
memcached_instance() {
  local name=$1 port=$2
  local dir="$CLOAKROOM_TEST_DIR/$name"
  mkdir -p "$dir"
  # Values are baked in with printf %q so the start script works from a test
  # process that has none of this shell's variables. -U 0: no UDP.
  {
    echo '#!/usr/bin/env bash'
    echo 'set -eu'
    printf 'rm -f %q\n' "$dir/memcached.pid"
    printf 'memcached -d -u root -l 127.0.0.1 -p %q -U 0 -m 64 -P %q\n' "$port" "$dir/memcached.pid"
    printf 'for _ in $(seq 100); do\n'
    printf '  (exec 3<>/dev/tcp/127.0.0.1/%q) 2>/dev/null && [ -s %q ] && exit 0\n' "$port" "$dir/memcached.pid"
    printf '  sleep 0.05\ndone\n'
    printf 'echo "memcached on port %q did not start" >&2\nexit 1\n' "$port"
  } >"$dir/start"
  chmod +x "$dir/start"
  track_pidfile "$dir/memcached.pid"
  "$dir/start"
}

memcached_port_1=$(free_port)
memcached_instance memcached-1 "$memcached_port_1"
memcached_port_2=$(free_port)
memcached_instance memcached-2 "$memcached_port_2"
export CLOAKROOM_MEMCACHED_URL="memcached://127.0.0.1:$memcached_port_1"
export CLOAKROOM_MEMCACHED_PAIR_URL="memcached://127.0.0.1:$memcached_port_1,127.0.0.1:$memcached_port_2"

if extra_instances; then
  memcached_fault_port_1=$(free_port)
  memcached_instance memcached-fault-1 "$memcached_fault_port_1"
  memcached_fault_port_2=$(free_port)
  memcached_instance memcached-fault-2 "$memcached_fault_port_2"
  export CLOAKROOM_MEMCACHED_FAULT_URL="memcached://127.0.0.1:$memcached_fault_port_1,127.0.0.1:$memcached_fault_port_2"
  export CLOAKROOM_MEMCACHED_FAULT_VICTIM="127.0.0.1:$memcached_fault_port_2"
  export CLOAKROOM_MEMCACHED_FAULT_PIDFILE="$CLOAKROOM_TEST_DIR/memcached-fault-2/memcached.pid"
  export CLOAKROOM_MEMCACHED_FAULT_START="$CLOAKROOM_TEST_DIR/memcached-fault-2/start"
fi
unset memcached_port_1 memcached_port_2 memcached_fault_port_1 memcached_fault_port_2
