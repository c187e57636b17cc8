#!/bin/bash
# Cluster benchmarks (docs/benchmarks.md#cluster-mode): the command round trip through one node
# alone, across two nodes (devices on n1, commands posted on n2) and within the cluster on the
# devices' node; telemetry closed loop with and without the export, and how long the export then
# takes to drain. Needs nats-server; binaries from `cargo build --release` in CARGO_TARGET_DIR.
set -u
W=${WORK:-/tmp/fleetgate-cluster-bench}
T=${CARGO_TARGET_DIR:-target}
BIN=$T/release/fleetgate
LT=$T/release/loadtest
export FLEETGATE_ADMIN_TOKEN=bench-admin-token-0123456789
OUT=$W/out; mkdir -p $OUT
cleanup() { pkill -f "fleetgate serve --data-dir $W" ; pkill -f "nats-server -js -sd $W"; sleep 1; }
cleanup
rm -rf $W/d* $W/js
start_node() { # name host port extra...
  local name=$1 host=$2 port=$3; shift 3
  $BIN serve --data-dir $W/d-$name --listen $host:$port --shards 2 "$@" > $OUT/$name.log 2>&1 &
  echo $! > $W/$name.pid
  for i in $(seq 100); do curl -s $host:$port/healthz | grep -q '"status":"ok"' && break; sleep 0.1; done
}
wait_cluster() { for i in $(seq 100); do curl -s $1/healthz | grep -q '"cluster":"ready"' && break; sleep 0.1; done; }
CMD="--scenario command-storm --devices ${DEVICES:-1000} --rate ${RATE:-500} --duration ${DUR:-15} --cmd-sample-every 5 --json"

# 1. one node alone
start_node solo 127.0.0.11 3201
$LT --url http://127.0.0.11:3201 $CMD --server-pid $(cat $W/solo.pid) 2>$OUT/solo-cmd.err | tail -1 > $OUT/solo-cmd.json
# export baseline: the same node, telemetry closed loop
$LT --url http://127.0.0.11:3201 --scenario telemetry-flood --devices 100 --inflight 8 --duration 10 --json --server-pid $(cat $W/solo.pid) 2>$OUT/solo-tel.err | tail -1 > $OUT/solo-tel.json
cleanup

# 2. two nodes through NATS: devices on n1, commands through n2
nats-server -js -sd $W/js -a 127.0.0.20 -p 4444 > $OUT/nats.log 2>&1 &
sleep 0.5
start_node n1 127.0.0.11 3211 --nats nats://127.0.0.20:4444 --node-id n1
start_node n2 127.0.0.12 3212 --nats nats://127.0.0.20:4444 --node-id n2
wait_cluster 127.0.0.11:3211; wait_cluster 127.0.0.12:3212
$LT --url http://127.0.0.11:3211 --admin-url http://127.0.0.12:3212 $CMD --server-pid $(cat $W/n1.pid) 2>$OUT/cross-cmd.err | tail -1 > $OUT/cross-cmd.json
# same cluster, commands through the node holding the devices
$LT --url http://127.0.0.11:3211 $CMD --server-pid $(cat $W/n1.pid) 2>$OUT/same-cmd.err | tail -1 > $OUT/same-cmd.json
# export: telemetry closed loop on n1, then how long the export takes to drain
p0=$(curl -s -H "Authorization: Bearer $FLEETGATE_ADMIN_TOKEN" 127.0.0.11:3211/metrics | awk '/^fleetgate_export_published_total /{print $2}')
$LT --url http://127.0.0.11:3211 --scenario telemetry-flood --devices 100 --inflight 8 --duration 10 --json --server-pid $(cat $W/n1.pid) 2>$OUT/cl-tel.err | tail -1 > $OUT/cl-tel.json
t0=$(date +%s.%N)
lag0=$(curl -s 127.0.0.11:3211/healthz)
for i in $(seq 600); do curl -s 127.0.0.11:3211/healthz | grep -q '"export_lag":0' && break; sleep 0.1; done
t1=$(date +%s.%N)
p1=$(curl -s -H "Authorization: Bearer $FLEETGATE_ADMIN_TOKEN" 127.0.0.11:3211/metrics | awk '/^fleetgate_export_published_total /{print $2}')
echo "{\"published_before\":${p0:-0},\"published_after\":${p1:-0},\"health_at_end\":$lag0,\"drain_s\":$(echo "$t1 - $t0" | bc)}" > $OUT/export.json
cleanup
echo done
