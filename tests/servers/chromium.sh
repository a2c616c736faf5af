# Headless Chromium for the dashboard's browser test: sourced by tests/run
# (see lib.sh for the conventions).
#
# Starts Debian's chromedriver on a free loopback port, with its log under
# $CLOAKROOM_TEST_DIR/chromium:             CLOAKROOM_CHROMEDRIVER_URL
# The test asks it for a browser (Debian's /usr/bin/chromium, headless, a
# fresh profile under $CLOAKROOM_TEST_DIR), and chromedriver starts it as
# its child.
#
# chromedriver runs in a process group of its own (setsid), so stopping the
# group also stops any browser a failed test left open.

need_packages chromium chromium-driver

chromium_dir="$CLOAKROOM_TEST_DIR/chromium"
chromium_port=$(free_port)
mkdir -p "$chromium_dir"
{
  echo '#!/usr/bin/env bash'
  echo 'set -eu'
  printf 'setsid chromedriver --port=%q --log-path=%q </dev/null >/dev/null 2>&1 &\n' \
    "$chromium_port" "$chromium_dir/chromedriver.log"
  printf 'echo $! >%q\n' "$chromium_dir/chromedriver.pid"
  printf 'for _ in $(seq 100); do\n'
  printf '  (exec 3<>/dev/tcp/127.0.0.1/%q) 2>/dev/null && exit 0\n' "$chromium_port"
  printf '  sleep 0.05\ndone\n'
  printf 'echo "chromedriver on port %q did not start; see %q" >&2\nexit 1\n' \
    "$chromium_port" "$chromium_dir/chromedriver.log"
} >"$chromium_dir/start"
chmod +x "$chromium_dir/start"
# The group first (chromedriver and the browsers it started; setsid made
# its pid the group id), then the pid file as for every server.
on_stop "[ -s $(printf '%q' "$chromium_dir/chromedriver.pid") ] && kill -- -\$(cat $(printf '%q' "$chromium_dir/chromedriver.pid"))"
track_pidfile "$chromium_dir/chromedriver.pid"
"$chromium_dir/start"
export CLOAKROOM_CHROMEDRIVER_URL="http://127.0.0.1:$chromium_port"
export CLOAKROOM_CHROMIUM_BINARY=/usr/bin/chromium
unset chromium_dir chromium_port
