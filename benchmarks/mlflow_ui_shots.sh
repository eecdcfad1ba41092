#!/usr/bin/env bash
# Screenshots of the MLflow UI as `python -m evo.ui` opens it (README "MLflow"): docs/figures/mlflow_*.png.
#
#   benchmarks/mlflow_ui_shots.sh [--data PATH] [--out DIR] [--port PORT] [--keep]
#
# Runs `python -m evo.run --gens 2 --males 4 --offspring 3 --bootstrap 4 --full-steps 60` (the
# combined search) and the same with --mode male in a temp folder (a few minutes on 2 CPU cores),
# starts `python -m evo.ui --no-browser` there (mlflow server on 127.0.0.1) and takes headless
# chromium screenshots of
#   mlflow_searches.png     the link evo.ui prints: one row per search, best first, with the winning
#                           architecture, its margin over the baseline and the FLOPs spent
#   mlflow_parent_run.png   a click on the best search: its description, led by the answer in one line
#                           (then the rest, and its figures: genes to loss, gene importance, Pareto
#                           front, lineage, each linked to its artifact page)
#   mlflow_figures.png      one of those links: the combined search's Pareto front of its two objectives
#   mlflow_leaderboard.png  every architecture of both searches, best first (evo.ui's third link)
#   mlflow_progress.png     both searches' best val loss so far against cumulative GFLOPs
#   mlflow_compare.png      the combined search's two best children side by side
# then stops evo.ui (and with it the server). --keep leaves the temp folder (store, logs) in place.
#
# The browser is a fresh profile in which the MLflow assistant panel was closed once, as a user
# does on a first visit: MLflow 3.17 opens that panel by itself on a browser's first visit to a
# local address (no server setting turns it off) and remembers in the browser's local storage that
# it was closed. The profile gets those two entries from a one-line page served on the same
# address before evo.ui starts.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DATA=${DIMORPH_DATA:-}
OUT=$ROOT/docs/figures
PORT=5123
KEEP=0
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
UI=
BASE=http://127.0.0.1:$PORT

cleanup() {
    if [ -n "$UI" ] && kill -0 "$UI" 2>/dev/null; then
        kill -TERM "$UI" 2>/dev/null || true  # evo.ui stops its server on SIGTERM
        for _ in $(seq 60); do kill -0 "$UI" 2>/dev/null || break; sleep 0.5; done
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
    grep -E "^(== |best architecture|  the preset|MLflow run|best model)" "search-$mode.log"
done

browse() {  # browse URL [chromium options...]: the screenshot profile visits URL
    local url=$1; shift
    "$CHROMIUM" --headless --no-sandbox --disable-gpu --hide-scrollbars --no-first-run \
        --user-data-dir="$WORK/chromium" "$@" "$url" > /dev/null 2>&1
}

# the assistant panel closed once, as local storage of http://127.0.0.1:PORT remembers it
mkdir seed
cat > seed/dimorph-seed.html <<'HTML'
<script>localStorage.setItem("mlflow.assistant.fab.autoOpenedOnFirstLoad_v1", "true");
localStorage.setItem("mlflow.assistant.panelOpen_v1", "false");</script>
HTML
python3 -m http.server "$PORT" --bind 127.0.0.1 --directory seed > seed.log 2>&1 &
SEED=$!
for _ in $(seq 40); do curl -sf "$BASE/dimorph-seed.html" > /dev/null 2>&1 && break; sleep 0.25; done
browse "$BASE/dimorph-seed.html" --dump-dom --virtual-time-budget=2000  # not "/": the UI's own page is never cached
kill "$SEED"; wait "$SEED" 2>/dev/null || true

setsid python3 -m evo.ui --port "$PORT" --no-browser > ui.log 2>&1 &
UI=$!
for _ in $(seq 240); do grep -q "^Ctrl-C" ui.log && break; kill -0 "$UI" 2>/dev/null || { cat ui.log >&2; exit 1; }; sleep 0.5; done
cat ui.log
SEARCHES=$(sed -n 2p ui.log | tr -d ' ')
LEADER=$(grep -o "every architecture, best first: .*" ui.log | sed 's/.*: //')

IDS=$(python3 -c '
import json
from mlflow.tracking import MlflowClient
from evo.tracking import LEADERBOARD_ORDER
s, t = (json.load(open(f"outputs/{m}-tiny-seed0/summary.json"))["mlflow"] for m in ("combined", "male"))
c = MlflowClient(s["tracking_uri"])
runs = c.search_runs([s["experiment_id"]], "tags.dimorph.kind = \"search\"", order_by=["metrics.`final/best_val_loss` ASC"])
kids = c.search_runs([s["experiment_id"]], f"tags.mlflow.parentRunId = %r" % s["run_id"],
                     order_by=[f"{LEADERBOARD_ORDER} ASC"], max_results=2)
print(s["experiment_id"], runs[0].info.run_id, s["run_id"], t["run_id"], kids[0].info.run_id, kids[1].info.run_id)
')
read -r EXP BEST PARENT OTHER FIRST SECOND <<< "$IDS"

shot() {  # shot NAME HEIGHT URL
    browse "$3" --window-size="1600,$2" --virtual-time-budget=25000 --screenshot="$OUT/mlflow_$1.png"
    echo "wrote $OUT/mlflow_$1.png"
}
q() { python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$1"; }
ML="workflowType=machine_learning"
BY=search/best_val_loss_by_gflops
METRIC="runs=$(q "[\"$PARENT\",\"$OTHER\"]")&metric=$(q "\"$BY\"")&experiments=$(q "[\"$EXP\"]")"
METRIC+="&plot_metric_keys=$(q "[\"$BY\"]")&plot_layout=%7B%7D&x_axis=step&y_axis_scale=linear"
METRIC+="&line_smoothness=1&show_point=true&deselected_curves=%5B%5D&last_linear_y_axis_range=%5B%5D"

shot searches 900 "$SEARCHES"
shot parent_run 1000 "$BASE/#/experiments/$EXP/runs/$BEST?$ML"
shot figures 1000 "$BASE/#/experiments/$EXP/runs/$PARENT/artifacts/figures/pareto.png?$ML"
shot leaderboard 900 "$LEADER"
shot progress 800 "$BASE/#/metric?$METRIC&$ML"
shot compare 1800 "$BASE/#/compare-runs?runs=$(q "[\"$FIRST\",\"$SECOND\"]")&experiments=$(q "[\"$EXP\"]")&$ML"
