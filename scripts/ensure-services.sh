#!/usr/bin/env bash
# Make sure Redis and RabbitMQ answer on loopback: start them if installed and stopped, install them if missing.
set -euo pipefail

REDIS_PORT="${POSTROOM_DEV_REDIS_PORT:-6379}"
AMQP_PORT="${POSTROOM_DEV_AMQP_PORT:-5672}"

log() { printf 'ensure-services: %s\n' "$*" >&2; }

port_open() {
    python3 - "$1" <<'PY'
import socket, sys
try:
    socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1).close()
except OSError:
    sys.exit(1)
PY
}

wait_port() {  # port, what, seconds
    local deadline=$((SECONDS + $3))
    until port_open "$1"; do
        if ((SECONDS > deadline)); then log "$2 did not open port $1 within $3s"; return 1; fi
        sleep 1
    done
}

apt_install() {
    if [[ $(id -u) -ne 0 ]]; then
        log "missing $*: install them (as root: apt-get install -y $*) and run again"
        exit 1
    fi
    if [[ -z ${APT_UPDATED:-} ]]; then apt-get update -qq; APT_UPDATED=1; fi
    # Packages must not start their own daemons here (no init system); we start what we need ourselves.
    local policy=/usr/sbin/policy-rc.d created=0
    if [[ ! -e $policy ]]; then printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod +x "$policy"; created=1; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
    if ((created)); then rm -f "$policy"; fi
}

ensure_redis() {
    if port_open "$REDIS_PORT"; then return; fi
    if ! command -v redis-server >/dev/null; then log "installing redis-server"; apt_install redis-server redis-tools; fi
    log "starting redis-server on 127.0.0.1:$REDIS_PORT"
    mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
    local dir=/var/lib/redis logfile=/var/log/redis/ci.log
    [[ -w $dir ]] || dir=$(mktemp -d)
    [[ -w $(dirname "$logfile") ]] || logfile="$dir/redis.log"
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" --save "" --appendonly no \
        --dir "$dir" --logfile "$logfile"
    wait_port "$REDIS_PORT" redis-server 30
}

ensure_rabbitmq() {
    if port_open "$AMQP_PORT"; then return; fi
    if ! command -v rabbitmq-server >/dev/null; then log "installing rabbitmq-server"; apt_install rabbitmq-server; fi
    log "starting rabbitmq-server"
    rabbitmq-server -detached >/dev/null 2>&1 || true
    wait_port "$AMQP_PORT" rabbitmq-server 120
    # The port opens before the broker accepts logins; wait for full start-up.
    rabbitmqctl await_startup --timeout 120 >/dev/null 2>&1 || true
}

ensure_python_venv() {
    # The venv needs venv and ensurepip; scripts/native-argon2.sh needs the headers and a C compiler.
    local python=${1:-python3} version
    if "$python" -c 'import venv, ensurepip, sysconfig, os, sys; sys.exit(not os.path.exists(sysconfig.get_paths()["include"] + "/Python.h"))' 2>/dev/null \
        && command -v gcc >/dev/null; then return; fi
    version=$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
    log "installing python$version-venv python$version-dev gcc"
    apt_install "python$version-venv" "python$version-dev" gcc
}

case "${1:-all}" in
    python) ensure_python_venv "${2:-python3}" ;;
    tools) shift; missing=(); for spec in "$@"; do cmd=${spec%%=*}; pkg=${spec#*=}; command -v "$cmd" >/dev/null || missing+=("$pkg"); done
           if ((${#missing[@]})); then log "installing ${missing[*]}"; apt_install "${missing[@]}"; fi ;;
    *) ensure_redis; ensure_rabbitmq ;;
esac
