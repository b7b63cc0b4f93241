"""Toy model / loader / evaluator shared by the ``test_engine_*`` files, plus their own checks.

The toy model follows the detector contract: in training ``model(batch)`` returns a dict of
already-weighted losses; in eval it returns one dict per image.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mrdetr.evaluation import DatasetEvaluator

IN_DIM = 4
HIDDEN = 8
L1_WEIGHT = 0.5
SEED_STRIDE = 100_003


class ToyDetector(nn.Module):
    """Tiny regressor with the naming of a detector (``backbone``, ``sampling_offsets``)."""

    def __init__(self, *, in_dim: int = IN_DIM, hidden: int = HIDDEN, dropout: float = 0.0) -> None:
        super().__init__()
        self.backbone = nn.Linear(in_dim, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.sampling_offsets = nn.Linear(hidden, hidden)
        self.head = nn.Linear(hidden, 1)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))
        self.seen_autocast: list[tuple[bool, torch.dtype]] = []

    def forward(self, batch: list[dict]) -> dict[str, torch.Tensor] | list[dict]:
        x = torch.stack([d["x"] for d in batch]).to(self.head.weight.device)
        hidden = torch.relu(self.norm(self.backbone(x)))
        hidden = self.dropout(self.sampling_offsets(hidden))
        pred = self.head(hidden).squeeze(-1)
        if not self.training:
            return [{"pred": p} for p in pred]
        self.calls += 1
        self.seen_autocast.append((torch.is_autocast_enabled("cpu"), pred.dtype))
        y = torch.stack([d["y"] for d in batch]).to(pred.device)
        pred = pred.float()
        return {"loss_mse": F.mse_loss(pred, y), "loss_l1": L1_WEIGHT * F.l1_loss(pred, y)}


def make_batch(index: int, *, batch_size: int, seed: int, in_dim: int = IN_DIM) -> list[dict]:
    """Batch ``index`` of the stream: a pure function of ``(seed, index)``."""
    gen = torch.Generator().manual_seed(seed * SEED_STRIDE + index)
    x = torch.randn(batch_size, in_dim, generator=gen)
    y = x.sum(dim=1) + 0.1 * torch.randn(batch_size, generator=gen)
    return [{"x": x[i], "y": y[i]} for i in range(batch_size)]


class ToyLoader:
    """Infinite stream of batches; ``start_iter`` fast-forwards exactly (like the real loader).

    Args:
        batch_size: images per batch.
        seed: stream seed.
        start_iter: index of the first batch yielded.
        nan_at: batch index whose targets are NaN (to provoke a non-finite loss).
    """

    def __init__(
        self, *, batch_size: int = 4, seed: int = 0, start_iter: int = 0, nan_at: int | None = None
    ) -> None:
        self.batch_size = batch_size
        self.seed = seed
        self.start_iter = start_iter
        self.nan_at = nan_at

    def __iter__(self):
        index = self.start_iter
        while True:
            batch = make_batch(index, batch_size=self.batch_size, seed=self.seed)
            if index == self.nan_at:
                for item in batch:
                    item["y"] = torch.tensor(float("nan"))
            yield batch
            index += 1


def toy_test_set(*, num_batches: int = 2, batch_size: int = 2, seed: int = 7) -> list[list[dict]]:
    return [make_batch(i, batch_size=batch_size, seed=seed) for i in range(num_batches)]


class ToyEvaluator(DatasetEvaluator):
    """Mean squared error of the predictions; records its ``output_dir``."""

    def __init__(self, *, output_dir: str | None = None) -> None:
        self.output_dir = output_dir
        self.reset()

    def reset(self) -> None:
        self._errors: list[float] = []

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        for item, out in zip(inputs, outputs):
            self._errors.append(float((out["pred"] - item["y"]) ** 2))

    def evaluate(self) -> dict:
        return {"toy": {"mse": sum(self._errors) / max(len(self._errors), 1)}}


_TORCHRUN_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def toy_subprocess_env(**extra: str) -> dict[str, str]:
    """Environment of a ``train_net.py`` subprocess on a toy config: the tests folder importable
    (the configs import this module), no torchrun variables inherited, plus ``extra``."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(Path(__file__).resolve().parent), os.environ.get("PYTHONPATH", "")]
        ),
        **extra,
    }
    for key in _TORCHRUN_VARS:
        env.pop(key, None)
    return env


# ---------------------------------------------------------------------- checks of the toys
def test_toy_loader_fast_forward_is_exact() -> None:
    full = iter(ToyLoader(batch_size=2, seed=3))
    batches = [next(full) for _ in range(4)]
    resumed = next(iter(ToyLoader(batch_size=2, seed=3, start_iter=3)))
    assert torch.equal(resumed[0]["x"], batches[3][0]["x"])
    assert not torch.equal(batches[2][0]["x"], batches[3][0]["x"])


def test_toy_model_contract() -> None:
    model = ToyDetector()
    batch = make_batch(0, batch_size=3, seed=0)
    losses = model(batch)
    assert set(losses) == {"loss_mse", "loss_l1"}
    assert all(v.ndim == 0 and math.isfinite(v.item()) for v in losses.values())
    model.eval()
    outputs = model(batch)
    assert len(outputs) == 3 and outputs[0]["pred"].ndim == 0
