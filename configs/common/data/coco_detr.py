"""COCO 2017 detection data with the official DETR augmentation.

Train: flip, then either a multi-scale resize (short side 480..800 step 32, max 1333) or a
resize (400/500/600) -> random crop (384..600) -> multi-scale resize. Test: short side 800, max 1333.
The evaluator writes into ``<train.output_dir>/inference`` unless ``dataloader.evaluator.output_dir``
is set explicitly.
"""

from omegaconf import OmegaConf

from mrdetr.config import LazyCall as L
from mrdetr.data import (
    DetrDatasetMapper,
    build_detection_test_loader,
    build_detection_train_loader,
)
from mrdetr.data.transforms import build_detr_test_transform, build_detr_train_transform
from mrdetr.evaluation import COCOEvaluator

dataloader = OmegaConf.create()

dataloader.train = L(build_detection_train_loader)(
    dataset="coco_2017_train",
    mapper=L(DetrDatasetMapper)(
        is_train=True,
        augmentation=L(build_detr_train_transform)(
            min_sizes=list(range(480, 801, 32)),
            max_size=1333,
            crop_pre_sizes=[400, 500, 600],
            crop_min_size=384,
            crop_max_size=600,
            flip_prob=0.5,
            crop_prob=0.5,  # probability of the resize -> crop -> resize branch
        ),
        mask_on=False,
        img_format="RGB",
        on_bad_image="skip",  # "raise" stops at the first unreadable image
    ),
    total_batch_size=16,
    num_workers=4,
    aspect_ratio_grouping=True,
    seed=None,  # None: drawn once per run and stored in checkpoints (exact --resume)
    max_consecutive_unreadable=100,  # stop, naming the files, after this many bad images in a row
)

dataloader.test = L(build_detection_test_loader)(
    dataset="coco_2017_val",
    mapper=L(DetrDatasetMapper)(
        is_train=False,
        augmentation=L(build_detr_test_transform)(min_size=800, max_size=1333),
        mask_on=False,
        img_format="RGB",
        on_bad_image="skip",
    ),
    batch_size=1,
    num_workers=4,
)

dataloader.evaluator = L(COCOEvaluator)(
    dataset_name="${..test.dataset}",
    output_dir=None,  # None: <train.output_dir>/inference
    backend="pycocotools",  # or "faster_coco_eval" (pip install mrdetr[faster])
)
