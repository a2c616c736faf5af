# shellcheck shell=bash disable=SC2154 # work, log, fail and the account come from run
# A user's visit to one published dashboard, with curl and a cookie jar as
# the browser. Sourced by tests/compose/run, which defines `log`, `fail`,
# `$work`, USER_NAME and USER_PASSWORD (an account from DASHBOARD_USERS).
# The same journey as tests/tests/dashboard.rs, against the container.

# The project a user without a default one starts in, and the one switched
# to: the first and last of the dashboard's default DASHBOARD_PROJECTS.
FIRST_PROJECT="admin"
OTHER_PROJECT="alt_demo"

# request METHOD PATH JAR [NAME=VALUE...]: sends a request with the cookies
# of JAR and keeps those the answer sets; the status goes to $status, the
# headers and body to $headers and $body (files).
request() {
  local method=$1 path=$2 jar=$3
  shift 3
  local fields=()
  for field in "$@"; do fields+=(--data-urlencode "$field"); done
  status=$(curl -sS --max-time 20 -X "$method" -o "$body" -D "$headers" -w '%{http_code}' \
    -b "$jar" -c "$jar" ${fields[@]+"${fields[@]}"} "$base$path") ||
    fail "$method $path: curl could not get an answer"
  forget_removed_cookies "$jar"
}

# Drops from JAR each cookie the last answer removed with Max-Age=0, as a
# browser does. curl 7.88.1 (Debian 12) kept such cookies in its jar when
# tried here, unless the removal also had an Expires of 1970; the dashboard
# removes dashboard_signed_in and the login CSRF cookie with Max-Age=0 and
# an Expires a year back, so without this the jar sends them on.
forget_removed_cookies() {
  local name cookie_path
  while IFS=$'\t' read -r name cookie_path; do
    awk -F'\t' -v n="$name" -v p="$cookie_path" '!(NF >= 7 && $6 == n && $3 == p)' "$1" >"$1.new"
    mv "$1.new" "$1"
  done < <(tr -d '\r' <"$headers" | awk '
    tolower($1) == "set-cookie:" && tolower($0) ~ /; *max-age=0(;|$)/ {
      name = $2; sub(/=.*/, "", name)
      path = "/"
      if (match(tolower($0), /; *path=[^;]*/)) { path = substr($0, RSTART, RLENGTH); sub(/^; *[^=]*=/, "", path) }
      printf "%s\t%s\n", name, path
    }')
}

# The value of a response header, without its line ending.
header() { sed -n "s/^$1: *//Ip" "$headers" | tr -d '\r' | head -n 1; }

# The text of the element with this id (one without nested tags); empty
# when the page has none, which the caller reports (a failing grep would
# instead end the run here, without a word, under set -e and pipefail).
text_of() { grep -o "id=\"$1\"[^>]*>[^<]*<" "$body" | head -n 1 | sed 's/^[^>]*>//; s/<$//' || true; }

# The first CSRF token in the page (masked: it differs on every page);
# empty when there is none.
csrf_token() { grep -o 'name="csrf_token" value="[^"]*"' "$body" | head -n 1 | sed 's/.*value="//; s/"$//' || true; }

expect_status() {
  [ "$status" = "$1" ] && return 0
  local why
  why=$(text_of login-error)
  fail "$2: expected $1, got $status${why:+ (the page says: $why)}"
}

# expect_redirect TARGET WHAT: a 303 to exactly TARGET.
expect_redirect() {
  expect_status 303 "$2"
  [ "$(header location)" = "$1" ] || fail "$2: redirected to '$(header location)', not '$1'"
}

# expect_text ID VALUE WHAT
expect_text() {
  [ "$(text_of "$1")" = "$2" ] || fail "$3: #$1 shows '$(text_of "$1")', not '$2'"
}

# dashboard_flow SERVICE PORT ENGINE_LABEL server-side|cookie
dashboard_flow() {
  local service=$1 label=$3 revokes=$4
  local base="http://127.0.0.1:$2" dir="$work/flow-$service"
  mkdir -p "$dir"
  local jar="$dir/browser" stolen="$dir/stolen" headers="$dir/headers" body="$dir/body" status=""
  : >"$jar"

  request GET /health "$jar"
  expect_status 200 "$service: GET /health"
  grep -q '"status":"ok"' "$body" || fail "$service: /health says $(cat "$body")"

  # Not logged in: sent to the login page.
  request GET / "$jar"
  expect_redirect /auth/login "$service: GET / before login"

  # The login form's token is masked per page and backed by a signed
  # cookie of its own, which the jar keeps.
  request GET /auth/login "$jar"
  expect_status 200 "$service: GET /auth/login"
  local token
  token=$(csrf_token)
  [ -n "$token" ] || fail "$service: no CSRF token in the login form"
  grep -q dashboard_login_csrf "$jar" || fail "$service: the login form set no CSRF cookie"

  request POST /auth/login "$jar" "username=$USER_NAME" "password=$USER_PASSWORD" "csrf_token=$token"
  expect_redirect / "$service: POST /auth/login"
  grep -qi '^set-cookie: sessionid=' "$headers" || fail "$service: the login set no session cookie"

  request GET / "$jar"
  expect_status 200 "$service: GET / after login"
  expect_text user "$USER_NAME" "$service: the overview after login"
  expect_text project "$FIRST_PROJECT" "$service: the overview after login"
  expect_text engine "$label" "$service: the overview after login"
  expect_text flash-1 "Signed in as $USER_NAME." "$service: the overview after login"

  # A project switch, posted with the session's token, shows on the next page.
  token=$(csrf_token)
  [ -n "$token" ] || fail "$service: no CSRF token in the overview"
  request POST /project "$jar" "project=$OTHER_PROJECT" "csrf_token=$token"
  expect_redirect / "$service: POST /project"
  request GET / "$jar"
  expect_status 200 "$service: GET / after the switch"
  expect_text project "$OTHER_PROJECT" "$service: the overview after the switch"
  expect_text flash-1 "Switched to project $OTHER_PROJECT." "$service: the overview after the switch"
  expect_text user "$USER_NAME" "$service: the overview after the switch"

  # A copy of the logged-in cookies, as someone who took them would hold.
  cp "$jar" "$stolen"
  token=$(csrf_token)
  request POST /auth/logout "$jar" "csrf_token=$token"
  expect_redirect "/auth/login?reason=signed_out" "$service: POST /auth/logout"
  request GET / "$jar"
  expect_redirect /auth/login "$service: GET / after logout"

  request GET / "$stolen"
  if [ "$revokes" = server-side ]; then
    # The session is gone from the backend: the copy opens nothing, and a
    # form posted with it is not taken.
    expect_redirect "/auth/login?reason=expired" "$service: the copied cookie after logout"
    request POST /project "$stolen" "project=$FIRST_PROJECT" "csrf_token=$token"
    expect_redirect "/auth/login?reason=expired" "$service: a switch posted with the copied cookie"
  else
    # What README.md documents for the cookie engines: logout removes the
    # cookie from this browser, but a copy stays valid until its deadline.
    # The dashboard sets no session check (SessionLayer::with_session_check)
    # that could refuse it, so the copy still opens the overview.
    expect_status 200 "$service: the copied cookie after logout (documented to keep working)"
    expect_text user "$USER_NAME" "$service: the copied cookie after logout"
  fi
}
