"""Every block of ``docs/deployment.md`` runs as written, on the tiny model: ``CFG`` is a YAML dump of
the tiny config (test-time resize 64..128), ``model_final.pth`` its weights, ``photo.jpg`` a random
image, sizes 800x1216 become 64x96, and the benchmark gets ``--quick``. Commands run in-process
through the ``main`` of the console script they name (``mrdetr.tools.entry_points.COMMANDS``)."""

from __future__ import annotations

import contextlib
import importlib
import io
import re
import shlex

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image
from tiny_model import REPO, TINY_CONFIG, save_tiny_checkpoint

from mrdetr.config import LazyConfig
from mrdetr.tools._cli import run_cli
from mrdetr.tools.entry_points import COMMANDS

pytest.importorskip("onnxruntime", reason="pip install 'mrdetr[export]' (onnxruntime)")
pytest.importorskip("onnx", reason="pip install 'mrdetr[export]' (onnx)")
pytest.importorskip("openvino", reason="pip install 'mrdetr[openvino]'")

DOC = REPO / "docs" / "deployment.md"
BLOCK = re.compile(r"<!-- test: (run|python) -->\n```(?:bash|python)\n(.*?)```", re.S)
SIZES = {"800": "64", "1216": "96"}


def _substitute(text: str, cfg: str, weights: str) -> str:
    text = text.replace("CFG", cfg).replace("model_final.pth", weights)
    return re.sub(r"\b(800|1216)\b", lambda m: SIZES[m.group(1)], text)


def _run(command: str, capsys) -> str:
    argv = shlex.split(command.replace("\\\n", " "))
    if argv[0] == "mrdetr-benchmark":
        argv.append("--quick")
    main = importlib.import_module(f"mrdetr.tools.{COMMANDS[argv[0]]}").main
    assert run_cli(main, argv[1:]) == 0, capsys.readouterr().err
    return capsys.readouterr().out


@pytest.mark.openvino
def test_every_block_of_the_deployment_doc_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MRDETR_CACHE", str(tmp_path / "cache"))
    cfg = LazyConfig.load(str(TINY_CONFIG))
    test = {"mapper": {"augmentation": {"min_size": 64, "max_size": 128}}}
    cfg.dataloader = OmegaConf.create({"test": test})
    LazyConfig.save(cfg, tmp_path / "tiny.yaml")
    save_tiny_checkpoint(tmp_path / "model.pth", seed=3)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)).save("photo.jpg")
    blocks = BLOCK.findall(DOC.read_text())
    assert [kind for kind, _ in blocks] == ["run", "python", "python", "run"]
    outputs = []
    namespace: dict = {}
    for kind, text in blocks:
        text = _substitute(text, str(tmp_path / "tiny.yaml"), str(tmp_path / "model.pth"))
        if kind == "run":
            outputs.append(_run(text, capsys))
        else:
            with contextlib.redirect_stdout(io.StringIO()) as out:
                exec(compile(text, str(DOC), "exec"), namespace)
            outputs.append(out.getvalue())
    export, standalone, predictors, bench = outputs
    assert (tmp_path / "mrdetr.onnx").exists() and "dynamic input" in export
    assert "[2, 3, 56, 120]" in export  # checked at a second size with batch 2
    assert standalone.strip() == "(2, 20) (2, 20) (2, 20, 4)"
    assert [line.split()[0] for line in predictors.splitlines()] == [
        "pytorch", "onnxruntime", "openvino", "onnxruntime",
    ]  # fmt: skip
    ref = namespace["torch_predictor"]("photo.jpg", threshold=0.0)
    for name in ("ort_predictor", "ov_predictor", "cached"):
        dets = namespace[name]("photo.jpg", threshold=0.0)
        assert dets.classes.tolist() == ref.classes.tolist()
        np.testing.assert_allclose(dets.scores, ref.scores, atol=1e-3, rtol=0)
        np.testing.assert_allclose(dets.boxes, ref.boxes, atol=1e-3, rtol=0)
    rows = {line.split()[0]: line for line in bench.splitlines()[2:]}
    assert list(rows) == ["pytorch", "onnxruntime", "openvino-f32", "openvino-bf16"]
    assert "1.00x" in rows["pytorch"]
