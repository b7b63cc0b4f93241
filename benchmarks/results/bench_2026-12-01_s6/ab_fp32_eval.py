import sys, torch, time
root = sys.argv[1]
sys.path.insert(0, root); sys.path.insert(0, root + "/benchmarks"); sys.path.insert(0, root + "/tests")
torch.set_num_threads(int(sys.argv[2]))
import mrdetr; assert mrdetr.__file__.startswith(root), mrdetr.__file__
from mrdetr.config import LazyConfig, instantiate
cfg = LazyConfig.load(root + "/configs/common/models/mr_detr_r50.py")
torch.manual_seed(0)
model = instantiate(cfg.model).eval()
from bench_model import _inputs
image, boxes, classes = _inputs(512)
batch = [{"image": image, "height": 512, "width": 512}]
with torch.no_grad():
    for _ in range(2): model(batch)
    ts = []
    for _ in range(5):
        t = time.perf_counter(); model(batch); ts.append(time.perf_counter() - t)
print(root, "median", sorted(ts)[2])
