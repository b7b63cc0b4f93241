"""Experiment-tracker event writers: Weights & Biases and MLflow (optional extras).

Switched on by ``train.wandb.enabled`` / ``train.mlflow.enabled`` (``configs/common/train.py``).
Each writer logs, from the main process only:

* every scalar of the :class:`~mrdetr.utils.events.EventStorage` (losses, lr, timings, and the
  flattened evaluation results such as ``bbox/AP``), once per iteration it was recorded at;
* the run's config (``output_dir/config.yaml``, written by ``default_setup``);
* one table per evaluation task (``metric``, ``value`` rows: the AP table) after each evaluation.

``pip install 'mrdetr[wandb]'`` / ``'mrdetr[mlflow]'`` installs the packages.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import time
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any

from omegaconf import OmegaConf

from mrdetr.engine.hooks import EvalHook
from mrdetr.utils import comm
from mrdetr.utils.events import EventWriter, _NewScalarsMixin, get_event_storage

__all__ = [
    "MLflowWriter",
    "TrackerWriter",
    "WandbWriter",
    "build_tracker_writers",
    "log_evaluation",
]

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"  # written by mrdetr.engine.defaults.default_setup
ITERATION_KEY = "iteration"  # the x-axis of every W&B chart
TABLE_PREFIX = "eval_tables"  # W&B key / MLflow artifact folder of the evaluation tables
TABLE_COLUMNS = ("metric", "value")
MLFLOW_DEFAULT_DB = "mlflow.db"  # default store: a SQLite file in output_dir
MLFLOW_DEFAULT_ARTIFACTS = "mlartifacts"
MLFLOW_PARAMS_PER_CALL = 100  # MLflow's limit of params in one log_batch
MLFLOW_PARAM_MAX_CHARS = 6000  # MLflow's limit of one param value
_MLFLOW_BAD_NAME_CHARS = re.compile(r"[^/\w.\- ]")
_MS_PER_S = 1000
_MLFLOW_KEYS = ("tracking_uri", "experiment", "run_name", "artifact_location")


def _require(module: str, config_key: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"{config_key}.enabled=True needs the '{module}' package: "
            f"pip install 'mrdetr[{module}]' (or set {config_key}.enabled=False)."
        ) from exc


def load_run_config(output_dir: str) -> dict[str, Any] | None:
    """The run's saved config as a plain dict (``None`` when ``config.yaml`` is missing)."""
    path = os.path.join(output_dir, CONFIG_FILE)
    if not os.path.isfile(path):
        logger.warning("No %s in %s: the trackers log no config.", CONFIG_FILE, output_dir)
        return None
    return OmegaConf.to_container(OmegaConf.load(path), resolve=False)


def _flatten_config(node: Any, prefix: str = "") -> dict[str, str]:
    if isinstance(node, Mapping):
        flat: dict[str, str] = {}
        for key, value in node.items():
            flat.update(_flatten_config(value, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): str(node)}


class TrackerWriter(_NewScalarsMixin, EventWriter):
    """An :class:`EventWriter` for an external tracker; subclasses implement the two ``_log_*``.

    Args:
        window_size: median window for smoothed scalars (as the other writers).
    """

    def __init__(self, window_size: int = 20) -> None:
        self._init_tracking(window_size)

    def write(self) -> None:
        for iteration, scalars in self._new_scalars(get_event_storage()).items():
            self._log_scalars(iteration, scalars)

    def log_evaluation(self, results: Mapping[str, Any], iteration: int) -> None:
        """Log one table per task of ``results`` (``{task: {metric: value}}``)."""
        for task, metrics in results.items():
            if isinstance(metrics, Mapping) and metrics:
                rows = sorted(EvalHook._flatten(metrics).items(), key=lambda row: row[0])
                self._log_table(str(task), rows, iteration)

    def _log_scalars(self, iteration: int, scalars: dict[str, float]) -> None:
        raise NotImplementedError

    def _log_table(self, task: str, rows: Sequence[tuple[str, float]], iteration: int) -> None:
        raise NotImplementedError


class WandbWriter(TrackerWriter):
    """Log to a Weights & Biases run (``WANDB_MODE=offline`` keeps it on disk, no login).

    Charts use ``iteration`` as their x-axis, so values logged out of order stay where they belong.

    Args:
        log_dir: folder of the ``wandb/`` run directory.
        config: the run config logged as the W&B config.
        window_size: median window for smoothed scalars.
        **init_kwargs: ``wandb.init`` arguments (``project``, ``name``, ``entity``, ``tags``,
            ``mode``, ...).
    """

    def __init__(
        self,
        *,
        log_dir: str,
        config: Mapping[str, Any] | None = None,
        window_size: int = 20,
        **init_kwargs: Any,
    ) -> None:
        super().__init__(window_size)
        self._wandb = _require("wandb", "train.wandb")
        os.makedirs(log_dir, exist_ok=True)
        self._run = self._wandb.init(dir=log_dir, config=dict(config or {}), **init_kwargs)
        self._run.define_metric(ITERATION_KEY)
        self._run.define_metric("*", step_metric=ITERATION_KEY)

    def _log_scalars(self, iteration: int, scalars: dict[str, float]) -> None:
        self._run.log({ITERATION_KEY: iteration, **scalars})

    def _log_table(self, task: str, rows: Sequence[tuple[str, float]], iteration: int) -> None:
        table = self._wandb.Table(columns=list(TABLE_COLUMNS), data=[list(row) for row in rows])
        self._run.log({ITERATION_KEY: iteration, f"{TABLE_PREFIX}/{task}": table})

    def close(self) -> None:
        self._run.finish()


