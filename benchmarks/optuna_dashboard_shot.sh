#!/usr/bin/env bash
# A screenshot of optuna-dashboard on a real Dimorph study (README "Search your own model"):
# docs/figures/optuna_dashboard.png.
#
#   benchmarks/optuna_dashboard_shot.sh [--trials N] [--port PORT]
#
# Runs examples/digits_optuna.py (DimorphSampler + DimorphPruner, an MLP on scikit-learn's digits)
# into a temp sqlite storage, serves it with optuna-dashboard (pip install optuna-dashboard) on
# 127.0.0.1, takes a headless chromium screenshot of the study's page, then stops the server.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TRIALS=40
PORT=8093
CHROMIUM=${CHROMIUM:-chromium}
while [ $# -gt 0 ]; do
    case $1 in
        --trials) TRIALS=$2; shift 2 ;;
        --port) PORT=$2; shift 2 ;;
        *) echo "usage: $0 [--trials N] [--port PORT]" >&2; exit 2 ;;
    esac
done
WORK=$(mktemp -d /tmp/dimorph-dash-XXXXXX)
DB="sqlite:///$WORK/digits.db"
cd "$ROOT"
python examples/digits_optuna.py --trials "$TRIALS" --storage "$DB"
optuna-dashboard "$DB" --host 127.0.0.1 --port "$PORT" >"$WORK/dashboard.log" 2>&1 &
SERVER=$!
trap 'kill "$SERVER" 2>/dev/null || true' EXIT
for _ in $(seq 60); do
    curl -fs "http://127.0.0.1:$PORT/api/studies" >/dev/null 2>&1 && break
    sleep 1
done
mkdir -p docs/figures
"$CHROMIUM" --headless --no-sandbox --disable-gpu --hide-scrollbars --no-first-run \
    --window-size=1600,1400 --virtual-time-budget=25000 \
    --screenshot="$ROOT/docs/figures/optuna_dashboard.png" "http://127.0.0.1:$PORT/dashboard/studies/1" \
    >"$WORK/chromium.log" 2>&1
echo "written: docs/figures/optuna_dashboard.png (study in $WORK)"
