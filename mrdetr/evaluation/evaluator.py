"""Evaluator interface and the inference loop that feeds it."""

from __future__ import annotations

import contextlib
import datetime
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch
from torch import nn

from mrdetr.utils import comm
from mrdetr.utils.progress import progress_bar

__all__ = [
    "DatasetEvaluator",
    "DatasetEvaluators",
    "inference_context",
    "inference_on_dataset",
    "print_csv_format",
]

logger = logging.getLogger(__name__)


class DatasetEvaluator:
    """Base class of evaluators: accumulate (input, output) pairs, then compute metrics.

    The inference loop calls :meth:`reset` once, :meth:`process` for every batch and
    :meth:`evaluate` at the end. In distributed runs every process calls all three; evaluators
    gather their state in :meth:`evaluate` and return results on the main process only.
    """

    def reset(self) -> None:
        """Prepare for a new round of evaluation."""

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        """Accumulate one batch.

        Args:
            inputs: the dicts given to the model (one per image).
            outputs: the model's outputs, one dict per image, in the same order.
        """

    def evaluate(self) -> dict[str, Any] | None:
        """Compute metrics over everything processed.

        Returns:
            ``{task: {metric: value}}``, or ``None``/``{}`` (e.g. on non-main processes).
        """
        return None


class DatasetEvaluators(DatasetEvaluator):
    """Runs several evaluators and merges their results (task names must not collide).

    Args:
        evaluators: the evaluators to run, in order.
    """

    def __init__(self, evaluators: Iterable[DatasetEvaluator]):
        super().__init__()
        self._evaluators = list(evaluators)

    def reset(self) -> None:
        for evaluator in self._evaluators:
            evaluator.reset()

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        for evaluator in self._evaluators:
            evaluator.process(inputs, outputs)

    def evaluate(self) -> dict[str, Any]:
        results: dict[str, Any] = OrderedDict()
        for evaluator in self._evaluators:
            result = evaluator.evaluate()
            if not comm.is_main_process() or not result:
                continue
            for task, value in result.items():
                if task in results:
                    raise KeyError(
                        f"DatasetEvaluators: two evaluators returned results for task '{task}'"
                    )
                results[task] = value
        return results


@contextlib.contextmanager
def inference_context(model: nn.Module) -> Iterator[None]:
    """Put ``model`` in eval mode for the block and restore its previous training mode after."""
    training_mode = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(training_mode)


def _model_device_type(model: nn.Module) -> str:
    for tensor in model.parameters():
        return tensor.device.type
    for tensor in model.buffers():
        return tensor.device.type
    return "cpu"


def _num_batches(data_loader: Iterable) -> int | None:
    try:
        return len(data_loader)  # type: ignore[arg-type]
    except TypeError:
        return None


