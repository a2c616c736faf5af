#!/bin/sh
# The tests of the official image's healthcheck.sh that the compose file
# uses; each named test must pass. It connects with the account the
# entrypoint made, over TCP: during setup the server listens on a private
# socket only, so a pass means clients on the network can get in.
set -eu
cnf=/var/lib/mysql/.my-healthcheck.cnf
if [ ! -r "$cnf" ]; then
  echo "healthcheck.sh: $cnf is missing: the server is not set up yet" >&2
  exit 1
fi
query() {
  mariadb --defaults-extra-file="$cnf" --protocol=tcp --host=127.0.0.1 \
    --batch --skip-column-names -e "$1"
}
for test in "$@"; do
  case "$test" in
    --connect)
      query 'SELECT 1' >/dev/null ;;
    --innodb_initialized)
      [ "$(query "SELECT COUNT(*) FROM information_schema.ENGINES WHERE ENGINE = 'InnoDB' AND SUPPORT IN ('YES', 'DEFAULT')")" = 1 ] ;;
    *)
      echo "healthcheck.sh: this stand-in does not know $test" >&2
      exit 2 ;;
  esac || { echo "healthcheck.sh: $test failed" >&2; exit 1; }
done
