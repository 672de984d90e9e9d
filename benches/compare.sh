#!/usr/bin/env bash
# Runs the performance matrix of issue 16 against one or more sluice-server builds, alternating
# them round by round (this VM drifts by tens of percent within an hour: only figures from the
# same run compare). Every phase gets a fresh broker and data dir; each prints one JSON line,
# tagged with the build's label and the round.
#
#   benches/compare.sh [-r ROUNDS] [-p PHASES] [-n] LABEL=BIN_DIR [LABEL=BIN_DIR ...]
#   benches/compare.sh -r 3 old=/tmp/old/release new=target/release
#
# Each phase first runs once unmeasured (-n skips it), and the builds take turns going first,
# round by round: this VM gives memory freed by one run back to the host, and the next run pays
# to fault it in again, so a run measured after a smaller one is slow for reasons of its own.
# Use an even number of rounds with two builds.
#
# BIN_DIR holds a `sluice-server`. The client is always this checkout's `sluice-bench`
# ($SLUICE_BENCH, default target/release/sluice-bench), so every build meets the same load; the
# peers use this checkout's target/release/peer-latency-redis and peer-throughput.
# Phases (default all): disk durable4 durable1 never consume partitions latency peers.
#   disk        bare 1 MiB write+fdatasync loop on the data dir's disk (no broker): the ceiling
#   durable4    4 producers, fsync always, 1,000 x 1 KiB per request, 8 requests in flight each
#   durable1    1 producer, fsync always, 1,000 x 1 KiB per request, one request in flight
#   never       1 producer, fsync never; reports the broker's CPU per record (from /proc)
#   consume     1M records read back by Subscribe (full and lean decode) and by a 1-member group
#   partitions  1, 8 and 32 partitions with one producer each, fsync always, 100 records per
#               request, one in flight
#   latency     publish-to-subscriber latency at 5,000 records/s, fsync never; then, with
#               `redis-server` / `nats-server` on PATH, Redis Streams (peer-latency-redis) and
#               NATS JetStream (peer-throughput nats latency) measured alike, labels "redis"
#               and "nats"
#   peers       no Sluice: the `never` and `consume` loads against Redis Streams and NATS
#               JetStream (peer-throughput), with `redis-server` / `nats-server` on PATH; each
#               peer once per round, build label "redis" or "nats"
# Data dirs go to $SLUICE_BENCH_DIR (default /tmp): put it on the disk you want measured.
set -euo pipefail

rounds=1
prime=1
phases="disk durable4 durable1 never consume partitions latency peers"
while getopts "r:p:n" opt; do
  case $opt in
    r) rounds=$OPTARG ;;
    p) phases=$OPTARG ;;
    n) prime=0 ;;
    *) exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[ $# -ge 1 ] || { sed -n '2,/^# Data dirs/p' "$0"; exit 2; }

here=$(cd "$(dirname "$0")/.." && pwd)
sb=${SLUICE_BENCH:-$here/target/release/sluice-bench}
scratch=${SLUICE_BENCH_DIR:-/tmp}
addr=127.0.0.1:7150
export SLUICE_SERVER=$addr

# Runs "$@" (sluice-bench arguments) against a fresh broker of build $1 (label) in $2 (dir).
with_broker() {
  local label=$1 bin=$2 round=$3; shift 3
  local data; data=$(mktemp -d "$scratch/sluice-compare.XXXX")
  sync
  # The broker refuses SLUICE_* variables it does not know; this one is for sluice-bench.
  env -u SLUICE_SERVER_PID "$bin/sluice-server" --listen $addr --http-listen 127.0.0.1:7151 --data-dir "$data" --log-level warn \
    >"$data.log" 2>&1 &
  local pid=$!
  for _ in $(seq 200); do (echo >/dev/tcp/127.0.0.1/7150) 2>/dev/null && break; sleep 0.05; done
  export SLUICE_SERVER_PID=$pid
  "$@" 2>/dev/null | grep '^{' | sed "s/^{/{\"build\":\"$label\",\"round\":$round,/" || true
  if ! kill $pid 2>/dev/null; then
    echo "compare.sh: the $label broker ($bin) exited early; its log:" >&2
    cat "$data.log" >&2
  fi
  wait $pid 2>/dev/null || true
  rm -rf "$data" "$data.log"
}

phase() {
  local label=$1 bin=$2 round=$3 name=$4
  case $name in
    disk)
      local dir; dir=$(mktemp -d "$scratch/sluice-compare-disk.XXXX"); sync
      "$sb" disk --dir "$dir" --total-mib 512 | grep '^{' | sed "s/^{/{\"build\":\"$label\",\"round\":$round,/"
      rm -rf "$dir" ;;
    durable4) with_broker "$label" "$bin" "$round" "$sb" produce --topic d4 --producers 4 --fsync always --total 400000 ;;
    durable1) with_broker "$label" "$bin" "$round" "$sb" produce --topic d1 --in-flight 1 --fsync always --total 200000 ;;
    never) with_broker "$label" "$bin" "$round" "$sb" produce --topic n --fsync never --total 1000000 ;;
    consume)
      with_broker "$label" "$bin" "$round" bash -c "
        '$sb' produce --topic c --fsync never --total 1000000 >/dev/null
        '$sb' consume --topic c; '$sb' consume --topic c --decode lean; '$sb' group --topic c --members 1" ;;
    partitions)
      for p in 1 8 32; do
        with_broker "$label" "$bin" "$round" "$sb" produce --topic p$p --partitions $p --producers $p \
          --batch 100 --in-flight 1 --fsync always --total $((p * 20000))
      done ;;
    latency) with_broker "$label" "$bin" "$round" "$sb" latency --topic lat --rate 5000 --duration 5s --fsync never ;;
    *) echo "unknown phase $name" >&2; exit 2 ;;
  esac
}

