"""Bad input files for the reliability tests (corrupt, truncated, decompression bomb) and helpers
to run the demo with the tiny model."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import torch
from tiny_model import REPO

from mrdetr.config import LazyConfig, instantiate
from mrdetr.tools._cli import run_cli
from mrdetr.tools.demo import main as demo_main

TINY_CONFIG = REPO / "tests" / "configs" / "tiny_model.py"
H, W = 48, 64
BOMB_SIDE = 20000  # 400 M pixels: over twice PIL's MAX_IMAGE_PIXELS


def tiny_checkpoint(path: Path) -> Path:
    """Save the tiny model's weights (seed 0) to ``path``."""
    torch.manual_seed(0)
    model = instantiate(LazyConfig.load(str(TINY_CONFIG)).model)
    torch.save({"model": model.state_dict()}, path)
    return path


def run_demo(args: list[str], ckpt: Path, capsys) -> tuple[int, str]:
    """The demo CLI (``run_cli(main)``, as ``demo/demo.py``) in this process: (status, stderr)."""
    capsys.readouterr()
    argv = ["--config-file", str(TINY_CONFIG), "--min_size_test", "48", "--max_size_test", "96",
            *args, "--opts", f"train.init_checkpoint={ckpt}", "train.device=cpu"]  # fmt: skip
    rc = run_cli(demo_main, argv)
    return rc, capsys.readouterr().err


def write_image(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    cv2.imwrite(str(path), rng.integers(0, 256, (H, W, 3), dtype=np.uint8))


def write_truncated_jpeg(path: Path, seed: int) -> None:
    write_image(path, seed)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # the header is intact, half the scan is missing


def write_bomb_png(path: Path, side: int = BOMB_SIDE) -> None:
    """A valid PNG header declaring ``side x side`` pixels, with a tiny (incomplete) body."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1-bit greyscale
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
