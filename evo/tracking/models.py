"""The best architecture as an MLflow PyTorch model: logged on a search's parent run, loaded back."""
from __future__ import annotations

import json
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import mlflow

from evo.tracking.store import MlflowException, TrackingError, _quiet_downloads, _reason, read_client, resolve_uri

# The package the model's code is bundled as (and its pickle refers to): not `models`, which a
# user's own package of that name would shadow when the model is loaded outside Dimorph.
BUNDLE = "dimorph_models"


@contextmanager
def _global_uri(uri: str):
    """MLflow's model functions use the process-wide tracking URI: set it to ours for the call (and
    keep their download progress bars off the search's output, unless the user asked for them)."""
    old = mlflow.get_tracking_uri()
    with _quiet_downloads():
        mlflow.set_tracking_uri(uri)
        try:
            yield
        finally:
            mlflow.set_tracking_uri(old)


def drop_pending_models(client, experiment_id: str, run_id: str) -> list[str]:
    """Delete the run's logged models still PENDING: left by a process killed while it logged one
    (its finish is redone on resume, which logs the model again). Returns their ids."""
    from mlflow.entities import LoggedModelStatus

    found = client.search_logged_models([experiment_id], filter_string=f"source_run_id = '{run_id}'")
    pending = [m.model_id for m in found if m.status == LoggedModelStatus.PENDING]
    for model_id in pending:
        client.delete_logged_model(model_id)
    return pending


@contextmanager
def _bundled(code: Path):
    """BUNDLE imported from `code` (the bundle's folder) while inside, yielding its gpt module; the
    process's own BUNDLE modules (from a model loaded earlier), if any, are put back after."""
    import importlib

    def ours():
        return [k for k in sys.modules if k == BUNDLE or k.startswith(BUNDLE + ".")]

    saved = {k: sys.modules.pop(k) for k in ours()}
    sys.path.insert(0, str(code.parent))
    bytecode, sys.dont_write_bytecode = sys.dont_write_bytecode, True  # no __pycache__ in the bundle
    try:
        yield importlib.import_module(f"{BUNDLE}.gpt")
    finally:
        sys.dont_write_bytecode = bytecode
        sys.path.remove(str(code.parent))
        for k in ours():
            del sys.modules[k]
        sys.modules.update(saved)


def _as_bundled(model, gpt):
    """A copy of a models.gpt.GPT built from the bundled module `gpt` (same config, weights and
    mode), so that its pickle names BUNDLE.gpt's classes; the global random state is left as it was."""
    import dataclasses

    import torch

    with torch.random.fork_rng(devices=[]):
        copy = gpt.GPT(gpt.GPTConfig(**dataclasses.asdict(model.config)))
    copy.load_state_dict(model.state_dict())
    return copy.to(next(model.parameters()).device).train(model.training)


def log_gpt_model(client, uri: str, experiment_id: str, run_id: str, model, gpt_config: dict, vocab: str,
                  metadata: dict, step: int = 0, name: str = "model") -> str:
    """Log a models.gpt.GPT on run `run_id` as an MLflow PyTorch model called `name` (pickled, with
    the GPT's source code bundled as the package BUNDLE, so that it loads without Dimorph installed
    and whatever `models` package the loading process has); its GPTConfig and vocabulary travel in
    the MLmodel metadata and as gpt_config.json / vocab.json. Returns its models:/ URI."""
    import logging

    import mlflow.pytorch
    import numpy as np
    import torch
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    import models.gpt

    meta = {**metadata, "gpt_config": gpt_config, "vocab": vocab}
    with tempfile.TemporaryDirectory() as tmp:
        code = Path(tmp, "code", BUNDLE)
        code.mkdir(parents=True)
        shutil.copy(models.gpt.__file__, code / "gpt.py")
        (code / "__init__.py").write_text('"""The GPT of a Dimorph model."""\n')
        extra = [Path(tmp, "gpt_config.json"), Path(tmp, "vocab.json")]
        extra[0].write_text(json.dumps(gpt_config, indent=1))
        extra[1].write_text(json.dumps(vocab))
        signature = ModelSignature(inputs=Schema([TensorSpec(np.dtype(np.int64), (-1, -1), "idx")]))
        drop_pending_models(client, experiment_id, run_id)
        logged = client.create_logged_model(
            experiment_id, name=name, source_run_id=run_id, model_type="dimorph-char-gpt",
            params={k: str(v) for k, v in gpt_config.items()})
        quiet = logging.getLogger("mlflow.pytorch")  # its warning about pickles is for foreign models
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        try:
            with _global_uri(uri), _bundled(code) as gpt:
                info = mlflow.pytorch.log_model(
                    _as_bundled(model, gpt), name=name, model_id=logged.model_id, run_id=run_id, step=step,
                    serialization_format="pickle", code_paths=[str(code)], extra_files=[str(f) for f in extra],
                    pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"], metadata=meta,
                    signature=signature)
        finally:
            quiet.setLevel(level)
    return info.model_uri


def load_model(run_id: str, tracking_uri: str | None = None):
    """The model a search logged on its parent run: (GPT in eval mode on the CPU, metadata with
    `vocab` and `gpt_config`). TrackingError when the run or its model is not there."""
    import mlflow.pytorch
    from mlflow.models import Model

    client = read_client(tracking_uri, run_id)
    run = client.get_run(run_id)
    uri = run.data.tags.get("dimorph.model_uri")
    if uri is None:
        parent = run.data.tags.get("mlflow.parentRunId")
        if parent:
            why = f"it is one evaluation of the search run {parent}; pass that run id"
        elif run.data.params.get("table") not in (None, "None"):
            why = "the search ran on a table (--table), where no model exists"
        else:
            why = ("the search has not finished, or its best architecture's trained state was missing; "
                   "pass the run id of a finished search (its summary prints it)")
        raise TrackingError(f"run {run_id} has no logged model: {why}")
    with tempfile.TemporaryDirectory() as tmp, _global_uri(resolve_uri(tracking_uri)):
        try:
            local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp)
        except MlflowException as e:
            raise TrackingError(f"cannot download the model {uri} of run {run_id}: {_reason(e)}") from None
        meta = Model.load(local).metadata or {}
        model = mlflow.pytorch.load_model(local, map_location="cpu")
    return model.eval(), meta
