"""Config-driven training and evaluation: what ``projects/train_net.py`` runs.

Reads ``cfg.model``, ``cfg.optimizer`` (built with the model as ``params.model``),
``cfg.lr_multiplier``, ``cfg.dataloader.{train,test,evaluator}`` and ``cfg.train.*``
(see ``configs/common/train.py``). The caller's ``cfg`` is only read: values known at run time
(the model, the loader's seed and start) go into a copy of the node that is built.
"""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any

import torch
from torch import nn

from mrdetr.checkpoint.checkpointer import Checkpointer
from mrdetr.config.access import get_dotted, updated_copy
from mrdetr.config.overrides import ConfigValueError
from mrdetr.data.validation import check_data_against_model
from mrdetr.engine import hooks
from mrdetr.engine.defaults import default_setup, resolve_device
from mrdetr.engine.ema import ModelEMA, unwrap_model
from mrdetr.engine.eval_metrics import write_eval_only_metrics
from mrdetr.engine.launch import create_ddp_model, resolve_find_unused_parameters
from mrdetr.engine.predictor_config import dataset_metadata
from mrdetr.engine.stop_signal import DEFAULT_STOP_SIGNALS, StopOnSignal
from mrdetr.engine.trackers import build_tracker_writers, log_evaluation
from mrdetr.engine.train_loop import Trainer, build_grad_scaler
from mrdetr.solver.lr_scheduler import LRMultiplier
from mrdetr.utils import comm
from mrdetr.utils.events import CommonMetricPrinter, EventWriter, JSONWriter, TensorboardXWriter

__all__ = [
    "apply_configured_lrs",
    "build_ema",
    "build_lr_scheduler",
    "build_model",
    "build_optimizer",
    "default_writers",
    "do_test",
    "do_train",
    "main",
]

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
INFERENCE_DIR = "inference"
EMA_RESULT_SUFFIX = "_ema"
_FAST_DEV_RUN_KEYS = ("max_iter", "eval_period", "log_period")  # train.* set by fast_dev_run


def _instantiate(node: Any) -> Any:
    from mrdetr.config import instantiate

    return instantiate(node)


def build_model(cfg: Any) -> nn.Module:
    """Instantiate ``cfg.model`` and move it to ``train.device``."""
    model = _instantiate(cfg.model)
    device = resolve_device(cfg.train.device)
    model.to(device)
    logger.debug("Model:\n%s", model)
    return model


def build_optimizer(cfg: Any, model: nn.Module) -> torch.optim.Optimizer:
    """Instantiate ``cfg.optimizer`` with ``model`` given to its parameter-group builder."""
    return _instantiate(updated_copy(cfg.optimizer, {"params.model": model}))


def build_lr_scheduler(cfg: Any, optimizer: torch.optim.Optimizer) -> LRMultiplier:
    """``LRMultiplier`` over ``cfg.lr_multiplier`` for ``train.max_iter`` optimizer steps."""
    return LRMultiplier(optimizer, _instantiate(cfg.lr_multiplier), max_iter=cfg.train.max_iter)


def build_ema(cfg: Any, model: nn.Module) -> ModelEMA | None:
    """A :class:`ModelEMA` when ``train.model_ema.enabled``, else ``None``."""
    ema_cfg = cfg.train.get("model_ema", None)
    if ema_cfg is None or not ema_cfg.get("enabled", False):
        return None
    return ModelEMA(model, decay=ema_cfg.decay, device=ema_cfg.get("device") or None)


def default_writers(output_dir: str, max_iter: int) -> list[EventWriter]:
    """Console printer, ``metrics.json`` and TensorBoard event files in ``output_dir``."""
    return [
        CommonMetricPrinter(max_iter),
        JSONWriter(os.path.join(output_dir, METRICS_FILE)),
        TensorboardXWriter(output_dir),
    ]


def _build_evaluator(cfg: Any, output_suffix: str = "") -> Any:
    """``cfg.dataloader.evaluator`` built with ``output_suffix`` appended to its ``output_dir``
    (so the EMA results go to ``inference_ema/``, never over the regular ones); cfg is not changed."""
    node = cfg.dataloader.evaluator
    if not output_suffix or not node.get("output_dir", None):
        return _instantiate(node)
    from omegaconf import OmegaConf

    built = OmegaConf.to_container(node, resolve=True)
    built["output_dir"] = f"{built['output_dir']}{output_suffix}"
    return _instantiate(built)


