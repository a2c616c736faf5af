# shellcheck shell=bash disable=SC2154 # work, log and fail come from run
# The images docker-compose.yml and examples/dashboard/Dockerfile name, for a
# machine that cannot pull from Docker Hub. Sourced by tests/compose/run,
# which defines `log`, `fail` and `$work` (a scratch directory it removes).
#
# Each image is pulled first; when the pull works the real image is used and
# nothing is built. Otherwise a stand-in is built under the same name from
# Debian's packages (images/NAME/), on a Debian base made with debootstrap.
# A stand-in carries a label with the hash of everything it was built from,
# so a later run reuses it until one of those inputs changes.

STANDIN_LABEL=cloakroom.standin.key
STANDIN_DIR=tests/compose/images
# A registry that answers does so within seconds; a pull that hangs (a
# firewall that drops rather than refuses) counts as unreachable.
PULL_SECONDS=${CLOAKROOM_PULL_SECONDS:-60}

# The label a local image carries, empty when it has none or does not exist.
standin_key_of() {
  docker image inspect -f "{{ index .Config.Labels \"$STANDIN_LABEL\" }}" "$1" 2>/dev/null || true
}

# A hash of the given strings and of every file under the given paths.
inputs_hash() {
  {
    for arg in "$@"; do
      if [ -e "$arg" ]; then
        find "$arg" -type f -print0 | sort -z | xargs -0 sha256sum
      else
        printf '%s\n' "$arg"
      fi
    done
  } | sha256sum | cut -c1-32
}

# pull IMAGE: true when IMAGE could be pulled from its registry.
pull() {
  if timeout "$PULL_SECONDS" docker pull -q "$1" >"$work/pull.log" 2>&1; then
    log "pulled $1: the real image is used"
    return 0
  fi
  log "cannot pull $1 ($(tail -n 1 "$work/pull.log" | cut -c1-120))"
  return 1
}

# need_image IMAGE KEY BUILD_FUNCTION: IMAGE pulled, or a stand-in built by
# BUILD_FUNCTION IMAGE KEY unless one with KEY is there already.
need_image() {
  local image=$1 key=$2 build=$3
  pull "$image" && return 0
  local have
  have=$(standin_key_of "$image")
  if [ "$have" = "$key" ]; then
    log "reusing the stand-in $image"
    return 0
  fi
  if [ -z "$have" ] && docker image inspect "$image" >/dev/null 2>&1; then
    # Pulled by an earlier run, when the registry answered: the real one.
    log "using $image as found locally (no stand-in label: pulled earlier)"
    return 0
  fi
  log "building the stand-in $image"
  local old
  old=$(docker image inspect -f '{{.Id}}' "$image" 2>/dev/null || true)
  "$build" "$image" "$key"
  # The stand-in it replaces, untagged now, would stay on disk for good.
  # (An old base still under old stand-ins goes with the last of them.)
  if [ -n "$old" ] && [ "$old" != "$(docker image inspect -f '{{.Id}}' "$image")" ]; then
    docker rmi "$old" >/dev/null 2>&1 || true
  fi
}

# The Debian mirror this machine's apt uses, so the base is made from the
# same (reachable) place.
debian_mirror() {
  local found
  # (`|| true`: a machine may have no file of one of the two formats, and
  # cat then fails the pipeline.)
  found=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null |
    awk '!found && /^URIs:/ && $2 ~ /\/debian\/?$/ { print $2; found = 1 }' || true)
  if [ -z "$found" ]; then
    found=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
      awk '!found && $1 == "deb" && $2 !~ /^\[/ && $2 ~ /\/debian\/?$/ { print $2; found = 1 }' || true)
  fi
  printf '%s\n' "${found:-http://deb.debian.org/debian}"
}

# The host's extra certificate authorities: HTTPS from here may go through
# a proxy that signs with its own, and cargo in the build container must
# trust it to fetch crates.
host_cas() {
  find /usr/local/share/ca-certificates -type f -name '*.crt' 2>/dev/null | sort
}

