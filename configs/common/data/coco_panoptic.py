"""COCO 2017 panoptic data (PNG + JSON): the DETR recipe with masks read from the panoptic PNGs.

Delta over ``coco_detr``: the datasets are ``coco_2017_{train,val}_panoptic`` (133 classes, things and
stuff as targets with boxes and masks), the mapper is :class:`PanopticDatasetMapper`, and the evaluator
computes PQ / SQ / RQ (``COCOPanopticEvaluator``).
"""

from mrdetr.config import LazyCall as L
from mrdetr.data import PanopticDatasetMapper
from mrdetr.evaluation import COCOPanopticEvaluator

from .coco_detr import dataloader

dataloader.train.dataset = "coco_2017_train_panoptic"
dataloader.train.mapper._target_ = PanopticDatasetMapper
dataloader.train.mapper.mask_on = True
dataloader.test.dataset = "coco_2017_val_panoptic"
dataloader.test.mapper._target_ = PanopticDatasetMapper
dataloader.test.mapper.mask_on = True

dataloader.evaluator = L(COCOPanopticEvaluator)(
    dataset_name="${..test.dataset}",
    output_dir=None,  # None: <train.output_dir>/inference
)