def _evaluate(
    cfg: Any, model: nn.Module, output_suffix: str = "", compile_modules: bool = False
) -> dict[str, Any]:
    """Evaluate ``model`` on the test set in ``train.inference_dtype`` (bf16 runs a prepared copy,
    so the weights being trained are never cast); route diagnostics run in float32.

    With ``compile_modules`` (eval-only runs), ``train.compile`` applies to the evaluated model.
    """
    from mrdetr.engine.compiling import compile_from_config
    from mrdetr.engine.precision import (
        INFERENCE_DTYPE_KEY,
        configured_inference_dtype,
        inference_model,
        resolve_inference_dtype,
    )
    from mrdetr.evaluation import inference_on_dataset, print_csv_format

    device = next(model.parameters()).device
    dtype = resolve_inference_dtype(
        configured_inference_dtype(cfg), device, name=INFERENCE_DTYPE_KEY
    )
    eval_model = inference_model(model, dtype)
    if compile_modules:
        compile_from_config(eval_model, cfg)
    results = inference_on_dataset(
        eval_model,
        _instantiate(cfg.dataloader.test),
        _build_evaluator(cfg, output_suffix),
        amp_dtype=None if dtype == torch.float32 else dtype,
    )
    if comm.is_main_process():
        print_csv_format(results)
    report = _route_report(cfg, model)
    if report is not None:
        results["routes"] = report["routes"]
    return results


def _route_report(cfg: Any, model: nn.Module) -> dict[str, Any] | None:
    """Route diagnostics on the test set when ``train.route_report.enabled`` (one process only)."""
    settings = cfg.train.get("route_report", None)
    if settings is None or not settings.get("enabled", False):
        return None
    if comm.get_world_size() > 1:
        logger.warning("train.route_report runs in single-process runs only: skipped.")
        return None
    from mrdetr.evaluation.route_diagnostics import run_route_diagnostics, summary_line

    report = run_route_diagnostics(
        model,
        _instantiate(cfg.dataloader.test),
        cfg.dataloader.test.dataset,
        nms_iou=float(settings.get("nms_iou", 0.7)),
        score_threshold=float(settings.get("score_threshold", 0.3)),
        match_iou=float(settings.get("match_iou", 0.5)),
    )
    logger.info("Route diagnostics: %s", summary_line(report))
    return report


def do_test(
    cfg: Any, model: nn.Module, *, ema: ModelEMA | None = None, eval_only: bool = False
) -> dict[str, Any]:
    """Evaluate ``model`` (and, when given, its EMA weights: keys suffixed ``_ema``, files in the
    evaluator's ``output_dir`` + ``_ema``).

    ``eval_only``: no training follows, so ``train.compile`` may compile ``model`` in place.

    Returns an empty dict when the config has no ``dataloader.evaluator``.
    """
    if "evaluator" not in cfg.dataloader:
        return {}
    model = unwrap_model(model)
    results = dict(_evaluate(cfg, model, compile_modules=eval_only))
    if ema is not None:
        logger.info("Evaluating the EMA weights.")
        with ema.apply_to(model):
            ema_results = _evaluate(cfg, model, EMA_RESULT_SUFFIX)
        results.update({f"{task}{EMA_RESULT_SUFFIX}": value for task, value in ema_results.items()})
    return results


def _train_settings(cfg: Any) -> dict[str, Any]:
    train = cfg.train
    clip = train.get("clip_grad", {})
    clip_on = bool(clip.get("enabled", False))
    return dict(
        amp_enabled=bool(train.amp.enabled),
        amp_dtype=str(train.amp.get("dtype", "float16")),
        grad_clip_max_norm=float(clip.params.max_norm) if clip_on else None,
        grad_clip_norm_type=float(clip.params.get("norm_type", 2)) if clip_on else 2.0,
        grad_accum_steps=int(train.get("grad_accum_steps", 1)),
        nan_policy=str(train.get("nan_policy", "stop")),
    )


