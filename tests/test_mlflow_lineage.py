"""What a search leaves in MLflow beyond its numbers, read back from a real sqlite store after a
table search: each child's description (its search and parents as run links, its female's formula
in full), the margin over the baseline, the held-out tau with its n and 95% interval, and parent
params without None."""
import dataclasses
import io
import json
import math
from contextlib import redirect_stdout
from pathlib import Path
from types import SimpleNamespace

import pytest
from mlflow.tracking import MlflowClient

from evo.tracking import JUDGE_CHARS, MAX_TAG_VALUE, TAG_KEY, Tracker, fully_trained, run_page, ui_url
from tests.table_helpers import make_table

BASELINE = "x1"  # a row well behind the table's best (x0 is the best of make_table's seed 0)


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """A finished 3-generation combined search (12 bootstrap architectures, so that 8 are held out)
    on a synthetic table whose baseline is BASELINE, with what it printed."""
    from evo.config import parse_config
    from evo.run import cli

    tmp = tmp_path_factory.mktemp("lineage")
    table = make_table(tmp / "tab")
    meta = json.loads((table / "table.json").read_text())
    (table / "table.json").write_text(json.dumps({**meta, "baseline": BASELINE}))
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    args = ["--table", str(table), "--gens", "3", "--bootstrap", "12", "--start", "full", "--out", str(tmp / "out"), "--no-progress",
            "--tracking-uri", uri]
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, redirect_stdout(printed):
        mp.chdir(tmp)
        assert cli(args) == 0
    summary = json.loads((tmp / "out" / "summary.json").read_text())
    client = MlflowClient(uri)
    parent = client.get_run(summary["mlflow"]["run_id"])
    kids = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
                              max_results=1000)
    return SimpleNamespace(tmp=tmp, table=table, uri=uri, cfg=parse_config(args), summary=summary,
                           printed=printed.getvalue(), client=client, parent=parent, kids=kids,
                           by_key={k.data.tags[TAG_KEY]: k for k in kids},
                           checkpoint=json.loads((tmp / "out" / "checkpoint.json").read_text()))


def test_each_child_links_its_search_and_its_parents(searched):
    s = searched
    exp, pid = s.parent.info.experiment_id, s.parent.info.run_id
    assert s.parent.info.run_name == f"combined-tiny-seed0-{pid[:6]}"
    search_link = f"[`{s.parent.info.run_name}`](#/experiments/{exp}/runs/{pid})"
    assert run_page(exp, pid) == f"#/experiments/{exp}/runs/{pid}" and ui_url(s.uri, exp, pid).split("/", 3)[3] \
        == f"{run_page(exp, pid)}?workflowType=machine_learning"  # the UI page's address, relative to the UI
    with_parents = 0
    for key, kid in s.by_key.items():
        note, tags = kid.data.tags["mlflow.note.content"], kid.data.tags
        gen = tags["dimorph.generation"]
        assert note.startswith(f"Evaluation `{key}` of the Dimorph search {search_link}, generation {gen}.\n")
        keys = [k for k in tags["dimorph.parent_keys"].split(",") if k]
        if not keys:
            assert "- Parents: none\n" in note and gen == "0"
            continue
        with_parents += 1
        links = [f"[`{k}`](#/experiments/{exp}/runs/{s.by_key[k].info.run_id})" for k in keys]
        assert f"- Parents: {', '.join(links)}\n" in note
        assert tags["dimorph.parents"].split(",") == [s.by_key[k].info.run_id for k in keys]  # the same mapping
    assert with_parents == 3 * s.cfg.offspring  # every bred child, generations 1 to 3


def test_a_child_names_its_female_and_her_predictor_child_in_full(searched):
    s = searched
    lineage = {r["key"]: r for r in s.checkpoint["lineage"]}
    assert lineage and set(lineage) <= set(s.by_key)
    for key, row in lineage.items():
        note = s.by_key[key].data.tags["mlflow.note.content"]
        assert f"- Female of its mating: `{row['female']}`\n" in note
        assert f"- Her predictor child: `{row['female_child']}`\n" in note
        assert s.by_key[key].data.tags["dimorph.female"] == row["female"][:JUDGE_CHARS]


