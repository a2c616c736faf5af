# Redis for the tests: sourced by tests/run (see lib.sh for the conventions).
#
# Starts five private things on free loopback ports under $CLOAKROOM_TEST_DIR:
#   * the main redis-server, shared by the tests that run in parallel
#     (each uses its own key prefix):          CLOAKROOM_REDIS_URL
#   * a second redis-server that only the fault test uses, because that test
#     stops and restarts it:                   CLOAKROOM_REDIS_FAULT_URL,
#                                              CLOAKROOM_REDIS_FAULT_PIDFILE,
#                                              CLOAKROOM_REDIS_FAULT_START
#   * a Redis Cluster of three masters:        CLOAKROOM_REDIS_CLUSTER_URL
#                                              (redis+cluster://:pw@h:p,h:p,h:p)
#   * a second one that only the fault test uses, because it stops and
#     restarts one of its masters:             CLOAKROOM_REDIS_CLUSTER_FAULT_URL,
#                                              CLOAKROOM_REDIS_CLUSTER_FAULT_<N>_PIDFILE,
#                                              CLOAKROOM_REDIS_CLUSTER_FAULT_<N>_START
#                                              (N = 1, 2, 3, in the URL's order)
#   * a redis-server that also speaks TLS, with a certificate from a private
#     CA made here:                            CLOAKROOM_REDIS_TLS_URL (rediss://),
#                                              CLOAKROOM_REDIS_TLS_CA (PEM file)
#
# The main server and the cluster require a password (it is in their URLs),
# so every test on them also checks authentication.
#
# Nothing is persisted (--save '' --appendonly no): every run starts empty.

need_packages redis-server redis-tools openssl

