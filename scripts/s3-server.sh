#!/usr/bin/env bash
# A real S3-compatible server for millrace's tests and benchmarks: moto's server (PyPI), in memory,
# bound to 127.0.0.1. Everything lives under .infra/ (git-ignored).
#
#   scripts/s3-server.sh install        # venv + moto (about 30 s)
#   scripts/s3-server.sh start [PORT]   # start in the background (default port 9000), wait until ready
#   scripts/s3-server.sh stop
#   scripts/s3-server.sh env [PORT]     # print the AWS_* exports that point clients at it
#
# The tests start their own server on a free port when .infra/venv/bin/moto_server exists, so
# `install` is all they need; `start` is for trying things by hand and for benchmarks.
set -euo pipefail
cd "$(dirname "$0")/.."
INFRA=.infra
VENV=$INFRA/venv
MOTO_VERSION=5.2.5

install() {
  if [ -x "$VENV/bin/moto_server" ]; then
    echo "moto already installed in $VENV"
    return
  fi
  mkdir -p "$INFRA"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check \
    "moto[s3]==$MOTO_VERSION" flask flask-cors boto3
  echo "installed moto $MOTO_VERSION in $VENV"
}

start() {
  local port=${1:-9000}
  [ -x "$VENV/bin/moto_server" ] || install
  if curl -s -o /dev/null "http://127.0.0.1:$port/"; then
    echo "something already answers on 127.0.0.1:$port"
    return
  fi
  nohup "$VENV/bin/moto_server" -H 127.0.0.1 -p "$port" > "$INFRA/s3-$port.log" 2>&1 &
  echo $! > "$INFRA/s3-$port.pid"
  for _ in $(seq 1 300); do
    if curl -s -o /dev/null "http://127.0.0.1:$port/"; then
      echo "S3 (moto) ready on http://127.0.0.1:$port"
      return
    fi
    sleep 0.2
  done
  echo "moto did not start; see $INFRA/s3-$port.log" >&2
  exit 1
}

stop() {
  for pidfile in "$INFRA"/s3-*.pid; do
    [ -e "$pidfile" ] || continue
    kill "$(cat "$pidfile")" 2>/dev/null || true
    rm -f "$pidfile"
  done
}

env_vars() {
  local port=${1:-9000}
  cat <<VARS
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1
export AWS_ENDPOINT=http://127.0.0.1:$port AWS_ALLOW_HTTP=true
VARS
}

case "${1:-}" in
  install) install ;;
  start) start "${2:-}" ;;
  stop) stop ;;
  env) env_vars "${2:-}" ;;
  *) sed -n '2,12p' "$0"; exit 2 ;;
esac
