#!/bin/bash
# The issue-6 measurement suite: each scenario against a fresh server, then the same scenario
# against the raw sink, in one session. Appends one JSON line per run (with a "label") to $OUT.
#
#   loadtest/suite.sh [OUT] [STEPS...]     STEPS: cmd cmd-nosync reconnect attendance openloop idle
#                                          sizing soak (default: all but sizing and soak)
#
# soak (issue 16): one open-loop telemetry run of SOAK_SECONDS (3600) at SOAK_DEVICES (1000) x
# SOAK_RATE (50) msgs/s, half the open-loop capacity measured on the 2-core box
# (docs/benchmarks.md), sampling the server every 30 s into SOAK_LOG (/tmp/loadtest-soak.tsv):
# RSS (anonymous and file-backed), RocksDB's memory by kind, SST bytes, compaction debt, the data
# directory's size and its table files.
#
# Needs the release binaries in $TARGET (default ${CARGO_TARGET_DIR:-/var/cache/fleetgate-target}/release).
set -u
OUT=${1:-/tmp/loadtest-suite.jsonl}; shift || true
STEPS=${*:-"cmd cmd-nosync reconnect attendance openloop idle"}
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

# One line every 30 s until killed: seconds, RSS KiB (all, anonymous, file-backed), then the store
# gauges of /metrics, the data directory's bytes and its table files.
sample_server() { # pid url out
    local pid=$1 url=$2 out=$3 t0=$SECONDS g
    local gauges="fleetgate_process_resident_bytes fleetgate_store_block_cache_bytes fleetgate_store_memtable_bytes fleetgate_store_table_readers_bytes fleetgate_store_sst_bytes fleetgate_store_pending_compaction_bytes fleetgate_store_write_stopped fleetgate_store_block_cache_pinned_bytes"
    { printf 's\trss_kib\trss_anon_kib\trss_file_kib'; for g in $gauges; do printf '\t%s' "$g"; done; printf '\tdata_dir_bytes\tsst_files\n'; } >"$out"
    while kill -0 "$pid" 2>/dev/null; do
        local m
        m=$(curl -s -H "Authorization: Bearer $TOKEN" "$url/metrics")
        {
            printf '%s' "$((SECONDS - t0))"
            for f in VmRSS RssAnon RssFile; do
                printf '\t%s' "$(awk -v f="$f:" '$1 == f {print $2}' "/proc/$pid/status" 2>/dev/null)"
            done
            for g in $gauges; do printf '\t%s' "$(echo "$m" | awk -v g="$g" '$1 == g {print $2}')"; done
            printf '\t%s\t%s\n' "$(du -sb "$DATA" | cut -f1)" "$(find "$DATA" -name '*.sst' | wc -l)"
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
    openloop)
        # Where fleets live: many devices each sending a little, against each I/O driver.
        for io in epoll uring; do
            start_server --io "$io"
            run "openloop-$io" --url "$URL" --admin-token $TOKEN --scenario telemetry-flood --devices 1000 \
                --rate 50 --processes 2 --duration 30 --server-pid "$SERVER_PID" --compare
            stop_server
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
            --rate "${SOAK_RATE:-50}" --processes 2 --duration "${SOAK_SECONDS:-3600}" --server-pid "$SERVER_PID"
        kill "$SAMPLER"
        stop_server
        ;;
    sizing)
        # Disk per record of each kind: one kind per fresh server, then a backup (its checkpoint
        # flushes the memtables) so every record is in a table file, then the per-family table
        # sizes and key counts of /metrics. Memory per session: the idle step's figure.
        for kind in telemetry events attendance; do
            start_server
            case $kind in
            telemetry) run sizing-telemetry --url "$URL" --admin-token $TOKEN --scenario telemetry-flood \
                    --devices 1000 --rate 20 --processes 2 --duration 50 --server-pid "$SERVER_PID" ;;
            events) run sizing-events --url "$URL" --admin-token $TOKEN --scenario attendance-burst \
                    --protocol generic --devices 1000 --burst 100 --burst-interval 1 --duration 10 \
                    --server-pid "$SERVER_PID" ;;
            attendance) run sizing-attendance --url "$URL" --admin-token $TOKEN --scenario attendance-burst \
                    --protocol aiface --devices 1000 --burst 10 --records-per-msg 10 --burst-interval 1 \
                    --duration 10 --server-pid "$SERVER_PID" ;;
            esac
            curl -s -o /dev/null -X POST -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
                -d "{\"path\":\"$WORK/backup-$kind\"}" "$URL/api/backup"
            sleep 2
            curl -s -H "Authorization: Bearer $TOKEN" "$URL/metrics" |
                awk -v kind="$kind" -v out="$OUT" '
                    $1 ~ /^fleetgate_store_family_sst_bytes[{]/ { split($1, a, "\""); bytes[a[2]] = $2 }
                    $1 ~ /^fleetgate_store_family_keys_estimate[{]/ { split($1, a, "\""); keys[a[2]] = $2 }
                    END {
                        primary = (kind == "telemetry") ? "telemetry" : (kind == "events") ? "events" : "attendance"
                        total = 0; line = ""
                        for (f in bytes) if (bytes[f] > 0 && f != "meta" && f != "devices") {
                            total += bytes[f]; line = line sprintf(",\"%s\":{\"sst_bytes\":%d,\"keys\":%d}", f, bytes[f], keys[f])
                        }
                        n = keys[primary]
                        printf "{\"label\":\"sizing-%s-disk\",\"records\":%d,\"sst_bytes\":%d,\"bytes_per_record\":%.1f,\"families\":{%s}}\n", \
                            kind, n, total, (n ? total / n : 0), substr(line, 2) >> out
                        printf "%s: %d records, %.1f bytes each on disk\n", kind, n, (n ? total / n : 0) > "/dev/stderr"
                    }'
            rm -rf "$WORK/backup-$kind"
            stop_server
        done
        ;;
    *) echo "unknown step $step" >&2 ;;
    esac
done
