"""Load test of the demo: a folder of 200 small images with a few corrupt ones (``--skip-bad``).

Every readable image is processed and written, the unreadable ones are listed at the end (exit
status 1), and the resident memory of the process stays flat from image to image (read from
``/proc/self/status`` each time the demo reports an image; the values are printed).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import torch
from bad_inputs import run_demo, tiny_checkpoint, write_bomb_png, write_image, write_truncated_jpeg

NUM_IMAGES = 200
WARMUP = 20  # the first images grow allocator pools and kernel caches
MAX_GROWTH_MB = 20.0  # after warm-up: catches a leak of more than ~110 KB per image (e.g. features)


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


class _RSSPerImage(logging.Handler):
    """Records the resident memory each time the demo logs ``<path>: <n> detections``."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.rss: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "detections" in record.getMessage():
            self.rss.append(_rss_mb())


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.pth")


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs /proc (Linux)")
def test_demo_folder_with_corrupt_images_memory_flat(tmp_path, ckpt, capsys) -> None:
    src = tmp_path / "imgs"
    src.mkdir()
    bad = {
        "b_truncated.jpg": write_truncated_jpeg,
        "d_bomb.png": lambda p, _: write_bomb_png(p),
        "f_garbage.jpg": lambda p, _: p.write_bytes(b"\xff\xd8 not really a jpeg"),
        "h_empty.png": lambda p, _: p.write_bytes(b""),
    }
    good = []
    for i in range(NUM_IMAGES - len(bad)):
        name = f"{'aceg'[i % 4]}{i:03d}.jpg"  # bad files sit between good ones in sorted order
        write_image(src / name, i)
        good.append(name)
    for seed, (name, write) in enumerate(bad.items()):
        write(src / name, seed)
    out = tmp_path / "out"
    handler = _RSSPerImage()
    demo_logger = logging.getLogger("mrdetr.tools.demo")
    level, threads = demo_logger.level, torch.get_num_threads()
    demo_logger.addHandler(handler)
    demo_logger.setLevel(logging.INFO)
    torch.set_num_threads(1)  # tiny tensors: extra threads only contend (CI runners are shared)
    try:
        rc, err = run_demo(["--input", str(src), "--output", str(out), "--skip-bad"], ckpt, capsys)
    finally:
        demo_logger.removeHandler(handler)
        demo_logger.setLevel(level)
        torch.set_num_threads(threads)
    assert rc == 1, err[-2000:]
    assert sorted(os.listdir(out)) == sorted(good)
    assert f"{len(bad)} of {NUM_IMAGES} input images could not be read" in err
    for name in bad:
        assert str(src / name) in err
    rss = handler.rss
    assert len(rss) == len(good)
    growth = max(rss[WARMUP:]) - rss[WARMUP]
    print(
        f"\nRSS over {len(rss)} images: first {rss[0]:.1f} MB, after warm-up {rss[WARMUP]:.1f} MB, "
        f"max {max(rss):.1f} MB, last {rss[-1]:.1f} MB, growth after warm-up {growth:.1f} MB"
    )
    assert growth < MAX_GROWTH_MB
