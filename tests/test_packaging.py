"""A wheel carries the configs: a non-editable install loads model-zoo configs without a checkout."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile

from wheel_build import build_wheel

PACKAGED = "mrdetr/model_zoo/_config_root/"


def test_wheel_ships_the_configs_and_the_model_zoo_uses_them(tmp_path):
    wheel = build_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    for config in (
        "configs/common/models/mr_detr_r50.py",
        "projects/mr_detr_deformable/configs/deformable_detr_r50_two_stage_12ep_plusplus_300q.py",
        "projects/mr_detr_pp_align/configs/dino-swin/dino_swin_large_384_4scale_12ep.py",
    ):
        assert PACKAGED + config in names, config
    assert not any(n.startswith(PACKAGED) and n.endswith("train_net.py") for n in names)

    site = tmp_path / "site"  # the wheel unpacked = installed files, away from the checkout
    zipfile.ZipFile(wheel).extractall(site)
    code = (
        "import mrdetr, mrdetr.model_zoo as z; "
        "print(mrdetr.__file__); print(z.config_root()); "
        "cfg = z.get_config('mr_detr_deformable_r50_12ep_300q', trained=False); "
        "print(cfg.model.num_queries)"
    )
    env = {k: v for k, v in os.environ.items() if k != "MRDETR_CONFIG_ROOT"}
    env["PYTHONPATH"] = str(site)
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    module, root, queries = proc.stdout.split()
    assert module.startswith(str(site)) and root.startswith(str(site))
    assert queries == "300"