class LoaderSeed:
    """The training loader's seed as checkpoint state, so ``--resume`` continues the same stream.

    Args:
        seed: the configured ``dataloader.train.seed``; None draws one shared by all processes.
    """

    def __init__(self, seed: int | None):
        self.seed = int(seed) if seed is not None else int(comm.shared_random_seed())

    def state_dict(self) -> dict[str, int]:
        return {"seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.seed = int(state["seed"])


def apply_configured_lrs(scheduler: LRMultiplier, configured: list[float]) -> None:
    """After a resume, keep the config's base LRs (e.g. ``--resume optimizer.lr=1e-3``).

    The checkpoint restores the scheduler's and optimizer's base LRs; when they differ from the
    ones the config gives now, the config's win (as a detectron2 user expects from an override)
    and a warning names both. The schedule position is the checkpoint's.

    Args:
        scheduler: the restored scheduler.
        configured: its per-group base LRs as built from the config, before the resume.
    """
    restored = list(scheduler.base_lrs)
    if restored == configured:
        return
    logger.warning(
        "Resume: applying the configured base LRs %s instead of the checkpoint's %s "
        "(optimizer.lr changed since the checkpoint was written).",
        configured,
        restored,
    )
    scheduler.base_lrs = list(configured)
    lrs = scheduler.get_lr()
    for group, base_lr, lr in zip(scheduler.optimizer.param_groups, configured, lrs):
        group["initial_lr"] = base_lr
        group["lr"] = lr
    scheduler._last_lr = lrs


def do_train(cfg: Any, args: argparse.Namespace) -> Trainer:
    """Build everything from ``cfg`` and train; resume when ``args.resume``.

    Returns:
        The finished :class:`Trainer` (its ``storage`` holds the run's metrics).
    """
    settings = _train_settings(cfg)
    trackers = build_tracker_writers(cfg)  # first: a missing tracker package fails fast
    model = build_model(cfg)
    optimizer = build_optimizer(cfg, model)
    scheduler = build_lr_scheduler(cfg, optimizer)
    configured_lrs = list(scheduler.base_lrs)
    ema = build_ema(cfg, model)
    device_type = next(model.parameters()).device.type
    grad_scaler = build_grad_scaler(
        amp_enabled=settings["amp_enabled"],
        amp_dtype=settings["amp_dtype"],
        device_type=device_type,
    )
    output_dir = cfg.train.output_dir
    loader_seed = LoaderSeed(cfg.dataloader.train.get("seed", None))
    checkpointer = Checkpointer(
        model,
        output_dir,
        optimizer=optimizer,
        scheduler=scheduler,
        grad_scaler=grad_scaler,
        ema=ema,
        data_loader=loader_seed,
    )
    start_iter = checkpointer.resume_or_load(
        cfg.train.init_checkpoint,
        resume=bool(getattr(args, "resume", False)),
        min_match=_init_min_match(cfg),
    )
    if start_iter > 0:
        apply_configured_lrs(scheduler, configured_lrs)
    # the data stream is a function of this seed: a resumed run continues the same stream
    loader_values: dict[str, Any] = {"seed": loader_seed.seed}
    ddp_model = _create_ddp_model(cfg, model)
    if start_iter > 0 or "start_iter" in cfg.dataloader.train:
        # the loader counts batches; one iteration consumes grad_accum_steps of them
        loader_values["start_iter"] = start_iter * settings["grad_accum_steps"]
    train_loader = _instantiate(updated_copy(cfg.dataloader.train, loader_values))
    check_data_against_model(cfg, getattr(getattr(train_loader, "dataset", None), "dicts", []))
    checkpointer.metadata = dataset_metadata(cfg)  # class names travel with the weights
    trainer = Trainer(ddp_model, train_loader, optimizer, grad_scaler=grad_scaler, **settings)
    max_iter = int(cfg.train.max_iter)
    ckpt_cfg = cfg.train.checkpointer
    writer_hook = (
        hooks.PeriodicWriter(
            [*default_writers(output_dir, max_iter), *trackers], period=cfg.train.log_period
        )
        if comm.is_main_process()
        else None
    )
    periodic = hooks.PeriodicCheckpointer(
        checkpointer, ckpt_cfg.period, max_iter=max_iter, max_to_keep=ckpt_cfg.get("max_to_keep")
    )
    trainer.register_hooks(
        [
            hooks.IterationTimer(),
            hooks.EMAHook(ema) if ema is not None else None,
            hooks.LRScheduler(scheduler),
            periodic,
            hooks.EvalHook(
                cfg.train.eval_period,
                lambda: log_evaluation(trackers, do_test(cfg, model, ema=ema)),
                eval_before_train=bool(cfg.train.get("eval_at_start", False)) and start_iter == 0,
                after_eval=writer_hook.write_all if writer_hook is not None else None,
            ),
            # after the checkpoint and evaluation hooks: a stop keeps the iteration's evaluation
            _stop_on_signal(cfg, periodic),
            writer_hook,
        ]
    )
    ddp_model.train()
    trainer.train(start_iter, max_iter)
    return trainer


def _create_ddp_model(cfg: Any, model: nn.Module) -> nn.Module:
    ddp = dict(cfg.train.get("ddp", {}))
    key, value = "train.ddp.find_unused_parameters", ddp.get("find_unused_parameters", "auto")
    try:
        ddp["find_unused_parameters"] = resolve_find_unused_parameters(model, value)
    except ValueError as exc:
        raise ConfigValueError(f"{key}={value!r}: {exc}", key, value) from None
    return create_ddp_model(model, **ddp)


def _signal_names(cfg: Any, key: str, default: Any) -> list[str]:
    names = cfg.train.get(key, default)
    return [names] if isinstance(names, str) else [str(name) for name in names or []]


def _stop_on_signal(cfg: Any, periodic: hooks.PeriodicCheckpointer) -> StopOnSignal:
    names = _signal_names(cfg, "stop_signals", DEFAULT_STOP_SIGNALS)
    chained = _signal_names(cfg, "stop_chained_signals", ())
    try:
        return StopOnSignal(periodic, names, chained)
    except ValueError as exc:
        raise ConfigValueError(
            f"train.stop_signals={names} / train.stop_chained_signals={chained}: {exc}",
            "train.stop_signals",
            names,
        ) from None


def _load_for_eval(cfg: Any, model: nn.Module) -> None:
    path = cfg.train.init_checkpoint
    if not path:
        logger.warning("train.init_checkpoint is empty: evaluating freshly initialised weights.")
        return
    ema_cfg = cfg.train.get("model_ema", {})
    if ema_cfg.get("enabled", False) and ema_cfg.get("use_ema_weights_for_eval_only", False):
        ema = ModelEMA(model, decay=ema_cfg.get("decay", 0.999))
        Checkpointer(model, save_to_disk=False, ema=ema).load(path, checkpointables=["ema"])
        ema.copy_to(model)
        logger.info("Evaluating the EMA weights of %s.", path)
        return
    Checkpointer(model, save_to_disk=False).load_weights(path, min_match=_init_min_match(cfg))


def _init_min_match(cfg: Any) -> float:
    return float(cfg.train.get("init_checkpoint_min_match", 0.0))


def prepare_config(cfg: Any) -> Any:
    """A copy of ``cfg`` with ``train.fast_dev_run`` applied and the evaluator's output in the run.

    ``cfg`` itself is not changed.
    """
    values: dict[str, Any] = {}
    fast = cfg.train.get("fast_dev_run", {})
    if fast.get("enabled", False):
        for key in _FAST_DEV_RUN_KEYS:
            values[f"train.{key}"] = fast[key]
    evaluator = get_dotted(cfg, "dataloader.evaluator")
    if evaluator is not None and not evaluator.get("output_dir", None):
        values["dataloader.evaluator.output_dir"] = os.path.join(
            cfg.train.output_dir, INFERENCE_DIR
        )
    return updated_copy(cfg, values)


def main(args: argparse.Namespace) -> dict[str, Any] | None:
    """Entry point of ``projects/train_net.py`` (runs in every process)."""
    from mrdetr.config import LazyConfig

    cfg = LazyConfig.load(args.config_file)
    cfg = LazyConfig.apply_overrides(cfg, args.opts or [])
    cfg = prepare_config(cfg)
    default_setup(cfg, args)
    if args.eval_only:
        model = build_model(cfg)
        _load_for_eval(cfg, model)
        results = do_test(cfg, model, eval_only=True)
        if comm.is_main_process() and cfg.train.get("output_dir", ""):
            write_eval_only_metrics(
                os.path.join(cfg.train.output_dir, METRICS_FILE), results, cfg.train.init_checkpoint
            )
        return results
    do_train(cfg, args)
    return None
