"""The search's own figures (evo.figures_search): the Pareto front, gene importance, the files."""
import random

import pytest

from evo.figures_search import final_or_predicted, gene_importance, pareto_front, search_figures


def test_the_pareto_front_of_a_hand_made_set():
    pts = [(2.0, 3.0), (1.0, 4.0), (3.0, 1.0), (2.5, 3.5), (1.0, 4.0), (3.0, 2.0), (0.5, 5.0)]
    # (2.5, 3.5) is dominated by (2.0, 3.0); (3.0, 2.0) by (3.0, 1.0); the two (1.0, 4.0) tie: both stay
    assert pareto_front(pts) == [0, 1, 2, 4, 6]
    assert pareto_front([]) == [] and pareto_front([(1.0, 1.0)]) == [0]


def test_the_final_loss_ranked_on_is_the_true_one_else_the_prediction():
    assert final_or_predicted({"final": 2.5, "predicted": 2.0}) == 2.5
    assert final_or_predicted({"final": None, "predicted": 2.0}) == 2.0
    assert final_or_predicted({"final": float("inf"), "predicted": None}) is None


def rows(n=24, seed=0):
    """Evaluations whose loss depends on gene `a` alone (b is noise), over 3 generations."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a, b = rng.uniform(0, 1), rng.uniform(0, 1)
        g = i // 8
        out.append({"key": f"g{g}-c{i}", "generation": g, "role": "promoted" if i % 3 else "random",
                    "parents": [f"g{g - 1}-c{i - 8}"] if g else [], "genes": {"a": a, "b": b},
                    "early": 3.0 + a, "final": 2.0 + a if i % 2 else None, "predicted": 2.1 + a})
    return out


def test_gene_importance_finds_the_gene_the_loss_depends_on():
    imp = gene_importance(rows(), ["a", "b"], "early")
    assert set(imp) == {"a", "b"} and sum(imp.values()) == pytest.approx(1.0)
    assert imp["a"] > 0.9 > imp["b"]
    assert gene_importance(rows()[:3], ["a", "b"], "early") is None  # too few


def test_every_figure_is_written(tmp_path):
    files = search_figures(rows(), ["a", "b"], tmp_path / "figures")
    assert [f.name for f in files] == ["parallel_coordinates.png", "importance.png", "pareto.png", "lineage.png"]
    assert all(f.read_bytes()[:4] == b"\x89PNG" and f.stat().st_size > 5000 for f in files)
    assert search_figures([], ["a", "b"], tmp_path / "none") == []


def test_figures_of_a_search_where_nothing_finished_training(tmp_path):
    import warnings

    early_only = [{**r, "final": None} for r in rows()]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        files = search_figures(early_only, ["a", "b"], tmp_path)
    assert [f.name for f in files] == ["parallel_coordinates.png", "importance.png", "pareto.png", "lineage.png"]
