#!/usr/bin/env bash
# A real MLflow tracking server for millrace's tracking tests: mlflow from PyPI (pinned; 3.18.0
# does not resolve here), a SQLite backend and a local artifact directory, bound to 127.0.0.1.
# Everything lives under .infra/ (git-ignored).
#
#   scripts/mlflow-server.sh install        # venv + mlflow (about 1-2 min)
#   scripts/mlflow-server.sh start [PORT]   # start in the background (default 5000), wait until ready
#   scripts/mlflow-server.sh stop [PORT]
#
# The tests start their own server on a free port when .infra/mlflow/bin/mlflow exists (or use
# $MILLRACE_MLFLOW), so `install` is all they need; without it they skip loudly, under CI they fail.
set -euo pipefail
cd "$(dirname "$0")/.."
INFRA=.infra
VENV=$INFRA/mlflow
MLFLOW_VERSION=3.17.2

install() {
  if "$VENV/bin/python" -c "import mlflow" 2>/dev/null; then
    echo "mlflow already installed in $VENV"
    return
  fi
  mkdir -p "$INFRA"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "mlflow==$MLFLOW_VERSION"
  "$VENV/bin/python" -c "import mlflow; assert mlflow.__version__ == '$MLFLOW_VERSION'"
  echo "installed mlflow $MLFLOW_VERSION in $VENV"
}

start() {
  local port=${1:-5000}
  [ -x "$VENV/bin/mlflow" ] || install
  if curl -s -o /dev/null "http://127.0.0.1:$port/health"; then
    echo "something already answers on 127.0.0.1:$port"
    return
  fi
  local store="$INFRA/mlflow-$port"
  mkdir -p "$store"
  # No GenAI job runners: four Python processes that tracking and the registry do not use.
  MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false nohup "$VENV/bin/mlflow" server --host 127.0.0.1 --port "$port" --workers 1 \
    --backend-store-uri "sqlite:///$PWD/$store/mlflow.db" --artifacts-destination "$PWD/$store/artifacts" \
    > "$store/server.log" 2>&1 &
  echo $! > "$store/pid"
  for _ in $(seq 1 600); do
    if curl -s -o /dev/null "http://127.0.0.1:$port/health"; then
      echo "MLflow ready on http://127.0.0.1:$port (store $store)"
      return
    fi
    sleep 0.2
  done
  echo "mlflow did not start; see $store/server.log" >&2
  exit 1
}

stop() {
  local port=${1:-5000}
  local pid="$INFRA/mlflow-$port/pid"
  if [ -f "$pid" ]; then
    kill "$(cat "$pid")" 2>/dev/null || true
    rm -f "$pid"
  fi
}

case "${1:-}" in
  install) install ;;
  start) start "${2:-}" ;;
  stop) stop "${2:-}" ;;
  *) sed -n '2,11p' "$0"; exit 2 ;;
esac