class MLflowWriter(TrackerWriter):
    """Log to an MLflow run through ``MlflowClient`` (no global active run is set).

    Metric names keep ``/``; characters MLflow refuses become ``_``. The config is logged as
    flattened params (``model.num_queries``) and as the ``config.yaml`` artifact; each evaluation
    appends its rows to the ``eval_tables/<task>.json`` table artifact.

    Args:
        tracking_uri: MLflow tracking URI (``sqlite:///...``, ``file:...``, ``http://...``).
        experiment: experiment name (created when missing).
        run_name: display name of the run (``None``: MLflow picks one).
        artifact_location: artifact root of a newly created experiment (``None``: the store's).
        config: the run config.
        window_size: median window for smoothed scalars.
    """

    def __init__(
        self,
        *,
        tracking_uri: str,
        experiment: str,
        run_name: str | None = None,
        artifact_location: str | None = None,
        config: Mapping[str, Any] | None = None,
        window_size: int = 20,
    ) -> None:
        super().__init__(window_size)
        _require("mlflow", "train.mlflow")
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        self._client = MlflowClient(tracking_uri=tracking_uri)
        found = self._client.get_experiment_by_name(experiment)
        experiment_id = (
            found.experiment_id
            if found is not None
            else self._client.create_experiment(experiment, artifact_location=artifact_location)
        )
        self.run_id: str = self._client.create_run(experiment_id, run_name=run_name).info.run_id
        if config:
            params = [
                Param(self._name(key), value[:MLFLOW_PARAM_MAX_CHARS])
                for key, value in _flatten_config(config).items()
            ]
            for start in range(0, len(params), MLFLOW_PARAMS_PER_CALL):
                self._client.log_batch(
                    self.run_id, params=params[start : start + MLFLOW_PARAMS_PER_CALL]
                )
            self._client.log_dict(self.run_id, dict(config), CONFIG_FILE)

    @staticmethod
    def _name(name: str) -> str:
        return _MLFLOW_BAD_NAME_CHARS.sub("_", name)

    def _log_scalars(self, iteration: int, scalars: dict[str, float]) -> None:
        from mlflow.entities import Metric

        timestamp = int(time.time() * _MS_PER_S)
        metrics = [
            Metric(self._name(name), value, timestamp, iteration) for name, value in scalars.items()
        ]
        self._client.log_batch(self.run_id, metrics=metrics)

    def _log_table(self, task: str, rows: Sequence[tuple[str, float]], iteration: int) -> None:
        metric, value = TABLE_COLUMNS
        table = {
            ITERATION_KEY: [iteration] * len(rows),
            metric: [name for name, _ in rows],
            value: [number for _, number in rows],
        }
        self._client.log_table(self.run_id, table, f"{TABLE_PREFIX}/{self._name(task)}.json")

    def close(self) -> None:
        self._client.set_terminated(self.run_id)


def _init_kwargs(node: Mapping[str, Any], skip: Sequence[str]) -> dict[str, Any]:
    """The non-empty entries of a tracker's config node, without ``skip``."""
    values = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
    return {
        key: value for key, value in values.items() if key not in skip and value not in ("", None)
    }


def _enabled(node: Mapping[str, Any] | None) -> bool:
    return node is not None and bool(node.get("enabled", False))


def build_tracker_writers(cfg: Any) -> list[TrackerWriter]:
    """The writers switched on in ``cfg.train.wandb`` / ``cfg.train.mlflow`` (main process only).

    Returns an empty list on the other ranks and when neither tracker is enabled.
    """
    if not comm.is_main_process():
        return []
    output_dir = str(cfg.train.output_dir)
    wandb_cfg, mlflow_cfg = cfg.train.get("wandb", None), cfg.train.get("mlflow", None)
    if not (_enabled(wandb_cfg) or _enabled(mlflow_cfg)):
        return []
    config = load_run_config(output_dir)
    writers: list[TrackerWriter] = []
    if _enabled(wandb_cfg):
        kwargs = _init_kwargs(wandb_cfg, skip=("enabled", "dir"))
        log_dir = wandb_cfg.get("dir", "") or output_dir
        writers.append(WandbWriter(log_dir=log_dir, config=config, **kwargs))
    if _enabled(mlflow_cfg):
        kwargs = _init_kwargs(mlflow_cfg, skip=("enabled",))
        unknown = sorted(set(kwargs) - set(_MLFLOW_KEYS))
        if unknown:
            raise ValueError(
                f"train.mlflow: unknown key(s) {unknown}; expected some of {list(_MLFLOW_KEYS)}."
            )
        if "tracking_uri" not in kwargs:  # default: a SQLite store and artifacts in output_dir
            out = os.path.abspath(output_dir)
            kwargs["tracking_uri"] = f"sqlite:///{os.path.join(out, MLFLOW_DEFAULT_DB)}"
            kwargs.setdefault("artifact_location", os.path.join(out, MLFLOW_DEFAULT_ARTIFACTS))
        writers.append(MLflowWriter(config=config, **kwargs))
    return writers


def log_evaluation(
    writers: Sequence[TrackerWriter], results: Mapping[str, Any] | None
) -> Mapping[str, Any] | None:
    """Log ``results`` as tables to every writer; return ``results`` (for chaining in EvalHook).

    The iteration is that of the active event storage (0 before training starts).
    """
    if writers and results:
        try:
            iteration = get_event_storage().iter
        except RuntimeError:  # evaluation before training (train.eval_at_start)
            iteration = 0
        for writer in writers:
            writer.log_evaluation(results, iteration)
    return results
