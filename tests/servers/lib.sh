# Helpers shared by the server scripts in this directory. Sourced by tests/run.
#
# Conventions for a server script tests/servers/NAME.sh:
#   * install what is missing with `need_packages pkg...`
#   * put all state under "$CLOAKROOM_TEST_DIR/NAME..." and pick ports with `free_port`
#   * write a start script (so fault tests can restart the server) and run it;
#     register the pid file with `track_pidfile` so the server is stopped at exit
#   * export CLOAKROOM_<NAME>_URL (and _PIDFILE / _START for fault tests)
#   * start the instances beyond the main one (fault, cluster, TLS) only when
#     `extra_instances` says so: with CLOAKROOM_SERVERS=main (set by
#     bench/run) only the main instance of each server starts

log() { printf '[tests/run] %s\n' "$*" >&2; }

# extra_instances: true unless CLOAKROOM_SERVERS=main asks for only the
# main instance of each server.
extra_instances() { [ "${CLOAKROOM_SERVERS:-all}" != main ]; }

# need_packages PKG...: installs the Debian packages that are not installed yet.
need_packages() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then
    log "not root: cannot install ${missing[*]}"; return 1
  fi
  if [ -z "${CLOAKROOM_APT_UPDATED:-}" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    CLOAKROOM_APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

# free_port: prints a TCP port on 127.0.0.1 that nothing listens on now.
free_port() {
  python3 - <<'PY'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
PY
}

# wait_port PORT [SECONDS]: waits until something accepts on 127.0.0.1:PORT.
wait_port() {
  local port=$1 deadline=$((SECONDS + ${2:-30}))
  until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    [ $SECONDS -ge $deadline ] && { log "nothing listens on port $port"; return 1; }
    sleep 0.1
  done
}

CLOAKROOM_PIDFILES=()
# track_pidfile FILE: the process whose pid is in FILE (read at exit, so a
# restarted server is still found) is stopped when the run ends.
track_pidfile() { CLOAKROOM_PIDFILES+=("$1"); }

CLOAKROOM_STOP_HOOKS=()
# on_stop CMD: runs CMD at exit, before pid files are cleaned up.
on_stop() { CLOAKROOM_STOP_HOOKS+=("$1"); }

stop_servers() {
  local rc=$?
  for hook in "${CLOAKROOM_STOP_HOOKS[@]}"; do eval "$hook" >/dev/null 2>&1 || true; done
  # A server may remove its pid file as it exits, so every read may fail.
  local pids=()
  for f in "${CLOAKROOM_PIDFILES[@]}"; do
    local pid; pid=$(cat "$f" 2>/dev/null) || continue
    [ -n "$pid" ] && pids+=("$pid") && kill "$pid" 2>/dev/null || true
  done
  # Give servers a moment to exit before their files go.
  for pid in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  if [ -z "${CLOAKROOM_KEEP_TEST_DIR:-}" ]; then rm -rf "$CLOAKROOM_TEST_DIR"; fi
  exit $rc
}
