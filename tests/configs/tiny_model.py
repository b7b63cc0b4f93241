"""Tiny Mr. DETR (d=32, 2+2 layers, 30 queries, narrow R50) as a config file, for CLI tests on CPU.

The values are those of ``tests/tiny_model.py::TINY_OVERRIDES`` (a test checks that they agree).
"""

from ...configs.common.models.mr_detr_r50 import model
from ...configs.common.train import train

model.embed_dim = 32
model.num_classes = 5
model.num_queries = 30
model.select_box_nums_for_evaluation = 20
model.backbone.stem_out_channels = 8
model.backbone.res2_out_channels = 16
model.neck.in_channels = [32, 64, 128]
model.neck.num_groups = 8
model.position_embedding.num_pos_feats = 16
model.transformer.query_pos_feats = 16
model.transformer.encoder.num_layers = 2
model.transformer.encoder.num_heads = 2
model.transformer.encoder.ffn_dim = 64
model.transformer.decoder.num_layers = 2
model.transformer.decoder.num_heads = 2
model.transformer.decoder.ffn_dim = 64
model.transformer.decoder.num_instruction_tokens = 3

train.device = "cpu"