build_base() {
  local image=$1 key=$2 root="$work/rootfs" mirror
  mirror=$(debian_mirror)
  log "debootstrap bookworm from $mirror"
  debootstrap --variant=minbase bookworm "$root" "$mirror" >"$work/debootstrap.log" 2>&1 ||
    fail "debootstrap failed: $(tail -n 5 "$work/debootstrap.log")"
  # What the official image has: updates and security in the sources, no
  # service started by a package's install script (no init runs in a
  # container), and no documentation.
  cat >"$root/etc/apt/sources.list" <<EOF
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb ${mirror%/debian*}/debian-security bookworm-security main
EOF
  printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
  chmod +x "$root/usr/sbin/policy-rc.d"
  cat >"$root/etc/dpkg/dpkg.cfg.d/standin-nodoc" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
EOF
  printf 'APT::Install-Recommends "false";\n' >"$root/etc/apt/apt.conf.d/90standin"
  local ca
  mkdir -p "$root/usr/local/share/ca-certificates"
  while read -r ca; do
    [ -n "$ca" ] && cp "$ca" "$root/usr/local/share/ca-certificates/"
  done < <(host_cas)
  chroot "$root" sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ca-certificates && update-ca-certificates' \
    >"$work/base-apt.log" 2>&1 || fail "installing ca-certificates in the base failed: $(tail -n 5 "$work/base-apt.log")"
  chroot "$root" apt-get clean
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin
  # Docker writes its own resolv.conf and hosts into each container.
  : >"$root/etc/resolv.conf"
  tar -C "$root" -c . | docker import \
    --change "LABEL $STANDIN_LABEL=$key" \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["bash"]' \
    - "$image" >/dev/null || fail "docker import of the base failed"
  rm -rf "$root"
}

# build_from_dir IMAGE KEY DIR: docker build of a stand-in directory.
build_from_dir() {
  local image=$1 key=$2 dir=$3 name
  name=$(basename "$dir")
  docker build --label "$STANDIN_LABEL=$key" -t "$image" "$dir" >"$work/build-$name.log" 2>&1 ||
    fail "building the stand-in $image failed: $(tail -n 20 "$work/build-$name.log")"
}

build_rust() {
  local image=$1 key=$2 sysroot context="$work/rust-context"
  sysroot=$(rustc --print sysroot)
  mkdir -p "$context"
  cp "$STANDIN_DIR/rust/Dockerfile" "$context/"
  # Hard links when the toolchain is on the same file system: nothing to
  # copy but the directory tree.
  cp -al "$sysroot" "$context/toolchain" 2>/dev/null || cp -a "$sysroot" "$context/toolchain"
  rm -rf "$context/toolchain/share/doc"
  build_from_dir "$image" "$key" "$context"
  rm -rf "$context"
}

# The image each service of docker-compose.yml runs, and the images the
# dashboard's Dockerfile starts FROM, as they are named there. (awk reads to
# the end: a reader that stops early would fail the pipeline on SIGPIPE.)
compose_image() {
  docker-compose -f docker-compose.yml config 2>/dev/null |
    awk -v svc="  $1:" '$0 == svc { inside = 1; next } /^  [^ ]/ { inside = 0 } inside && $1 == "image:" { print $2 }'
}
dockerfile_images() {
  awk 'toupper($1) == "FROM" { print $2 }' examples/dashboard/Dockerfile
}

# Makes sure every image the stack needs is there, pulled or stood in.
prepare_images() {
  command -v debootstrap >/dev/null 2>&1 || need_packages debootstrap
  local base="" rust="" line
  while read -r line; do
    case "$line" in
      rust:*) rust=$line ;;
      debian:*) base=$line ;;
      *) fail "examples/dashboard/Dockerfile starts FROM $line, which tests/compose has no stand-in for" ;;
    esac
  done < <(dockerfile_images)
  if [ -z "$base" ] || [ -z "$rust" ]; then
    fail "expected a rust and a debian image in examples/dashboard/Dockerfile"
  fi

  local cas
  cas=$(host_cas | tr '\n' ' ')
  # shellcheck disable=SC2086 # one path per CA file
  need_image "$base" "$(inputs_hash "$(declare -f build_base)" "$(debian_mirror)" $cas)" build_base
  local base_id
  base_id=$(docker image inspect -f '{{.Id}}' "$base")

  local service image
  for service in redis memcached mariadb postgres; do
    image=$(compose_image "$service")
    [ -n "$image" ] || fail "docker-compose.yml has no image for the service $service"
    need_image "$image" "$(inputs_hash "$base_id" "$STANDIN_DIR/$service")" "build_$service"
  done
  need_image "$rust" "$(inputs_hash "$base_id" "$(rustc -vV)" "$(declare -f build_rust)" "$STANDIN_DIR/rust")" build_rust
}

build_redis() { build_from_dir "$1" "$2" "$STANDIN_DIR/redis"; }
build_memcached() { build_from_dir "$1" "$2" "$STANDIN_DIR/memcached"; }
build_mariadb() { build_from_dir "$1" "$2" "$STANDIN_DIR/mariadb"; }
build_postgres() { build_from_dir "$1" "$2" "$STANDIN_DIR/postgres"; }
