#!/usr/bin/env bash
# Is the compose stack ready? Exit 0 once every service of docker-compose.yml has all its containers running and
# healthy (the Postroom ones are healthy only while their /readyz answers 200: Redis, broker and listeners up);
# else, after READY_TIMEOUT seconds (default 180), exit 1 naming each container that is not.
#   deploy/compose-ready.sh            # after `docker compose up -d`, or any time
# COMPOSE overrides the client (default: `docker compose`, else `docker-compose`).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -n ${COMPOSE:-} ]]; then
    read -r -a compose <<<"$COMPOSE"
elif docker compose version >/dev/null 2>&1; then
    compose=(docker compose)
else
    compose=(docker-compose)
fi
timeout=${READY_TIMEOUT:-180}
interval=${READY_INTERVAL:-5}
deadline=$((SECONDS + timeout))

while :; do
    problems=()
    ready=0
    mapfile -t services < <("${compose[@]}" config --services)
    for service in "${services[@]}"; do
        mapfile -t ids < <("${compose[@]}" ps -q "$service" | grep -v "^$" || true)
        if ((${#ids[@]} == 0)); then
            problems+=("$service: no container")
            continue
        fi
        for id in "${ids[@]}"; do
            state=$(docker inspect -f '{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}no-healthcheck{{end}}' "$id")
            if [[ $state == "running healthy" ]]; then
                ready=$((ready + 1))
            else
                problems+=("$service (${id:0:12}): $state")
            fi
        done
    done
    if ((${#problems[@]} == 0)); then
        echo "ready: $ready containers of ${#services[@]} services running and healthy"
        exit 0
    fi
    if ((SECONDS >= deadline)); then
        echo "not ready after ${timeout}s:" >&2
        printf '  %s\n' "${problems[@]}" >&2
        exit 1
    fi
    sleep "$interval"
done
