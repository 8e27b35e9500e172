#!/bin/sh
# Restore a Redis backup (an RDB file made by `redis-cli --rdb`) into a running Redis, without restarting it.
#
# A temporary redis-server beside the target loads the file; the target becomes its replica, receives the whole
# data set, and is detached again. After a full sync a replica rewrites its own append-only file (and its RDB at
# the next save point) from what it received, so the restored data survives the target's next restart. This is
# why the backup is not simply copied over dump.rdb: a Redis with `appendonly yes` ignores dump.rdb when it starts
# without an AOF, and starts empty.
#
# Run it where the target runs (inside its container or pod), with the backup in a writable place:
#   docker compose exec -T redis sh -s /data/backup.rdb < deploy/redis/restore.sh
#   kubectl -n postroom exec -i redis-0 -c redis -- sh -s /data/backup.rdb < deploy/redis/restore.sh
# Stop the Postroom services first (nothing should write while the data is replaced; a replica refuses writes).
#
# Environment: REDIS_HOST (127.0.0.1), REDIS_PORT (6379), REDISCLI_AUTH (the target's password, if it has one),
# RESTORE_DIR (/data/restore: room for one more copy of the backup), RESTORE_PORT (6390, loopback only),
# RESTORE_FORCE=1 to replace a target that holds keys (they are all lost). The container needs memory for the
# data twice while this runs (the temporary server's copy and the target's).
# POSIX sh: it runs under the busybox shell of the redis:alpine image.
set -eu

backup=${1:?usage: restore.sh BACKUP.rdb}
host=${REDIS_HOST:-127.0.0.1}
port=${REDIS_PORT:-6379}
dir=${RESTORE_DIR:-/data/restore}
source_port=${RESTORE_PORT:-6390}
wait_seconds=${RESTORE_TIMEOUT:-3600}

say() { printf 'restore: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }
target() { redis-cli --no-auth-warning -h "$host" -p "$port" "$@"; }
# The temporary server has no password: never send it the target's.
source_() { env -u REDISCLI_AUTH redis-cli -h 127.0.0.1 -p "$source_port" "$@"; }
# One field of INFO (whose lines end in CRLF).
field() { tr -d '\r' | sed -n "s/^$1://p"; }

wait_for() { # description, command that succeeds when done
    what=$1
    shift
    i=0
    until "$@"; do
        i=$((i + 1))
        [ "$i" -le "$wait_seconds" ] || die "timed out waiting for $what"
        sleep 1
    done
}

[ -r "$backup" ] || die "cannot read $backup"
[ "$(target PING)" = "PONG" ] || die "the target Redis at $host:$port does not answer PING"
keys=$(target DBSIZE)
if [ "$keys" != "0" ] && [ "${RESTORE_FORCE:-}" != "1" ]; then
    die "the target holds $keys keys; set RESTORE_FORCE=1 to replace them all with the backup"
fi

mkdir -p "$dir"
cp "$backup" "$dir/backup.rdb"
redis-server --bind 127.0.0.1 --port "$source_port" --dir "$dir" --dbfilename backup.rdb \
    --appendonly no --save '' --protected-mode yes --logfile "$dir/source.log" &
source_pid=$!
cleanup() {
    kill "$source_pid" 2>/dev/null || true
    wait "$source_pid" 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT INT TERM

source_ready() { [ "$(source_ PING 2>/dev/null)" = "PONG" ]; }
wait_for "the temporary server to load $backup" source_ready
expected=$(source_ DBSIZE)
say "the backup holds $expected keys; copying it into $host:$port"

target REPLICAOF 127.0.0.1 "$source_port" >/dev/null
synced() {
    info=$(target INFO replication)
    [ "$(printf '%s\n' "$info" | field master_link_status)" = "up" ] &&
        [ "$(printf '%s\n' "$info" | field master_sync_in_progress)" = "0" ] &&
        [ "$(target INFO persistence | field loading)" = "0" ]
}
wait_for "the target to sync" synced
target REPLICAOF NO ONE >/dev/null

persisted() {
    info=$(target INFO persistence)
    [ "$(printf '%s\n' "$info" | field aof_rewrite_in_progress)" = "0" ] &&
        [ "$(printf '%s\n' "$info" | field aof_rewrite_scheduled)" = "0" ]
}
wait_for "the target to rewrite its append-only file" persisted
status=$(target INFO persistence | field aof_last_bgrewrite_status)
[ "$status" = "ok" ] || die "the target's append-only file rewrite failed ($status): see its log"
got=$(target DBSIZE)
[ "$got" = "$expected" ] || die "the target holds $got keys, the backup $expected"
say "done: $got keys restored"
