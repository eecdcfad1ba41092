#!/usr/bin/env bash
# Screenshots of the MLflow UI on short real searches (README "MLflow"): docs/figures/mlflow_*.png.
#
#   benchmarks/mlflow_ui_shots.sh [--data PATH] [--out DIR] [--port PORT] [--keep]
#
# Runs `python -m evo.run --gens 2 --males 4 --offspring 3 --bootstrap 4 --full-steps 60` (the
# combined search) and the same with --mode male in a temp folder (about 3 minutes on 2 CPU cores),
# serves their store with `mlflow server` on 127.0.0.1, takes headless chromium screenshots of
#   mlflow_runs.png         the experiment as it opens: its runs, one row per search
#   mlflow_leaderboard.png  the children, tags.dimorph.kind = "evaluation", best val loss first (the
#                           experiment's saved view "Dimorph leaderboard", which adds its columns)
#   mlflow_parent_run.png   the combined search's parent run: description, metrics, dataset, model
#   mlflow_compare.png      its two best children side by side (1600x2000: parameters and metrics)
#   mlflow_progress.png     both searches' best val loss against cumulative training FLOPs
# then stops the server. --keep leaves the temp folder (store, logs) in place.
#
# The browser reaches the server as http://dimorph-ui:PORT (mapped to 127.0.0.1 inside chromium):
# MLflow 3.17 opens its assistant panel over a third of the page on a first visit from "localhost" or
# "127.0.0.1", which is what a fresh screenshot profile always is.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DATA=${DIMORPH_DATA:-}
OUT=$ROOT/docs/figures
PORT=5123
KEEP=0
HOST=dimorph-ui
CHROMIUM=${CHROMIUM:-chromium}
while [ $# -gt 0 ]; do
    case $1 in
        --data) DATA=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --port) PORT=$2; shift 2 ;;
        --keep) KEEP=1; shift ;;
        *) echo "usage: $0 [--data PATH] [--out DIR] [--port PORT] [--keep]" >&2; exit 2 ;;
    esac
done
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d /tmp/dimorph-ui-XXXXXX)
SERVER=

cleanup() {
    if [ -n "$SERVER" ] && kill -0 "$SERVER" 2>/dev/null; then
        kill -TERM -- "-$SERVER" 2>/dev/null || true  # the server's own process group: its workers too
        for _ in $(seq 60); do kill -0 "$SERVER" 2>/dev/null || break; sleep 0.5; done
        kill -KILL -- "-$SERVER" 2>/dev/null || true
    fi
    if [ "$KEEP" = 1 ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

cd "$WORK"
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
echo "searches in $WORK ..."
for mode in combined male; do
    python3 -m evo.run --mode "$mode" --gens 2 --males 4 --offspring 3 --bootstrap 4 --full-steps 60 \
        --no-progress ${DATA:+--data "$DATA"} > "search-$mode.log" 2>&1 || { tail -20 "search-$mode.log" >&2; exit 1; }
    grep -E "^(== |best architecture|MLflow run|best model)" "search-$mode.log"
done

# the experiment, the two searches' parent runs and the combined search's two best children
IDS=$(python3 -c '
import json
from mlflow.tracking import MlflowClient
from evo.tracking import LEADERBOARD_ORDER
s, t = (json.load(open(f"outputs/{m}-tiny-seed0/summary.json"))["mlflow"] for m in ("combined", "male"))
c = MlflowClient(s["tracking_uri"])
kids = c.search_runs([s["experiment_id"]], f"tags.mlflow.parentRunId = %r" % s["run_id"],
                     order_by=[f"{LEADERBOARD_ORDER} ASC"], max_results=2)
print(s["experiment_id"], s["run_id"], t["run_id"], kids[0].info.run_id, kids[1].info.run_id)
')
read -r EXP PARENT OTHER FIRST SECOND <<< "$IDS"

setsid mlflow server --backend-store-uri "sqlite:///$WORK/mlflow.db" --host 127.0.0.1 --port "$PORT" \
    --workers 1 --allowed-hosts "$HOST:$PORT,127.0.0.1:$PORT,localhost:$PORT" \
    --cors-allowed-origins "http://$HOST:$PORT" > server.log 2>&1 &
SERVER=$!
for _ in $(seq 120); do
    curl -sf "http://127.0.0.1:$PORT/health" > /dev/null 2>&1 && break
    kill -0 "$SERVER" 2>/dev/null || { tail -20 server.log >&2; exit 1; }
    sleep 0.5
done
curl -sf "http://127.0.0.1:$PORT/health" > /dev/null || { echo "mlflow server did not start" >&2; exit 1; }

shot() {  # shot NAME HEIGHT PAGE: PAGE is the part of the UI's URL after the '#'
    "$CHROMIUM" --headless --no-sandbox --disable-gpu --hide-scrollbars --no-first-run \
        --user-data-dir="$WORK/chromium" --host-resolver-rules="MAP $HOST 127.0.0.1" \
        --window-size="1600,$2" --virtual-time-budget=25000 \
        --screenshot="$OUT/mlflow_$1.png" "http://$HOST:$PORT/#$3" > "chromium-$1.log" 2>&1
    echo "wrote $OUT/mlflow_$1.png"
}
q() { python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$1"; }
ML="workflowType=machine_learning"  # MLflow 3.17's "Model training" side (its default is GenAI)
# The runs table's own URL parameters: searchFilter, orderByKey (metrics.`name`), orderByAsc. The
# saved view carries the same filter and order, plus the leaderboard's columns.
LEADER="searchFilter=$(q 'tags.dimorph.kind = "evaluation"')&orderByKey=$(q 'metrics.`arch/best_val_loss`')&orderByAsc=true"
BY_COST=search/best_val_loss_by_cost
METRIC="runs=$(q "[\"$PARENT\",\"$OTHER\"]")&metric=$(q "\"$BY_COST\"")&experiments=$(q "[\"$EXP\"]")"
METRIC+="&plot_metric_keys=$(q "[\"$BY_COST\"]")&plot_layout=%7B%7D&x_axis=step&y_axis_scale=linear"
METRIC+="&line_smoothness=1&show_point=true&deselected_curves=%5B%5D&last_linear_y_axis_range=%5B%5D"

shot runs 1000 "/experiments/$EXP?$ML"
shot leaderboard 1000 "/experiments/$EXP/runs?$ML&viewStateShareKey=dimorph-leaderboard"
shot parent_run 1000 "/experiments/$EXP/runs/$PARENT?$ML"
shot compare 2000 "/compare-runs?runs=$(q "[\"$FIRST\",\"$SECOND\"]")&experiments=$(q "[\"$EXP\"]")&$ML"
shot progress 1000 "/metric?$METRIC&$ML"
echo "the same leaderboard without the saved view (default columns): /#/experiments/$EXP/runs?$ML&$LEADER"
