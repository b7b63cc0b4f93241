"""Training under faults and hostile input (one test per case of docs/reliability.md).

The CLI cases run ``projects/train_net.py``'s own code in this process (``run_reporting_errors``
around ``launch(main, ...)``, a single process runs inline) with the tiny model on a generated
synthetic dataset; one case runs the script itself.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from test_engine_runner import CONFIG_TEXT
from tiny_model import REPO, tiny_batch, tiny_model

from mrdetr.checkpoint.checkpointer import Checkpointer
from mrdetr.config import ConfigValueError, LazyConfig
from mrdetr.data.synthetic import generate_synthetic_dataset
from mrdetr.engine import default_argument_parser, launch
from mrdetr.engine.runner import main
from mrdetr.engine.train_loop import Trainer
from mrdetr.tools._cli import run_reporting_errors

TRAIN_CONFIG = REPO / "tests" / "configs" / "tiny_synthetic_train.py"
NUM_TRAIN = 6
BOUND_S = 180  # a run that has not finished by then is looping


@pytest.fixture(scope="module")
def datasets_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("datasets")
    generate_synthetic_dataset(
        root / "synthetic", num_train=NUM_TRAIN, num_val=2, seed=1, image_size=96,
        num_classes=5, progress=False,
    )  # fmt: skip
    return root


def _train_net(config: Path | str, *argv: str) -> int:
    """What ``projects/train_net.py`` does, in this process: the exit status."""
    args = default_argument_parser().parse_args(["--config-file", str(config), *argv])
    return run_reporting_errors(
        lambda: launch(main, args.num_gpus, args=(args,)), traceback=args.traceback
    )


def _bounded(func, seconds: float = BOUND_S):
    """``func()`` in a thread; fails the test (instead of hanging) when it does not return."""
    result: dict = {}

    def target() -> None:
        try:
            result["value"] = func()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            result["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"did not finish within {seconds} s (endless loop?)"
    if "error" in result:
        raise result["error"]
    return result["value"]


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith(("error:", "hint:"))]


# ------------------------------------------------------------------------------------ F1
def test_all_images_unreadable_stops_naming_files(datasets_root, tmp_path, monkeypatch, capsys):
    root = tmp_path / "datasets"
    (root / "synthetic").mkdir(parents=True)
    for sub in ("annotations", "val"):
        os.symlink(datasets_root / "synthetic" / sub, root / "synthetic" / sub)
    train = root / "synthetic" / "train"
    train.mkdir()
    for image in sorted((datasets_root / "synthetic" / "train").iterdir()):
        (train / image.name).write_bytes(b"not an image")  # every training image is corrupt
    monkeypatch.setenv("MRDETR_DATASETS", str(root))
    rc = _bounded(lambda: _train_net(TRAIN_CONFIG, f"train.output_dir={tmp_path / 'run'}"))
    err = capsys.readouterr().err
    assert rc == 2, err[-2000:]
    error, hint = _error_lines(err)
    assert "100 images in a row could not be read" in error
    assert str(train) in error and "Traceback" not in err
    assert hint.startswith("hint: check the dataset's image folder")


# ------------------------------------------------------------------------------------ F2
def _nan_batch() -> list[dict]:
    batch = tiny_batch()
    batch[0]["image"] = torch.full_like(batch[0]["image"], float("nan"))
    return batch


def test_nonfinite_outputs_are_caught_before_matching_stop() -> None:
    model = tiny_model()
    model.train()
    trainer = Trainer(model, [_nan_batch()], torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(FloatingPointError) as info:
        trainer.train(0, 1)
    message = str(info.value)
    assert "Model outputs became non-finite at iteration 0" in message
    assert "PRIMARY route, decoder layer 0: logits" in message
    assert "before matching" in message and "Training stopped" in message


def test_nonfinite_outputs_skip_policy_drops_that_update() -> None:
    model = tiny_model()
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loader = [tiny_batch(seed=1), _nan_batch(), tiny_batch(seed=2)]
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    trainer = Trainer(model, loader, optimizer, nan_policy="skip")
    trainer.train(0, 3)
    assert trainer.iter == 3
    skipped = trainer.storage.history("skipped_nonfinite")
    assert [it for _, it in skipped.values()] == [1]
    after = model.state_dict()
    assert all(torch.isfinite(v).all() for v in after.values() if v.is_floating_point())
    assert any(not torch.equal(before[k], after[k]) for k in before)  # iterations 0 and 2 stepped


# ------------------------------------------------------------------------------------ F6
def test_bad_override_type_names_key_and_keeps_config_yaml(tmp_path, capsys) -> None:
    run = tmp_path / "run"
    run.mkdir()
    original = "train:\n  max_iter: 6\n"
    (run / "config.yaml").write_text(original)
    rc = _train_net(TRAIN_CONFIG, "--resume", f"train.output_dir={run}", "train.max_iter=abc")
    err = capsys.readouterr().err
    assert rc == 2
    error = _error_lines(err)[0]
    assert "train.max_iter" in error and "'abc'" in error and "expects int" in error
    assert (run / "config.yaml").read_text() == original


@pytest.mark.parametrize(
    "override, stored",
    [
        ("train.max_iter=1e4", 10000),
        ("train.output_dir=123", "123"),
        ("optimizer.lr=1e-3", 1e-3),
        ("train.checkpointer.max_to_keep=null", None),
        ("train.clip_grad.enabled=false", False),
    ],
)
def test_override_values_that_fit_are_stored(override, stored) -> None:
    cfg = LazyConfig.apply_overrides(LazyConfig.load(str(TRAIN_CONFIG)), [override])
    node = cfg
    for part in override.split("=")[0].split("."):
        node = node[part]
    assert node == stored and type(node) is type(stored)


@pytest.mark.parametrize(
    "override",
    ["train.max_iter=abc", "train.amp.enabled=1", "optimizer.lr=fast", "model.neck.in_channels=5"],
)
def test_override_type_errors(override) -> None:
    cfg = LazyConfig.load(str(TRAIN_CONFIG))
    with pytest.raises(ConfigValueError, match=override.split("=")[0].replace(".", r"\.")):
        LazyConfig.apply_overrides(cfg, [override])


# ------------------------------------------------------------------------------------ F7
def test_init_checkpoint_sharing_no_keys_is_an_error(datasets_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MRDETR_DATASETS", str(datasets_root))
    foreign = tmp_path / "foreign.pth"
    torch.save({"model": {"fc.weight": torch.zeros(2, 2), "fc.bias": torch.zeros(2)}}, foreign)
    common = [f"train.init_checkpoint={foreign}", f"train.output_dir={tmp_path / 'run'}"]
    for mode in (["--eval-only"], []):
        rc = _train_net(TRAIN_CONFIG, *mode, *common)
        error = _error_lines(capsys.readouterr().err)[0]
        assert rc == 2 and "fills 0 of the model's" in error and str(foreign) in error
        assert "train.init_checkpoint_min_match" in error
    # the opt-in: evaluation (no evaluator in this config) of the freshly initialised model
    assert (
        _train_net(TRAIN_CONFIG, "--eval-only", *common, "train.init_checkpoint_min_match=0") == 0
    )


# ------------------------------------------------------------------------------------ M2
def test_resume_applies_an_overridden_lr(tmp_path, capsys) -> None:
    config = tmp_path / "toy_config.py"
    config.write_text(CONFIG_TEXT)

    def lrs(run: Path) -> dict[int, float]:
        lines = (run / "metrics.json").read_text().splitlines()
        return {m["iteration"]: m["lr"] for m in map(json.loads, lines) if "lr" in m}

    full, fresh = tmp_path / "full", tmp_path / "fresh_1e-3"
    assert _train_net(config, f"train.output_dir={full}") == 0
    assert _train_net(config, f"train.output_dir={fresh}", "optimizer.lr=1e-3") == 0
    (full / "model_0000003.pth").unlink()
    (full / "model_final.pth").unlink()
    (full / "last_checkpoint").write_text("model_0000001.pth")
    os.remove(full / "metrics.json")
    assert _train_net(config, "--resume", f"train.output_dir={full}", "optimizer.lr=1e-3") == 0
    resumed = lrs(full)
    assert sorted(resumed) == [2, 3]
    assert all(resumed[i] == lrs(fresh)[i] for i in resumed)  # as if trained with 1e-3 throughout
    assert "applying the configured base LRs" in capsys.readouterr().out


# ------------------------------------------------------------------------------ presentation
def test_own_errors_are_one_line_unless_traceback_asked(tmp_path, capsys, monkeypatch) -> None:
    argv = [f"train.output_dir={tmp_path / 'run'}", "train.max_itr=5"]
    assert _train_net(TRAIN_CONFIG, *argv) == 2
    err = capsys.readouterr().err
    assert _error_lines(err)[0].startswith("error: Override 'train.max_itr=5'")
    assert "Did you mean: train.max_iter" in err and "Traceback" not in err
    assert len(_error_lines(err)) == 2 and _error_lines(err)[1].startswith("hint:")
    with pytest.raises(KeyError, match="max_itr"):
        _train_net(TRAIN_CONFIG, "--traceback", *argv)
    monkeypatch.setenv("MRDETR_DEBUG", "1")
    with pytest.raises(KeyError, match="max_itr"):
        _train_net(TRAIN_CONFIG, *argv)


def test_unexpected_errors_keep_their_traceback() -> None:
    with pytest.raises(ZeroDivisionError):
        run_reporting_errors(lambda: 1 / 0)


def test_disk_full_names_the_path_and_errno(tmp_path, monkeypatch, capsys) -> None:
    checkpointer = Checkpointer(tiny_model(), str(tmp_path), save_to_disk=True)
    good = checkpointer.save("model_0000001", iteration=1)
    real_open = open

    def full_disk_open(path, mode="r", *args, **kwargs):  # the kernel's ENOSPC, from /dev/full
        if os.path.basename(str(path)).startswith(".tmp-"):  # the atomic writer's temporary file
            return real_open("/dev/full", mode.replace("x", "w"), *args, **kwargs)
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr("mrdetr.utils.file_io.open", full_disk_open, raising=False)
    target = str(tmp_path / "model_0000002.pth")
    with pytest.raises(OSError) as info:
        checkpointer.save("model_0000002", iteration=2)
    assert info.value.errno == errno.ENOSPC and info.value.filename == target
    assert run_reporting_errors(lambda: checkpointer.save("model_0000002", iteration=2)) == 2
    error, hint = _error_lines(capsys.readouterr().err)
    assert "[Errno 28]" in error and target in error and "free disk space" in hint
    assert checkpointer.get_checkpoint_file() == good  # last_checkpoint still names a valid file


def test_train_net_script_exit_status_and_one_line(tmp_path) -> None:
    cmd = [sys.executable, str(REPO / "projects" / "train_net.py"), "--config-file",
           str(TRAIN_CONFIG), f"train.output_dir={tmp_path}", "train.max_iter=abc"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert [line.split(":")[0] for line in _error_lines(proc.stderr)] == ["error", "hint"]
