"""ONNX export of the primary route (tiny model) checked against PyTorch with onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_model import REPO

from mrdetr.config import LazyConfig, instantiate
from mrdetr.tools._cli import run_cli
from mrdetr.tools.export_onnx import main as export_main

ort = pytest.importorskip("onnxruntime", reason="pip install onnx onnxruntime (extra 'export')")
pytest.importorskip("onnx", reason="pip install onnx onnxruntime (extra 'export')")

TINY_CONFIG = REPO / "tests" / "configs" / "tiny_model.py"
H, W = 64, 96


def test_export_cli_matches_pytorch_with_onnxruntime(tmp_path, capsys):
    torch.manual_seed(0)
    model = instantiate(LazyConfig.load(str(TINY_CONFIG)).model).eval()
    ckpt = tmp_path / "model.pth"
    torch.save({"model": model.state_dict()}, ckpt)
    out = tmp_path / "model.onnx"
    argv = ["--config-file", str(TINY_CONFIG), "--output", str(out), "--height", str(H),
            "--width", str(W), "--opts", f"train.init_checkpoint={ckpt}"]  # fmt: skip
    assert run_cli(export_main, argv) == 0, capsys.readouterr().err
    # an independent check on a new image: onnxruntime vs forward_raw of the loaded weights
    image = torch.rand(1, 3, H, W, generator=torch.Generator().manual_seed(7)) * 255
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    logits, boxes = session.run(["pred_logits", "pred_boxes"], {"image": image.numpy()})
    raw = model.forward_raw([{"image": image[0]}])
    assert logits.shape == (1, 30, 5) and boxes.shape == (1, 30, 4)
    np.testing.assert_allclose(logits, raw.pred_logits.numpy(), atol=1e-3, rtol=0)
    np.testing.assert_allclose(boxes, raw.pred_boxes.numpy(), atol=1e-3, rtol=0)
    # an existing output is refused and kept
    before = out.read_bytes()
    capsys.readouterr()
    assert run_cli(export_main, argv) == 1
    assert "already exists" in capsys.readouterr().err and out.read_bytes() == before
