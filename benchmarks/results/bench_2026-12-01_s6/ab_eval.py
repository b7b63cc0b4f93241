"""A/B of one source tree's R50 eval speed (the script behind ``ab.txt``).

    python ab_eval.py ROOT THREADS float32|bfloat16 [CHUNK_ELEMENTS]

Imports ``mrdetr`` from the source tree ROOT (e.g. a ``git worktree`` of an older commit), builds
the R50 Mr. DETR-Deformable 300q model with random weights (seed 0), runs the 512x512 timing image
of ``../shared/reference`` (``MRDETR_REFERENCE_DIR``) twice as warm-up and prints the median of 5
eval forwards. bfloat16: weights cast once (``prepare_for_inference``) and autocast. CHUNK_ELEMENTS
overrides the FFN's no-autograd chunk size (a huge value switches the chunking off).
"""

import sys
import time

root, threads, dtype_name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
sys.path[:0] = [root, root + "/benchmarks", root + "/tests"]

import torch  # noqa: E402

import mrdetr  # noqa: E402

assert mrdetr.__file__.startswith(root), mrdetr.__file__
torch.set_num_threads(threads)
if len(sys.argv) > 4:
    import mrdetr.layers.mlp as mlp

    mlp._NO_GRAD_CHUNK_ELEMENTS = int(sys.argv[4])

from bench_model import _inputs  # noqa: E402

from mrdetr.config import LazyConfig, instantiate  # noqa: E402
from mrdetr.engine.precision import inference_autocast, prepare_for_inference  # noqa: E402

dtype = getattr(torch, dtype_name)
cfg = LazyConfig.load(root + "/configs/common/models/mr_detr_r50.py")
torch.manual_seed(0)
model = prepare_for_inference(instantiate(cfg.model), dtype)
image, _, _ = _inputs(512)
batch = [{"image": image, "height": 512, "width": 512}]
with inference_autocast("cpu", dtype):
    for _ in range(2):
        model(batch)
    times = []
    for _ in range(5):
        start = time.perf_counter()
        model(batch)
        times.append(time.perf_counter() - start)
print(root, dtype_name, sys.argv[4:], "median", round(sorted(times)[2], 3))
