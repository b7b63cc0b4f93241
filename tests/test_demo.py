"""demo/demo.py as a subprocess on CPU with the tiny model: image, folder+glob, video, bad inputs."""

from __future__ import annotations

import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from tiny_model import REPO, TINY_CONFIG, save_tiny_checkpoint

from mrdetr.tools._cli import run_cli
from mrdetr.tools.demo import main as demo_main

DEMO = REPO / "demo" / "demo.py"
H, W = 48, 64
NUM_FRAMES = 4


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return save_tiny_checkpoint(tmp_path_factory.mktemp("demo_ckpt") / "model.pth", seed=0)


def _write_image(path, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    cv2.imwrite(str(path), img)
    return cv2.imread(str(path))


def _argv(args: list[str], ckpt) -> list[str]:
    return ["--config-file", str(TINY_CONFIG), "--min_size_test", "48", "--max_size_test", "96",
            *args, "--opts", f"train.init_checkpoint={ckpt}", "train.device=cpu", "model.device=cpu"]  # fmt: skip


def _demo(args: list[str], ckpt) -> subprocess.CompletedProcess:
    """The real script in a subprocess (used for the main paths)."""
    cmd = [sys.executable, str(DEMO), *_argv(args, ckpt)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=dict(os.environ))


class _Result:
    def __init__(self, returncode: int, stderr: str):
        self.returncode, self.stderr = returncode, stderr


@pytest.fixture
def demo_inproc(capsys):
    """The CLI entry (``run_cli(main)``, same code as the script) in this process: faster."""

    def run(args: list[str], ckpt) -> _Result:
        capsys.readouterr()
        rc = run_cli(demo_main, _argv(args, ckpt))
        return _Result(rc, capsys.readouterr().err)

    return run


def _error_line(proc) -> str:
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return errors[0]


def test_demo_on_a_folder_a_glob_and_a_single_file(ckpt, tmp_path, demo_inproc):
    src = tmp_path / "imgs"
    src.mkdir()
    originals = {f"a{i}.png": _write_image(src / f"a{i}.png", i) for i in range(2)}
    (tmp_path / "extra").mkdir()
    originals["b.png"] = _write_image(tmp_path / "extra" / "b.png", 5)
    out = tmp_path / "out"
    proc = _demo(["--input", str(src), str(tmp_path / "extra" / "*.png"), "--output", str(out),
                  "--confidence-threshold", "0.0"], ckpt)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    # output captured (not a terminal): log lines only, no progress-bar redraws
    assert "\r" not in proc.stdout + proc.stderr and "%|" not in proc.stderr
    assert sorted(os.listdir(out)) == sorted(originals)
    for name, original in originals.items():
        drawn = cv2.imread(str(out / name))
        assert drawn.shape == original.shape
        assert np.abs(drawn.astype(int) - original).mean() > 1.0  # detections were drawn
    # one input, --output a file; then the same output again is refused and left untouched
    single = tmp_path / "single.jpg"
    proc = demo_inproc(["--input", str(src / "a0.png"), "--output", str(single)], ckpt)
    assert proc.returncode == 0 and cv2.imread(str(single)).shape == (H, W, 3)
    before = single.read_bytes()
    line = _error_line(demo_inproc(["--input", str(src / "a0.png"), "--output", str(single)], ckpt))
    assert "already exists" in line and single.read_bytes() == before


def test_demo_on_a_video(ckpt, tmp_path):
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 7.0, (W, H))
    for i in range(NUM_FRAMES):
        writer.write(np.full((H, W, 3), 40 * i, np.uint8))
    writer.release()
    out = tmp_path / "out.mp4"
    proc = _demo(
        ["--video-input", str(video), "--output", str(out), "--confidence-threshold", "0"], ckpt
    )
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stdout + proc.stderr and "%|" not in proc.stderr  # no bar
    cap = cv2.VideoCapture(str(out))
    assert (
        int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)) == W and int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) == H
    )
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(7.0)
    frames = []
    while (ok_frame := cap.read())[0]:
        frames.append(ok_frame[1])
    cap.release()
    assert len(frames) == NUM_FRAMES
    assert np.abs(frames[0].astype(int) - 0).mean() > 1.0  # boxes drawn on a black frame
    assert [p for p in os.listdir(tmp_path) if p.startswith(".tmp")] == []


def test_demo_errors_are_one_line_and_leave_no_output(ckpt, tmp_path, demo_inproc):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 definitely not a jpeg")
    out = tmp_path / "out"
    assert "bad.jpg" in _error_line(
        demo_inproc(["--input", str(bad), "--output", str(out / "x.jpg")], ckpt)
    )
    assert not (out / "x.jpg").exists()
    bad_video = tmp_path / "bad.mp4"
    bad_video.write_bytes(b"nope")
    line = _error_line(
        demo_inproc(["--video-input", str(bad_video), "--output", str(tmp_path / "v.mp4")], ckpt)
    )
    assert "bad.mp4" in line and not (tmp_path / "v.mp4").exists()
    good = tmp_path / "good.png"
    _write_image(good, 0)
    line = _error_line(demo_inproc(["--input", str(good), "--output", str(tmp_path / "o.png")],
                             tmp_path / "missing.pth"))  # fmt: skip
    assert "missing.pth" in line and not (tmp_path / "o.png").exists()
