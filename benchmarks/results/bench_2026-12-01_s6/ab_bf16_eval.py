import sys, torch, time, copy
root = sys.argv[1]
sys.path.insert(0, root); sys.path.insert(0, root + "/benchmarks"); sys.path.insert(0, root + "/tests")
torch.set_num_threads(int(sys.argv[2]))
import mrdetr; assert mrdetr.__file__.startswith(root), mrdetr.__file__
if len(sys.argv) > 3:
    import mrdetr.layers.mlp as mlp; mlp._NO_GRAD_CHUNK_ELEMENTS = int(sys.argv[3])
from mrdetr.config import LazyConfig, instantiate
from mrdetr.engine.precision import inference_autocast, prepare_for_inference
cfg = LazyConfig.load(root + "/configs/common/models/mr_detr_r50.py")
torch.manual_seed(0)
model = prepare_for_inference(instantiate(cfg.model), torch.bfloat16)
from bench_model import _inputs
image, boxes, classes = _inputs(512)
batch = [{"image": image, "height": 512, "width": 512}]
with inference_autocast("cpu", torch.bfloat16):
    for _ in range(2): model(batch)
    ts = []
    for _ in range(5):
        t = time.perf_counter(); model(batch); ts.append(time.perf_counter() - t)
print(root, sys.argv[3:] , "bf16 median", round(sorted(ts)[2], 3))
