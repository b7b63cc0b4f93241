"""Base training config (plain dicts, like detectron2's configs/common/train.py)."""

train = dict(
    output_dir="./output/base",
    max_iter=100,
    eval_period=10,
    amp=dict(enabled=False),
    device="cpu",
)
