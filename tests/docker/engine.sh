#!/usr/bin/env bash
# The Docker engine for the `docker` tests, set up on this (Debian bookworm, root) machine,
# installing only what is missing; idempotent. Called by tests/docker/conftest.py, so
# `./dev test` and `.ci/run` need nothing else. Prints one line per step to stderr and
# exits non-zero with the reason when the engine cannot be had.
#   1. the engine: Debian's docker.io, started as
#      dockerd --iptables=false --ip6tables=false --bridge=none  (no host firewall or bridge
#      changes; compose's own network still works between the containers)
#   2. Compose v2: bookworm has only v1, so the static plugin of Debian trixie's
#      docker-compose package, fetched with apt-get download and a trixie sources list kept
#      in a temporary folder
#   3. stand-ins for the two images no registry can give here (tests only; the compose file
#      keeps the official ones): facehpo-ci/python:3.11 (debootstrap bookworm with python3,
#      the machine's CA bundle and PIP_CERT) and facehpo-ci/postgres:15 (Debian's
#      postgresql-15 behind an entrypoint honouring the postgres image's variables)
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
PY_IMAGE="${FACEHPO_CI_PYTHON:-facehpo-ci/python:3.11}"
PG_IMAGE="${FACEHPO_CI_POSTGRES:-facehpo-ci/postgres:15}"
CA=/etc/ssl/certs/ca-certificates.crt
LOG=/var/log/facehpo-dockerd.log
PIDFILE=/run/facehpo-dockerd.pid
say() { echo "engine.sh: $*" >&2; }
die() { say "$*"; exit 1; }
cannot() { say "$*"; exit 2; }  # exit 2: no engine can start on this machine (the tests skip)

apt_install() {
    [ "$(id -u)" = 0 ] || cannot "not root: cannot install $* (install it, or run as root)"
    command -v apt-get >/dev/null || cannot "no apt-get: install $* by hand"
    say "installing $* (Debian packages)"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends "$@"; } >/dev/null 2>&1 || die "apt-get install $* failed"
}

engine() {
    docker info >/dev/null 2>&1 && return
    command -v dockerd >/dev/null || apt_install docker.io
    [ "$(id -u)" = 0 ] || cannot "the engine is not running and only root can start it"
    say "starting dockerd (log: $LOG, pid in $PIDFILE)"
    # setsid: the daemon outlives this script; the test session stops it at its end
    setsid dockerd --iptables=false --ip6tables=false --bridge=none --pidfile "$PIDFILE" \
        >"$LOG" 2>&1 < /dev/null &
    for _ in $(seq 60); do
        docker info >/dev/null 2>&1 && return
        sleep 1
    done
    die "dockerd did not start within 60 s: $(tail -n 3 "$LOG" | tr '\n' ' ')"
}

compose() {
    docker compose version >/dev/null 2>&1 && return
    command -v apt-get >/dev/null || die "no Compose v2 and no apt-get to fetch it"
    say "fetching Compose v2 (Debian trixie's docker-compose)"
    local t; t="$(mktemp -d)"
    trap 'rm -rf "$t"' RETURN
    mkdir -p "$t/lists/partial" "$t/cache/archives/partial"
    echo "deb http://deb.debian.org/debian trixie main" > "$t/sources.list"
    local o=(-o "Dir::Etc::sourcelist=$t/sources.list" -o Dir::Etc::sourceparts=-
             -o "Dir::State::lists=$t/lists" -o "Dir::Cache=$t/cache" -o APT::Sandbox::User=root)
    { apt-get "${o[@]}" update -qq && (cd "$t" && apt-get "${o[@]}" download docker-compose); } \
        >/dev/null 2>&1 || die "could not download trixie's docker-compose package"
    dpkg -x "$t"/docker-compose_*.deb "$t/x"
    mkdir -p "$HOME/.docker/cli-plugins"
    install -m 755 "$t/x/usr/libexec/docker/cli-plugins/docker-compose" "$HOME/.docker/cli-plugins/"
    docker compose version >/dev/null 2>&1 || die "the Compose plugin does not run here"
}

python_base() {
    docker image inspect "$PY_IMAGE" >/dev/null 2>&1 && return
    command -v debootstrap >/dev/null || apt_install debootstrap
    say "building $PY_IMAGE with debootstrap (a few minutes)"
    local t; t="$(mktemp -d /var/tmp/facehpo-rootfs.XXXXXX)"
    trap 'rm -rf "$t"' RETURN
    debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
        bookworm "$t" http://deb.debian.org/debian >"$t.log" 2>&1 \
        || die "debootstrap failed: $(tail -n 3 "$t.log" | tr '\n' ' ')"
    rm -f "$t.log" "$t"/usr/lib/python3*/EXTERNALLY-MANAGED  # the official image has none
    cp "$CA" "$t/etc/ssl/certs/ca-certificates.crt"           # this machine's PyPI proxy signs TLS
    rm -rf "$t"/var/cache/apt/archives/*.deb "$t"/var/lib/apt/lists/*
    tar -C "$t" -c . | docker import \
        --change "ENV PIP_CERT=$CA" --change "ENV LANG=C.UTF-8" --change 'CMD ["python3"]' \
        - "$PY_IMAGE" >/dev/null
}

postgres_image() {
    docker image inspect "$PG_IMAGE" >/dev/null 2>&1 && return
    say "building $PG_IMAGE"
    docker build --network host --build-arg BASE="$PY_IMAGE" -t "$PG_IMAGE" \
        -f "$HERE/postgres.Dockerfile" "$HERE" >"/var/tmp/facehpo-postgres-build.log" 2>&1 \
        || die "could not build $PG_IMAGE: $(tail -n 3 /var/tmp/facehpo-postgres-build.log | tr '\n' ' ')"
}

engine
compose
command -v openssl >/dev/null || apt_install openssl  # docs/containers.md makes the password with it
python_base
postgres_image
say "ready: $(docker version -f 'engine {{.Server.Version}}'), $(docker compose version --short)"
