"""``Detections``: what the Predictor returns for one image."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import Tensor

__all__ = ["Detections"]


@dataclass
class Detections:
    """Detections of one image, in the coordinates of the original (un-resized) image.

    Attributes:
        boxes: [N, 4] float xyxy boxes in pixels.
        scores: [N] confidences, sorted high to low.
        classes: [N] int64 contiguous class ids.
        image_size: (height, width) of the original image.
        class_names: N names when the metadata has ``thing_classes``, else None.
        masks: [N, H, W] bool instance masks when the model predicts them, else None.
    """

    boxes: Tensor
    scores: Tensor
    classes: Tensor
    image_size: tuple[int, int]
    class_names: list[str] | None = None
    masks: Tensor | None = None

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def filter(self, threshold: float) -> Detections:
        """The detections whose score is strictly above ``threshold``."""
        keep = self.scores > threshold
        names = None
        if self.class_names is not None:
            names = [n for n, k in zip(self.class_names, keep.tolist()) if k]
        masks = self.masks[keep] if self.masks is not None else None
        return Detections(
            self.boxes[keep], self.scores[keep], self.classes[keep], self.image_size, names, masks
        )

    def to_supervision(self) -> Any:
        """These detections as a ``supervision.Detections`` (``pip install supervision``).

        ``xyxy``, ``confidence``, ``class_id``, ``mask`` and ``data["class_name"]`` (when names are
        known) are filled, so supervision's annotators and trackers take them directly.

        Raises:
            ImportError: supervision is not installed.
        """
        try:
            import supervision as sv
        except ImportError as exc:
            raise ImportError(
                "Detections.to_supervision() needs the supervision package: pip install supervision"
            ) from exc
        data = {} if self.class_names is None else {"class_name": np.array(self.class_names)}
        return sv.Detections(
            xyxy=self.boxes.detach().cpu().numpy().astype(np.float32),
            confidence=self.scores.detach().cpu().numpy().astype(np.float32),
            class_id=self.classes.detach().cpu().numpy().astype(int),
            mask=None if self.masks is None else self.masks.detach().cpu().numpy(),
            data=data,
        )