# redis_instance NAME PORT [EXTRA ARGS...]: writes $CLOAKROOM_TEST_DIR/NAME/start,
# a script that starts one daemonized redis-server on PORT and returns once it
# answers PING, runs it, and registers its pid file.
redis_instance() {
  local name=$1 port=$2
  shift 2
  local dir="$CLOAKROOM_TEST_DIR/$name"
  mkdir -p "$dir"
  # The arguments are baked in with printf %q so the start script works from
  # a test process that has none of this shell's variables.
  {
    echo '#!/usr/bin/env bash'
    echo 'set -eu'
    printf 'redis-server --daemonize yes --bind 127.0.0.1 --port %q' "$port"
    printf " --save '' --appendonly no --dir %q" "$dir"
    printf ' --pidfile %q --logfile %q' "$dir/redis.pid" "$dir/redis.log"
    if [ $# -gt 0 ]; then printf ' %q' "$@"; fi
    echo
    # A server with a password answers NOAUTH, which also means it is up.
    printf 'for _ in $(seq 100); do\n'
    printf '  case "$(redis-cli -h 127.0.0.1 -p %q ping 2>&1)" in PONG|*NOAUTH*) exit 0;; esac\n' "$port"
    printf '  sleep 0.05\ndone\n'
    printf 'echo "redis on port %q did not start; see %q" >&2\nexit 1\n' "$port" "$dir/redis.log"
  } >"$dir/start"
  chmod +x "$dir/start"
  track_pidfile "$dir/redis.pid"
  "$dir/start"
}

# redis_cluster NAME [EXTRA ARGS...]: three masters NAME-1..3 (each with the
# extra arguments) made into a Redis Cluster with a password of its own; sets
# redis_cluster_url to its redis+cluster:// URL once every node reports
# cluster_state:ok.
redis_cluster() {
  local name=$1 nodes=() hosts="" ok=0 p n node
  shift
  # REDISCLI_AUTH keeps the password off redis-cli's command line.
  local -x REDISCLI_AUTH
  REDISCLI_AUTH=$(python3 -c 'import secrets; print(secrets.token_hex(12))')
  for n in 1 2 3; do
    p=$(free_port)
    # The bus port defaults to port + 10000, which overflows for the high ports
    # free_port hands out, so it gets a free port of its own.
    redis_instance "$name-$n" "$p" \
      --cluster-enabled yes --cluster-port "$(free_port)" \
      --cluster-config-file "$CLOAKROOM_TEST_DIR/$name-$n/nodes.conf" \
      --cluster-node-timeout 5000 --requirepass "$REDISCLI_AUTH" --masterauth "$REDISCLI_AUTH" "$@"
    nodes+=("127.0.0.1:$p")
    hosts="${hosts:+$hosts,}127.0.0.1:$p"
  done
  redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes >/dev/null
  # `--cluster create` returns once the slots are assigned; the nodes agree on
  # the state a moment later.
  for _ in $(seq 100); do
    ok=0
    for node in "${nodes[@]}"; do
      redis-cli -h 127.0.0.1 -p "${node##*:}" cluster info 2>/dev/null | grep -q '^cluster_state:ok' && ok=$((ok + 1))
    done
    [ "$ok" -eq 3 ] && break
    sleep 0.1
  done
  [ "$ok" -eq 3 ] || { log "the redis cluster $name did not reach cluster_state:ok"; return 1; }
  redis_cluster_url="redis+cluster://:$REDISCLI_AUTH@$hosts"
}

redis_port=$(free_port)
redis_password=$(python3 -c 'import secrets; print(secrets.token_hex(12))')
redis_instance redis "$redis_port" --requirepass "$redis_password"
export CLOAKROOM_REDIS_URL="redis://:$redis_password@127.0.0.1:$redis_port"

if extra_instances; then
  redis_fault_port=$(free_port)
  # Persistent, with an fsync per write, so that the fault test can check that
  # what was acknowledged before an outage is there after it (later arguments
  # override the --appendonly no that redis_instance puts first).
  redis_instance redis-fault "$redis_fault_port" --appendonly yes --appendfsync always
  export CLOAKROOM_REDIS_FAULT_URL="redis://127.0.0.1:$redis_fault_port"
  export CLOAKROOM_REDIS_FAULT_PIDFILE="$CLOAKROOM_TEST_DIR/redis-fault/redis.pid"
  export CLOAKROOM_REDIS_FAULT_START="$CLOAKROOM_TEST_DIR/redis-fault/start"

  redis_cluster redis-cluster
  export CLOAKROOM_REDIS_CLUSTER_URL="$redis_cluster_url"
  # A second cluster for the fault test, which stops one of its masters. Its
  # nodes keep an append-only file with an fsync per write, so that what was
  # acknowledged before an outage is there after it.
  redis_cluster redis-cluster-fault --appendonly yes --appendfsync always
  export CLOAKROOM_REDIS_CLUSTER_FAULT_URL="$redis_cluster_url"
  for n in 1 2 3; do
    export "CLOAKROOM_REDIS_CLUSTER_FAULT_${n}_PIDFILE=$CLOAKROOM_TEST_DIR/redis-cluster-fault-$n/redis.pid"
    export "CLOAKROOM_REDIS_CLUSTER_FAULT_${n}_START=$CLOAKROOM_TEST_DIR/redis-cluster-fault-$n/start"
  done

  # TLS: a private CA and a certificate for 127.0.0.1 signed by it.
  redis_tls_dir="$CLOAKROOM_TEST_DIR/redis-tls"
  mkdir -p "$redis_tls_dir"
  (
    cd "$redis_tls_dir"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
      -subj "/CN=cloakroom test CA" -keyout ca.key -out ca.pem 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
      -subj "/CN=127.0.0.1" -keyout server.key -out server.csr 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
      -extfile server.ext -out server.pem 2>/dev/null
  )
  redis_tls_port=$(free_port)
  # It listens in plain text too (on another port) only so that its start
  # script can check that it is up with a plain redis-cli.
  redis_instance redis-tls "$(free_port)" --tls-port "$redis_tls_port" \
    --tls-cert-file "$redis_tls_dir/server.pem" --tls-key-file "$redis_tls_dir/server.key" \
    --tls-ca-cert-file "$redis_tls_dir/ca.pem" --tls-auth-clients no
  export CLOAKROOM_REDIS_TLS_URL="rediss://127.0.0.1:$redis_tls_port"
  export CLOAKROOM_REDIS_TLS_CA="$redis_tls_dir/ca.pem"

fi

unset redis_cluster_url n redis_password redis_tls_dir