def inference_on_dataset(
    model: nn.Module,
    data_loader: Iterable[list[dict]],
    evaluator: DatasetEvaluator | Iterable[DatasetEvaluator] | None,
    *,
    amp_dtype: torch.dtype | None = None,
    log_period_s: float = 5.0,
    num_warmup: int = 5,
) -> dict[str, Any]:
    """Run ``model`` over ``data_loader`` and evaluate its outputs.

    The model runs in eval mode under ``torch.no_grad`` (and ``torch.autocast`` on the model's
    device type when ``amp_dtype`` is given); its training mode is restored afterwards. Speed
    (images/s) is measured after the first ``num_warmup`` batches.

    Args:
        model: called as ``model(inputs) -> list[dict]`` with one batch of the loader.
        data_loader: yields lists of input dicts (one dict per image).
        evaluator: an evaluator, a list of them, or ``None`` (only run and time the model).
        amp_dtype: autocast dtype (e.g. ``torch.float16``/``torch.bfloat16``; the outputs are cast
            back to float32 for the evaluator); ``None`` = full precision.
        log_period_s: seconds between progress log lines.
        num_warmup: batches excluded from the speed measurement (capped at ``len(loader) - 1``).

    Returns:
        ``evaluator.evaluate()`` (``{}`` when it returns ``None``, e.g. on non-main processes).
    """
    from mrdetr.engine.precision import outputs_to_float32

    if evaluator is None:
        evaluator = DatasetEvaluators([])
    elif not isinstance(evaluator, DatasetEvaluator):
        evaluator = DatasetEvaluators(evaluator)
    total = _num_batches(data_loader)
    num_devices = comm.get_world_size()
    logger.info("Start inference on %s batches", total if total is not None else "?")
    num_warmup = max(min(num_warmup, total - 1), 0) if total is not None else num_warmup

    device_type = _model_device_type(model)

    def _sync() -> None:
        if device_type == "cuda":
            torch.cuda.synchronize()

    evaluator.reset()
    num_images = 0
    timed_images = 0
    compute_time = data_time = eval_time = 0.0
    with contextlib.ExitStack() as stack:
        stack.enter_context(inference_context(model))
        stack.enter_context(torch.no_grad())
        progress = stack.enter_context(
            progress_bar(total=total, desc="inference", enabled=comm.is_main_process())
        )
        start_time = last_log = time.perf_counter()
        timed_start = start_time
        batch_start = start_time
        for idx, inputs in enumerate(data_loader):
            if idx == num_warmup:
                timed_start = time.perf_counter()
                timed_images = 0
                compute_time = data_time = eval_time = 0.0
            t0 = time.perf_counter()
            data_time += t0 - batch_start
            autocast = (
                torch.autocast(device_type=device_type, dtype=amp_dtype)
                if amp_dtype is not None
                else contextlib.nullcontext()
            )
            with autocast:
                outputs = model(inputs)
            if amp_dtype is not None:
                outputs = outputs_to_float32(outputs)
            _sync()
            t1 = time.perf_counter()
            compute_time += t1 - t0
            evaluator.process(inputs, outputs)
            batch_start = time.perf_counter()
            eval_time += batch_start - t1
            num_images += len(inputs)
            timed_images += len(inputs)
            progress.update(1)
            if batch_start - last_log >= log_period_s:
                last_log = batch_start
                _log_progress(
                    done=idx + 1,
                    total=total,
                    elapsed=batch_start - start_time,
                    timed_batches=idx + 1 - num_warmup,
                    timed_images=timed_images,
                    times={"data": data_time, "inference": compute_time, "eval": eval_time},
                )
    total_time = time.perf_counter() - start_time
    timed_time = time.perf_counter() - timed_start
    logger.info(
        "Total inference time: %s for %d images (%.2f images/s per device after %d warm-up "
        "batches, on %d device%s)",
        datetime.timedelta(seconds=int(total_time)),
        num_images,
        timed_images / timed_time if timed_time > 0 else math.nan,
        num_warmup,
        num_devices,
        "s" if num_devices > 1 else "",
    )
    logger.info(
        "Total inference pure compute time: %s (%.2f images/s per device)",
        datetime.timedelta(seconds=int(compute_time)),
        timed_images / compute_time if compute_time > 0 else math.nan,
    )
    results = evaluator.evaluate()
    return results if results is not None else {}


def _log_progress(
    *,
    done: int,
    total: int | None,
    elapsed: float,
    timed_batches: int,
    timed_images: int,
    times: dict[str, float],
) -> None:
    """One progress line: per-batch times since warm-up, images/s and ETA."""
    parts = [f"Inference done {done}/{total if total is not None else '?'}."]
    if timed_batches > 0:
        parts += [f"{name}: {t / timed_batches:.4f} s/batch." for name, t in times.items()]
        busy = sum(times.values())
        if busy > 0:
            parts.append(f"{timed_images / busy:.2f} images/s.")
    if total is not None and done > 0:
        eta = datetime.timedelta(seconds=int(elapsed / done * (total - done)))
        parts.append(f"ETA={eta}")
    logger.info(" ".join(parts))


def print_csv_format(results: Mapping[str, Any]) -> None:
    """Log ``{task: {metric: value}}`` as copy-paste friendly CSV lines.

    Per-class metrics (names containing ``-``, e.g. ``AP-person``) are left out.

    Args:
        results: evaluation results, e.g. the return value of :func:`inference_on_dataset`.
    """
    for task, res in results.items():
        if isinstance(res, Mapping):
            important = [(k, v) for k, v in res.items() if "-" not in k]
            logger.info("copypaste: Task: %s", task)
            logger.info("copypaste: %s", ",".join(k for k, _ in important))
            logger.info("copypaste: %s", ",".join(f"{float(v):.4f}" for _, v in important))
        else:
            logger.info("copypaste: %s=%s", task, res)
