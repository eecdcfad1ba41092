"""The examples of examples/, at a tiny size: the digits MLP through evo.objective and through Optuna."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

ROOT = str(Path(__file__).resolve().parents[1])
if ROOT not in sys.path:  # examples/ is not an installed package: import it from the clone
    sys.path.insert(0, ROOT)

pytest.importorskip("sklearn")
optuna = pytest.importorskip("optuna")
from optuna.trial import TrialState  # noqa: E402

from evo.objective import spent_steps  # noqa: E402
from examples import digits, digits_optuna  # noqa: E402


def test_digits_through_the_python_api():
    study = digits.main(["--budget", "2", "--full-steps", "20"])
    assert 40 <= spent_steps(study) < 60
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert complete and all(0 < t.value < math.log(10) + 0.5 for t in complete)  # below chance + margin
    assert sorted(complete[0].intermediate_values) == [10, 20]
    again = digits.main(["--budget", "2", "--full-steps", "20"])
    assert [t.value for t in again.trials] == [t.value for t in study.trials]  # deterministic


def test_digits_through_optuna():
    study = digits_optuna.main(["--trials", "4", "--full-steps", "20"])
    assert len(study.trials) == 4
    values = [t.value for t in study.trials if t.state == TrialState.COMPLETE]
    assert values and all(0 < v < math.log(10) + 0.5 for v in values)