def test_a_description_over_the_tag_limit_keeps_the_whole_formula_as_an_artifact(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(uri, "lineage")
    tracker.start_search({}, run_name="long")
    mother = tracker.log_phase("g0-b0", {"steps": 2}, phase="early", outcome=False, genes={"w": 1}, seed=0,
                               generation=0, role="bootstrap")
    formula = "add(" * 1200 + "v_last" + ", l0)" * 1200  # 10806 characters: over MLflow's tag limit
    rid = tracker.log_phase("g1-c0", {"steps": 2}, phase="early", outcome=False, genes={"w": 2}, seed=0,
                            generation=1, role="child", parents=("g0-b0",), female=formula, female_child="v_last")
    client = MlflowClient(uri)
    tags = client.get_run(rid).data.tags
    note = tags["mlflow.note.content"]
    assert len(note) <= MAX_TAG_VALUE and note.endswith("(cut here: the whole description is description.md)\n")
    whole = Path(client.download_artifacts(rid, "description.md", str(tmp_path))).read_text()
    exp = tracker.experiment_id
    assert whole.startswith(f"Evaluation `g1-c0` of the Dimorph search [`long-{tracker.run_id[:6]}`]"
                            f"(#/experiments/{exp}/runs/{tracker.run_id}), generation 1.\n")
    assert f"- Parents: [`g0-b0`](#/experiments/{exp}/runs/{mother})\n" in whole
    assert f"- Female of its mating: `{formula}`\n" in whole and len(formula) == 10806
    assert tags["dimorph.female"] == formula[:JUDGE_CHARS]


def test_the_margin_over_the_baseline_is_logged_and_printed(searched):
    from evo.table import load_table

    s = searched
    table = load_table(str(s.table))
    base = s.by_key["g0-b0"].data.metrics["arch/best_val_loss"]  # the preset's baseline, trained in generation 0
    assert base == pytest.approx(table.targets[table.index[BASELINE]])
    best = min(k.data.metrics["arch/best_val_loss"] for k in s.kids if fully_trained(k))
    m = s.parent.data.metrics
    assert m["final/baseline_best_val_loss"] == base and m["final/best_val_loss"] == best
    margin, pct = base - best, 100 * (base - best) / base
    assert margin > 0.1  # the search found much better than x1
    assert m["final/margin_vs_baseline"] == pytest.approx(margin, abs=1e-12)
    assert m["final/margin_vs_baseline_pct"] == pytest.approx(pct, abs=1e-9)
    line = (f"the preset's baseline architecture, same budget: best val loss {base:.4f}; "
            f"the best is {margin:.4f} ({pct:.1f}%) better than the baseline")
    assert f"\n  {line}\n" in s.printed
    assert f"\n- The{line[3:]}\n" in s.parent.data.tags["mlflow.note.content"]


def test_the_held_out_tau_shows_its_n_and_95_percent_interval(searched):
    from evo.females import Females
    from evo.ledger import records_from_rows
    from primitives.fitness import holdout_mask, kendall_tau

    s = searched
    p, m = s.summary["predictor"], s.parent.data.metrics
    # the archive the champion was scored on: every fully trained child (no warm start here)
    archive = records_from_rows(s.checkpoint["archive"])
    assert sorted(r.key for r in archive) == sorted(k.data.tags[TAG_KEY] for k in s.kids if fully_trained(k))
    held = holdout_mask([r.key for r in archive])
    n = int(held.sum())
    assert p["holdout_n"] == n == m["final/predictor_holdout_n"] and n >= 5
    fem = Females(arch_features=s.cfg.arch_features)
    champ = fem.from_strings([p["tree"]])[0]
    raw = fem.raw(champ, archive)
    tau = kendall_tau(raw[held], [r.target for r, h in zip(archive, held) if h])
    assert p["holdout_kendall_tau"] == pytest.approx(tau) and m["final/predictor_holdout_tau"] == pytest.approx(tau)
    # Fisher's z with standard error sqrt(0.437 / (n - 4)); a perfect tau is taken half a pair short
    edge = 1 - 2 / (n * (n - 1))
    z, half = math.atanh(max(-edge, min(edge, tau))), 1.959963984540054 * math.sqrt(0.437 / (n - 4))
    lo, hi = max(-1.0, min(math.tanh(z - half), tau)), min(1.0, max(math.tanh(z + half), tau))
    assert p["holdout_ci"] == pytest.approx([lo, hi])
    assert m["final/predictor_holdout_tau_ci_low"] == pytest.approx(lo)
    assert m["final/predictor_holdout_tau_ci_high"] == pytest.approx(hi)
    assert lo <= tau <= hi
    text = f"{tau:.3f} held out (n={n}, 95% CI {lo:.2f}..{hi:.2f})"
    assert f"Kendall tau {p['fit_kendall_tau']:.3f} on the archive, {text}): " in s.printed
    assert f"**{text}**" in s.parent.data.tags["mlflow.note.content"]
    for where in (s.printed, s.parent.data.tags["mlflow.note.content"]):
        assert where.count(" held out") == 1  # never without its n


def test_the_parent_logs_no_param_that_is_none(searched):
    s = searched
    params = s.parent.data.params
    assert "None" not in params.values()
    unset = {k for k, v in dataclasses.asdict(s.cfg).items() if v is None}
    assert "dask_scheduler" in unset and not unset & set(params)
    set_ = {k: v for k, v in dataclasses.asdict(s.cfg).items() if v is not None}
    assert set(set_) <= set(params) and params["table"] == str(s.table) and params["gens"] == "3"
