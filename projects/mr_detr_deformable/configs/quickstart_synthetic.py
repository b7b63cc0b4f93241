"""Quick start: a small Mr. DETR trained from scratch on the synthetic dataset.

Runs on 2 CPU cores in about 15 minutes (see README). Same model and code as the COCO configs; only
sizes change: narrow 1-block-per-stage ResNet, d=64, 3 encoder + 3 decoder layers, 50 queries, images
with a ~256 px long side, no ImageNet initialisation. At this budget the route study
(``docs/route_study.md``) measured the two auxiliary one-to-many routes lowering the primary route's
AP, so this config trains the primary route only; the full multi-route method is one override away:
``model.train_routes='["primary","instruct","sep_ffn"]'``.
"""

from ....configs.common.coco_schedule import iteration_step_scheduler
from ....configs.common.data.coco_detr import dataloader
from ....configs.common.models.mr_detr_r50 import model
from ....configs.common.optim import optimizer
from ....configs.common.train import train

MAX_ITER = 700

dataloader.train.dataset = "synthetic_train"
dataloader.train.total_batch_size = 8
dataloader.train.num_workers = 1
dataloader.train.mapper.augmentation.min_sizes = [192, 224, 256]
dataloader.train.mapper.augmentation.max_size = 320
dataloader.train.mapper.augmentation.crop_pre_sizes = [200, 240, 280]
dataloader.train.mapper.augmentation.crop_min_size = 128
dataloader.train.mapper.augmentation.crop_max_size = 256
dataloader.test.dataset = "synthetic_val"
dataloader.test.num_workers = 0
dataloader.test.mapper.augmentation.min_size = 224
dataloader.test.mapper.augmentation.max_size = 320

model.num_classes = 6  # python -m mrdetr.data.synthetic default
# 700 iterations, seeds 1 and 2 (docs/route_study.md): primary only 52.4 AP, all three routes 35.3 AP
model.train_routes = ["primary"]
# a few distinct padded shapes: on CPU every new input shape costs a oneDNN kernel build (~8 s per
# training step at these sizes when every batch has its own shape)
model.size_divisibility = 64
model.padding_mask_mode = "exact"
model.num_queries = 50
model.select_box_nums_for_evaluation = 50
model.embed_dim = 64
model.backbone.num_blocks = [1, 1, 1, 1]
model.backbone.stem_out_channels = 16
model.backbone.res2_out_channels = 32
model.backbone.freeze_at = 0  # trained from scratch: nothing to keep frozen
model.neck.in_channels = [64, 128, 256]
model.neck.num_groups = 8
model.position_embedding.num_pos_feats = 32  # 2 x 32 = embed_dim
model.transformer.query_pos_feats = 32  # 4 x 32 = 2 x embed_dim
model.transformer.encoder.num_layers = 3
model.transformer.encoder.num_heads = 4
model.transformer.encoder.ffn_dim = 256
model.transformer.decoder.num_layers = 3
model.transformer.decoder.num_heads = 4
model.transformer.decoder.ffn_dim = 256
model.transformer.decoder.num_instruction_tokens = 10
# the one-to-many positive cap is 1/4 of this: scaled with the real number of queries
model.criterion.one_to_many_matcher.num_queries = 150

optimizer.lr = 4e-4
optimizer.params.rules = [{"pattern": ["reference_points", "sampling_offsets"], "lr_factor": 0.1}]

lr_multiplier = iteration_step_scheduler(
    max_iter=MAX_ITER, decay_iter=int(MAX_ITER * 0.85), warmup_iters=100
)

train.output_dir = "./output/quickstart_synthetic"
train.max_iter = MAX_ITER
train.eval_period = MAX_ITER  # AP at the start (eval_at_start) and at the end
train.checkpointer.period = 250
train.checkpointer.max_to_keep = 2
train.log_period = 50
train.seed = 42
train.device = "cpu"
train.eval_at_start = True  # print AP before training, to see it learn
