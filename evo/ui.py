"""`python -m evo.ui`: the MLflow UI on a search's store, opened where the answer is.

    python -m evo.ui                      # ./mlflow.db (or $MLFLOW_TRACKING_URI), experiment 'dimorph'
    python -m evo.ui --out outputs/combined-tiny-seed0   # the store that search logged to
    python -m evo.ui --tracking-uri sqlite:///runs/mlflow.db --port 5001 --no-browser

Starts `mlflow server` on 127.0.0.1 (the store is found as `evo.run` finds it: --tracking-uri, else
the --out search's own, else $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here), waits until it
answers, prints the link to the experiment's searches (one row per search, best first: the winning
architecture, its margin over the baseline, the FLOPs spent; a click on a row opens the search's
description) and opens it in the browser. Ctrl-C stops the server. A store on a tracking server
(http://...) is already served: its links are printed and nothing is started.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

HOST = "127.0.0.1"


def _search_of(out: str | None) -> tuple[str | None, str | None]:
    """(tracking URI, parent run id) of the search in --out, from its checkpoint; (None, None) without --out."""
    if out is None:
        return None, None
    path = Path(out) / "checkpoint.json"
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"--out {out}: no search there (no {path.name}); pass the --out a search ran with") from None
    except (OSError, ValueError) as e:
        raise ValueError(f"--out {out}: cannot read {path}: {e}") from None
    return doc.get("tracking_uri"), doc.get("run_id")


def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m evo.ui", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", help="a search's folder (evo.run --out): open its store and its run")
    ap.add_argument("--tracking-uri", help="the MLflow store (default: the --out search's, else "
                                           "$MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here)")
    ap.add_argument("--experiment", default="dimorph", help="MLflow experiment name (default: dimorph)")
    ap.add_argument("--port", type=int, default=5000, help="port on 127.0.0.1 (default: 5000)")
    ap.add_argument("--no-browser", action="store_true", help="print the link only")
    args = ap.parse_args(argv)
    if not 0 < args.port < 65536:
        ap.error(f"--port {args.port}: not a port (1..65535)")
    return args


def main(argv=None) -> int:
    args = parse(argv)
    from evo.tracking import TrackingError, resolve_uri
    from evo.tracking import server

    proc = None
    try:
        ckpt_uri, run_id = _search_of(args.out)
        uri = resolve_uri(args.tracking_uri or ckpt_uri)
        where = server.landing(uri, args.experiment, run_id)
        remote = uri.startswith(("http://", "https://"))
        base = uri.rstrip("/") if remote else f"http://{HOST}:{args.port}"
        if not remote:
            log = Path(tempfile.gettempdir()) / f"dimorph-ui-{args.port}.log"
            proc = server.start(uri, HOST, args.port, log)
            server.wait_until_up(proc, base, log)
    except (TrackingError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    urls = server.links(base, where)
    print(f"MLflow UI on {uri}, experiment {where['experiment']!r} ({where['searches']} search{'es' if where['searches'] != 1 else ''}):")
    print(f"  {urls['searches']}")
    print(f"  the searches, best first: the winning architecture, its margin over the baseline, the FLOPs;"
          f" click a search for its description\n  {'this' if args.out else 'the best'} search: {urls['search']}"
          f"\n  every architecture, best first: {urls['leaderboard']}", flush=True)
    if not args.no_browser:
        import webbrowser
        webbrowser.open(urls["searches"])
    if proc is None:
        return 0
    print("Ctrl-C stops the server.", flush=True)
    import signal

    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stopped by SIGTERM: the server stops too
    try:
        proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop(proc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
