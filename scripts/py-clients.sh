#!/usr/bin/env bash
# The real KServe v2 (Open Inference Protocol) clients that millrace's serving tests drive:
# NVIDIA's tritonclient (HTTP with binary tensors, and gRPC) from PyPI, pinned, in a venv under
# .infra/ (git-ignored).
#
#   scripts/py-clients.sh install    # venv + tritonclient[http,grpc] (about 30 s)
#   scripts/py-clients.sh python     # print the venv's python (the tests run their scripts with it)
#
# The tests look for .infra/py-clients/bin/python (or $MILLRACE_PY_CLIENTS); without it they skip
# loudly, and under CI they fail.
set -euo pipefail
cd "$(dirname "$0")/.."
INFRA=.infra
VENV=$INFRA/py-clients
TRITONCLIENT_VERSION=2.73.0

install() {
  if "$VENV/bin/python" -c "import tritonclient.http, tritonclient.grpc" 2>/dev/null; then
    echo "tritonclient already installed in $VENV"
    return
  fi
  mkdir -p "$INFRA"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check \
    "tritonclient[http,grpc]==$TRITONCLIENT_VERSION"
  "$VENV/bin/python" -c "import tritonclient.http, tritonclient.grpc"
  echo "installed tritonclient $TRITONCLIENT_VERSION in $VENV"
}

case "${1:-}" in
  install) install ;;
  python) echo "$PWD/$VENV/bin/python" ;;
  *) sed -n '2,10p' "$0"; exit 2 ;;
esac
