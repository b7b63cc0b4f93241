"""Keep the weights of a checkpoint whose names start with given prefixes (the route study's warm start).

Part d of the route study (``docs/route_study.md``) starts both settings from the backbone, neck and
encoder of a finished primary-only run, the stand-in for the ImageNet start the paper has::

    python benchmarks/warm_start_weights.py \\
        output/route_study/a_700it/primary_only_seed1/model_final.pth \\
        output/route_study/warm_start_a_primary_seed1.pth

writes ``{"model": {name: tensor}}`` with only those tensors; ``train.init_checkpoint=<that file>``
loads them and leaves every other weight (decoder, heads, query embeddings, proposal head) at its
fresh initialisation.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from mrdetr.checkpoint.io import read_state_dict
from mrdetr.utils.file_io import atomic_write

# backbone, neck, the level embeddings added to the encoder's input, and the encoder itself
DEFAULT_PREFIXES = ("backbone.", "neck.", "transformer.level_embeds", "transformer.encoder.")


def subset(state_dict: dict[str, torch.Tensor], prefixes: tuple[str, ...]) -> dict:
    """The entries of ``state_dict`` whose key starts with one of ``prefixes``.

    Raises:
        ValueError: a prefix matches no key (a typo would otherwise give a silent cold start).
    """
    unmatched = [p for p in prefixes if not any(k.startswith(p) for k in state_dict)]
    if unmatched:
        raise ValueError(
            f"no weight name starts with {unmatched}; names look like {list(state_dict)[:3]}"
        )
    return {k: v for k, v in state_dict.items() if k.startswith(prefixes)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("source", help="checkpoint to take the weights from")
    parser.add_argument("output", help="file to write ({'model': kept weights})")
    parser.add_argument("--prefixes", nargs="+", default=list(DEFAULT_PREFIXES))
    args = parser.parse_args(argv)
    try:
        kept = subset(read_state_dict(args.source), tuple(args.prefixes))
    except (OSError, RuntimeError, ValueError) as exc:
        print(f"error: {args.source}: {exc}", file=sys.stderr)
        return 2
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    atomic_write(args.output, lambda f: torch.save({"model": kept}, f))
    print(f"{args.output}: {len(kept)} tensors ({', '.join(args.prefixes)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
