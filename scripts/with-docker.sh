#!/usr/bin/env bash
# Run a command with a Docker engine and a local python:3.11-slim base image available.
#
#   scripts/with-docker.sh docker compose up --wait
#
# On machines where a Docker engine already answers (DOCKER_HOST or the default socket), it is
# used as is. Otherwise (CI and the dev machines here have the client but no engine, and no
# registry can be reached) this script:
#   1. installs docker.io and debootstrap from Debian's packages when they are missing;
#   2. starts dockerd in the background with its own data root and socket, and stops it when
#      the command ends;
#   3. provides the base image `python:3.11-slim` when it is missing, built with debootstrap
#      from the machine's own Debian mirror (read from its apt sources, never written here) and
#      cached as a tarball in .cache/docker/ between runs.
# The command's exit status is returned.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${MODELHUB_DOCKER_WORK:-/tmp/modelhub-docker}
CACHE=$ROOT/.cache/docker
BASE_IMAGE=${BASE_IMAGE:-python:3.11-slim}
SUITE=bookworm  # Debian 12: python3 is 3.11, as in the upstream python:3.11-slim
log() { printf '[with-docker %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

engine_answers() { timeout 10 docker info >/dev/null 2>&1; }

install_packages() {
  local missing=()
  command -v dockerd >/dev/null || missing+=(docker.io)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

start_engine() {
  mkdir -p "$WORK"
  export DOCKER_HOST=unix://$WORK/docker.sock
  if engine_answers; then return; fi
  log "starting dockerd (data root $WORK/data)"
  dockerd --data-root "$WORK/data" --exec-root "$WORK/exec" --pidfile "$WORK/dockerd.pid" \
    -H "$DOCKER_HOST" >"$WORK/dockerd.log" 2>&1 &
  STARTED_PID=$!
  for _ in $(seq 1 60); do
    engine_answers && return
    kill -0 "$STARTED_PID" 2>/dev/null || break
    sleep 1
  done
  log "dockerd did not start; its log:"; tail -n 30 "$WORK/dockerd.log" >&2
  exit 1
}

stop_engine() {
  if [[ -n ${STARTED_PID:-} ]]; then
    log "stopping dockerd"
    kill "$STARTED_PID" 2>/dev/null || true
    for _ in $(seq 1 30); do kill -0 "$STARTED_PID" 2>/dev/null || return 0; sleep 1; done
    kill -9 "$STARTED_PID" 2>/dev/null || true
  fi
}

debian_mirror() {
  # The machine's own Debian mirror, from its apt sources (deb822 or one-line format).
  local uri
  uri=$(grep -h '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v security | head -n1 || true)
  if [[ -z $uri ]]; then
    uri=$(grep -h '^deb ' /etc/apt/sources.list 2>/dev/null | awk '{print $2}' | grep -v security | head -n1 || true)
  fi
  [[ -n $uri ]] || { log "no Debian mirror found in the apt sources"; exit 1; }
  printf '%s' "$uri"
}

build_base_tarball() {
  local tarball=$1 rootfs=$WORK/rootfs
  log "building $BASE_IMAGE with debootstrap ($SUITE, minbase) - a few minutes, then cached"
  rm -rf "$rootfs"
  debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
    "$SUITE" "$rootfs" "$(debian_mirror)" >"$WORK/debootstrap.log" 2>&1 \
    || { tail -n 30 "$WORK/debootstrap.log" >&2; exit 1; }
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* \
    "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/*
  rm -f "$rootfs"/usr/lib/python3.*/EXTERNALLY-MANAGED
  ln -sf python3 "$rootfs/usr/bin/python"
  ln -sf pip3 "$rootfs/usr/bin/pip"
  # Registries are reached through a TLS proxy whose CA is only in the host's bundle.
  cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
  mkdir -p "$CACHE"
  tar -C "$rootfs" -cf "$tarball.partial" .
  mv "$tarball.partial" "$tarball"
  rm -rf "$rootfs"
}

provide_base_image() {
  if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then return; fi
  if timeout 60 docker pull -q "$BASE_IMAGE" >/dev/null 2>&1; then return; fi
  local tarball=$CACHE/python-3.11-slim-$SUITE.tar
  [[ -f $tarball ]] || build_base_tarball "$tarball"
  log "importing $tarball as $BASE_IMAGE"
  local bundle=/etc/ssl/certs/ca-certificates.crt
  docker import \
    -c "ENV PIP_CERT=$bundle SSL_CERT_FILE=$bundle REQUESTS_CA_BUNDLE=$bundle" \
    -c 'ENV LANG=C.UTF-8' -c 'CMD ["python3"]' \
    "$tarball" "$BASE_IMAGE" >/dev/null
}

compose_plugin() {
  # `docker compose` as in the README: link the venv's pinned Compose CLI as a plugin if needed.
  if docker compose version >/dev/null 2>&1 || [[ ! -x $ROOT/.venv/bin/docker-compose ]]; then return; fi
  mkdir -p "$HOME/.docker/cli-plugins"
  ln -sf "$ROOT/.venv/bin/docker-compose" "$HOME/.docker/cli-plugins/docker-compose"
  log "linked .venv/bin/docker-compose as the docker compose plugin"
}

compose_plugin
if ! engine_answers; then
  install_packages
  trap stop_engine EXIT
  trap 'exit 130' INT  # signals end the script through its EXIT trap: the engine stops too
  trap 'exit 143' TERM
  start_engine
fi
provide_base_image
log "engine ready (DOCKER_HOST=${DOCKER_HOST:-default}); running: $*"
set +e
"$@"
status=$?
set -e
exit $status
