"""Access to ``../shared/reference`` (official layouts, weights, inputs and outputs).

The folder is found at ``$MRDETR_REFERENCE_DIR`` or ``<repo>/../shared/reference``; tests that need it
skip with a clear reason when it is absent.
"""

from __future__ import annotations

import json
import os
from functools import cache, lru_cache
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def reference_dir() -> Path:
    return Path(os.environ.get("MRDETR_REFERENCE_DIR", REPO.parent / "shared" / "reference"))


def require_reference(*names: str) -> Path:
    """Return the reference folder or skip the test, naming what is missing."""
    root = reference_dir()
    for name in names:
        if not (root / name).exists():
            pytest.skip(f"reference file {root / name} is absent (set MRDETR_REFERENCE_DIR)")
    return root


@cache
def layout(short_name: str) -> dict:
    root = require_reference(f"{short_name}.layout.json")
    return json.loads((root / f"{short_name}.layout.json").read_text())


def fake_official_state_dict(info: dict, period: int | None = None) -> dict[str, torch.Tensor]:
    """A state dict in the official layout of ``info`` (a :func:`layout`) whose values name their key.

    Key number ``i`` is filled with ``i`` (``i % period`` when given); aliased keys share their
    target's tensor, as in the official checkpoints.
    """
    state: dict[str, torch.Tensor] = {}
    for i, (key, shape, dtype) in enumerate(info["state_dict"]):
        if key in info["aliased_keys"]:
            state[key] = state[info["aliased_keys"][key]]
        else:
            value = float(i if period is None else i % period)
            state[key] = torch.full(shape, value, dtype=getattr(torch, dtype))
    return state


def _load(path: Path):
    # The outputs' ``meta`` records the torch version as a ``TorchVersion`` (a str subclass).
    with torch.serialization.safe_globals([torch.torch_version.TorchVersion]):
        return torch.load(path, map_location="cpu", weights_only=True)


@lru_cache(maxsize=4)
def official_weights(short_name: str) -> dict[str, torch.Tensor]:
    """Assemble the complete float32 official-layout state dict (README: base shards, own file on top,
    floats to float32, aliases filled with their targets)."""
    root = require_reference(f"{short_name}.weights.index.json")
    index = json.loads((root / f"{short_name}.weights.index.json").read_text())
    state: dict[str, torch.Tensor] = {}
    if index.get("base"):
        state.update(official_weights(index["base"]))
    for f in index["files"]:
        state.update(_load(root / f["file"]))
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    for alias, target in index["aliases"].items():
        state[alias] = state[target]
    return {k: state[k] for k in index["state_dict_keys_in_order"]}


@lru_cache(maxsize=1)
def ref_inputs() -> dict:
    return _load(require_reference("ref_inputs.pt") / "ref_inputs.pt")


@lru_cache(maxsize=2)
def ref_outputs(short_name: str) -> dict:
    return _load(require_reference(f"{short_name}.outputs.pt") / f"{short_name}.outputs.pt")


def eval_batched_inputs(indices=(0, 1)) -> list[dict]:
    inputs = ref_inputs()
    out = []
    for i in indices:
        h, w = inputs["eval_height_width"][i]
        out.append({"image": inputs["eval_images"][i], "height": int(h), "width": int(w)})
    return out
