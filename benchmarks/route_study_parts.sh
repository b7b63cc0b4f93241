# Sourced by route_study.sh and route_study_gpu.sh: the overrides of the study parts both can run.
# e: the official decoder width and depth (d = 256, 6 + 6 layers, 8 heads, FFN 2048); the quick
# start's small backbone stays.
E_OPTS=(model.embed_dim=256 model.position_embedding.num_pos_feats=128
  model.transformer.query_pos_feats=128 model.neck.num_groups=32
  model.transformer.encoder.num_layers=6 model.transformer.decoder.num_layers=6
  model.transformer.encoder.num_heads=8 model.transformer.decoder.num_heads=8
  model.transformer.encoder.ffn_dim=2048 model.transformer.decoder.ffn_dim=2048)
