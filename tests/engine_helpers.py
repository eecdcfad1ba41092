"""Small search configs shared by the engine tests."""
from evo.config import Config

# start="full": these tests count generation 0's trainings as the full start makes them (every
# bootstrap architecture fully trained); the default bracket start is run live by
# test_gpt_objective.py and counted by test_decisions.py
FAST = dict(preset="tiny", full_steps=30, early_frac=0.2, bootstrap=4, males=4, females=12, offspring=3,
            promote=1, promote_random=1, pred_steps=2, inference_samples=1, inference_tokens=8,
            progress=False, workers=0, start="full")


def fast_config(tmp, data, **kw) -> Config:
    """A search that trains ~20 tiny models for 30 steps, logging to a private sqlite store."""
    args = {**FAST, "out": str(tmp / "out"), "tracking_uri": f"sqlite:///{tmp / 'mlflow.db'}",
            "data": str(data), **kw}
    return Config(**args)


def outcome(summary: dict, out_dir) -> dict:
    """What two runs of the same search must agree on (timings and run ids excluded)."""
    import csv
    rows = list(csv.DictReader(open(f"{out_dir}/results.csv")))
    keep = ("key", "role", "early_val_loss", "predicted", "best_val_loss", "final_val_loss")
    b = summary["best"]
    return {"best": (b["key"], b["best_val_loss"], b["final_train_loss"]),
            "rows": [{k: r[k] for k in keep} for r in rows],
            "predictor": summary["predictor"] and summary["predictor"]["tree"]}
