"""Mr. DETR-Deformable with the Swin-L (384, window 12, ImageNet-22k) backbone, 4 scales.

The official Swin-L configs (DINO / Align) swap only the backbone and the neck inputs of the R50 model;
variants import ``model`` from here, or copy ``model.backbone`` / ``model.neck`` onto their own model.
ImageNet weights: ``train.init_checkpoint`` = Microsoft's ``swin_large_patch4_window12_384_22k.pth``
(loaded with :func:`mrdetr.checkpoint.swin.load_swin_imagenet`).
"""

from mrdetr.config import LazyCall as L
from mrdetr.modeling.backbone.swin import SwinTransformer

from .mr_detr_r50 import model

model.backbone = L(SwinTransformer)(
    pretrain_img_size=384,
    patch_size=4,
    embed_dim=192,
    depths=(2, 2, 18, 2),
    num_heads=(6, 12, 24, 48),
    window_size=12,
    mlp_ratio=4.0,
    qkv_bias=True,
    drop_path_rate=0.2,
    patch_norm=True,
    out_indices=(1, 2, 3),  # 5-scale: (0, 1, 2, 3) with neck.num_outs=5
    use_checkpoint=False,
)
model.neck.in_channels = [384, 768, 1536]
model.neck.in_features = ["p1", "p2", "p3"]