# The latency phase's peers, each with its defaults and no sync before the ack (the peers of
# fsync `never`): Redis Streams (no AOF, no snapshots) and NATS JetStream (file storage).
peer_latency() {
  local round=$1 pid data
  if command -v redis-server >/dev/null; then
    redis-server --port 6390 --bind 127.0.0.1 --save "" --appendonly no --daemonize no >/dev/null 2>&1 &
    pid=$!
    for _ in $(seq 200); do (echo >/dev/tcp/127.0.0.1/6390) 2>/dev/null && break; sleep 0.05; done
    "$here/target/release/peer-latency-redis" --server 127.0.0.1:6390 --rate 5000 --duration 5s 2>/dev/null \
      | grep '^{' | sed "s/^{/{\"build\":\"redis\",\"round\":$round,/" || true
    kill $pid; wait $pid 2>/dev/null || true
  fi
  if command -v nats-server >/dev/null; then
    data=$(mktemp -d "$scratch/sluice-compare-nats.XXXX"); sync
    nats-server -a 127.0.0.1 -p 4231 -js -sd "$data" >/dev/null 2>&1 &
    pid=$!
    for _ in $(seq 200); do (echo >/dev/tcp/127.0.0.1/4231) 2>/dev/null && break; sleep 0.05; done
    "$here/target/release/peer-throughput" nats latency --server 127.0.0.1:4231 --rate 5000 --duration 5s 2>/dev/null \
      | grep '^{' | sed "s/^{/{\"build\":\"nats\",\"round\":$round,/" || true
    kill $pid; wait $pid 2>/dev/null || true
    rm -rf "$data"
  fi
}

# Runs peer-throughput's produce (primed like the builds) and consume against peer $1 (redis or
# nats) on port $2, whose server has pid $3; then stops that server.
peer_loads() {
  local system=$1 port=$2 pid=$3 round=$4 pt="$here/target/release/peer-throughput"
  for _ in $(seq 200); do (echo >/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.05; done
  if [ "$prime" = 1 ]; then "$pt" "$system" produce --server 127.0.0.1:$port >/dev/null 2>&1 || true; fi
  for load in produce consume; do
    "$pt" "$system" $load --server 127.0.0.1:$port --server-pid $pid 2>/dev/null | grep '^{' \
      | sed "s/^{/{\"build\":\"$system\",\"round\":$round,/" || true
  done
  kill $pid; wait $pid 2>/dev/null || true
}

# The `never` and `consume` loads against Redis Streams (no AOF, no snapshots) and NATS
# JetStream (file storage, its default sync every two minutes): the peers of fsync `never`.
peers() {
  local round=$1 data
  if command -v redis-server >/dev/null; then
    redis-server --port 6391 --bind 127.0.0.1 --save "" --appendonly no --daemonize no >/dev/null 2>&1 &
    peer_loads redis 6391 $! "$round"
  fi
  if command -v nats-server >/dev/null; then
    data=$(mktemp -d "$scratch/sluice-compare-nats.XXXX"); sync
    nats-server -a 127.0.0.1 -p 4231 -js -sd "$data" >/dev/null 2>&1 &
    peer_loads nats 4231 $! "$round"
    rm -rf "$data"
  fi
}

builds=("$@")
for round in $(seq "$rounds"); do
  # The builds take turns going first: on this VM the first run of a phase measured up to 2x
  # slower than the second (the one before it had freed less memory).
  shift_by=$(( (round - 1) % ${#builds[@]} ))
  order=("${builds[@]:shift_by}" "${builds[@]:0:shift_by}")
  for name in $phases; do
    if [ "$name" = peers ]; then peers "$round"; continue; fi
    if [ "$prime" = 1 ]; then
      phase prime "${order[0]#*=}" "$round" "$name" >/dev/null
    fi
    for build in "${order[@]}"; do
      phase "${build%%=*}" "${build#*=}" "$round" "$name"
    done
    if [ "$name" = latency ]; then peer_latency "$round"; fi
  done
done
