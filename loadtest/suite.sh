#!/bin/bash
# The issue-6 measurement suite: each scenario against a fresh server, then the same scenario
# against the raw sink, in one session. Appends one JSON line per run (with a "label") to $OUT.
#
#   loadtest/suite.sh [OUT] [STEPS...]     STEPS: cmd cmd-nosync reconnect attendance idle soak
#                                          (default: all but soak)
#
# soak (issue 16): one open-loop telemetry run of SOAK_SECONDS (3600) at SOAK_DEVICES (1000) x
# SOAK_RATE (20) msgs/s, sampling the server every 30 s into SOAK_LOG (/tmp/loadtest-soak.tsv):
# RSS, RocksDB's memory by kind, SST bytes, compaction debt and the data directory's size.
#
# Needs the release binaries in $TARGET (default ${CARGO_TARGET_DIR:-/var/cache/fleetgate-target}/release).
set -u
OUT=${1:-/tmp/loadtest-suite.jsonl}; shift || true
STEPS=${*:-"cmd cmd-nosync reconnect attendance idle"}
DATA=
TARGET=${TARGET:-${CARGO_TARGET_DIR:-/var/cache/fleetgate-target}/release}
LT=$TARGET/loadtest
FG=$TARGET/fleetgate
TOKEN=loadtest-admin-token-123
WORK=$(mktemp -d /tmp/lt-suite-XXXX)
SERVER_PID=

start_server() { # extra serve args...
    rm -f "$WORK/addr"
    local data; data=$(mktemp -d "$WORK/data-XXXX")
    DATA=$data
    FLEETGATE_ADMIN_TOKEN=$TOKEN "$FG" serve --listen 127.0.0.1:0 --data-dir "$data" \
        --ready-file "$WORK/addr" --max-connections-per-ip 0 --max-msg-rate 0 --flap-max-per-minute 0 \
        "$@" >"$WORK/server.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 1 100); do [ -s "$WORK/addr" ] && break; sleep 0.1; done
    URL=http://$(cat "$WORK/addr")
    echo "server pid $SERVER_PID at $URL ($*)" >&2
}

stop_server() {
    [ -n "$SERVER_PID" ] && kill "$SERVER_PID" && wait "$SERVER_PID" 2>/dev/null
    SERVER_PID=
}

run() { # label, loadtest args...
    local label=$1; shift
    echo "== $label: loadtest $*" >&2
    local line
    line=$("$LT" --json --fsync-probe "$WORK" "$@" | tail -1)
    echo "{\"label\":\"$label\",\"args\":\"$*\",\"result\":${line:-null}}" >>"$OUT"
    echo "$line" >&2
}

# One line every 30 s until killed: seconds, RSS KiB, then the store gauges of /metrics and the
# data directory's bytes.
sample_server() { # pid url out
    local pid=$1 url=$2 out=$3 t0=$SECONDS g
    local gauges="fleetgate_process_resident_bytes fleetgate_store_block_cache_bytes fleetgate_store_memtable_bytes fleetgate_store_table_readers_bytes fleetgate_store_sst_bytes fleetgate_store_pending_compaction_bytes fleetgate_store_write_stopped"
    { printf 's\trss_kib'; for g in $gauges; do printf '\t%s' "$g"; done; printf '\tdata_dir_bytes\n'; } >"$out"
    while kill -0 "$pid" 2>/dev/null; do
        local m
        m=$(curl -s -H "Authorization: Bearer $TOKEN" "$url/metrics")
        {
            printf '%s\t%s' "$((SECONDS - t0))" "$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null)"
            for g in $gauges; do printf '\t%s' "$(echo "$m" | awk -v g="$g" '$1 == g {print $2}')"; done
            printf '\t%s\n' "$(du -sb "$DATA" | cut -f1)"
        } >>"$out"
        sleep 30
    done
}

trap 'stop_server; rm -rf "$WORK"' EXIT

for step in $STEPS; do
    case $step in
    cmd)
        start_server
        run cmd-storm --url "$URL" --admin-token $TOKEN --scenario command-storm --devices 19000 \
            --processes 2 --rate 1000 --duration 30 --server-pid "$SERVER_PID"
        stop_server
        run cmd-storm-sink --sink --scenario command-storm --devices 19000 --processes 2 --rate 1000 --duration 30
        ;;
    cmd-nosync)
        start_server --sync-writes false
        run cmd-storm-nosync --url "$URL" --admin-token $TOKEN --scenario command-storm --devices 19000 \
            --processes 2 --rate 1000 --duration 30 --server-pid "$SERVER_PID"
        stop_server
        ;;
    reconnect)
        start_server
        run reconnect-storm --url "$URL" --admin-token $TOKEN --scenario reconnect-storm --devices 19000 \
            --processes 2 --duration 60 --server-pid "$SERVER_PID"
        stop_server
        run reconnect-storm-sink --sink --scenario reconnect-storm --devices 19000 --processes 2 --duration 60
        ;;
    attendance)
        for p in generic aiface smackbio http; do
            start_server
            run "attendance-$p" --url "$URL" --admin-token $TOKEN --scenario attendance-burst --protocol $p \
                --devices 1000 --burst 20 --records-per-msg 10 --burst-interval 5 --duration 20 \
                --server-pid "$SERVER_PID"
            stop_server
            run "attendance-$p-sink" --sink --scenario attendance-burst --protocol $p \
                --devices 1000 --burst 20 --records-per-msg 10 --burst-interval 5 --duration 20
        done
        ;;
    idle)
        start_server
        run idle-fleet --url "$URL" --admin-token $TOKEN --scenario idle-fleet --devices 19500 \
            --processes 2 --duration 30 --server-pid "$SERVER_PID"
        stop_server
        run idle-fleet-sink --sink --scenario idle-fleet --devices 19500 --processes 2 --duration 30
        ;;
    soak)
        start_server
        sample_server "$SERVER_PID" "$URL" "${SOAK_LOG:-/tmp/loadtest-soak.tsv}" &
        SAMPLER=$!
        run soak --url "$URL" --admin-token $TOKEN --scenario telemetry-flood --devices "${SOAK_DEVICES:-1000}" \
            --rate "${SOAK_RATE:-20}" --processes 2 --duration "${SOAK_SECONDS:-3600}" --server-pid "$SERVER_PID"
        kill "$SAMPLER"
        stop_server
        ;;
    *) echo "unknown step $step" >&2 ;;
    esac
done
