"""A batch of differently sized images padded to one tensor, with its padding mask."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


class ImageList:
    """Images of different sizes as one padded tensor.

    Attributes:
        tensor: [B, C, H, W] padded batch.
        image_sizes: (h, w) of each image before padding.
    """

    def __init__(self, tensor: Tensor, image_sizes: list[tuple[int, int]]):
        self.tensor = tensor
        self.image_sizes = image_sizes

    def __len__(self) -> int:
        return len(self.image_sizes)

    def __getitem__(self, idx: int) -> Tensor:
        """The unpadded image ``idx`` ([C, h, w])."""
        h, w = self.image_sizes[idx]
        return self.tensor[idx, ..., :h, :w]

    @property
    def device(self) -> torch.device:
        return self.tensor.device

    def to(self, *args, **kwargs) -> ImageList:
        return ImageList(self.tensor.to(*args, **kwargs), self.image_sizes)

    def padding_mask(self) -> Tensor:
        """[B, H, W] bool, True on padded pixels."""
        b, _, h, w = self.tensor.shape
        mask = torch.ones((b, h, w), dtype=torch.bool, device=self.tensor.device)
        for i, (ih, iw) in enumerate(self.image_sizes):
            mask[i, :ih, :iw] = False
        return mask

    @staticmethod
    def padded_size(
        image_sizes: Sequence[tuple[int, int]], size_divisibility: int = 0
    ) -> tuple[int, int]:
        """(H, W) of the batch :meth:`from_tensors` builds from images of these (h, w): the largest
        height and width, rounded up to a multiple of ``size_divisibility`` when it is > 1."""
        max_h = max(h for h, _ in image_sizes)
        max_w = max(w for _, w in image_sizes)
        if size_divisibility > 1:
            max_h = (max_h + size_divisibility - 1) // size_divisibility * size_divisibility
            max_w = (max_w + size_divisibility - 1) // size_divisibility * size_divisibility
        return max_h, max_w

    @staticmethod
    def from_tensors(
        tensors: Sequence[Tensor], size_divisibility: int = 0, pad_value: float = 0.0
    ) -> ImageList:
        """Pad a list of [C, h, w] tensors to a common size (bottom/right zero padding).

        Args:
            tensors: images, all with the same number of channels.
            size_divisibility: if > 0, pad H and W up to a multiple of it.
            pad_value: value of padded pixels.
        """
        if len(tensors) == 0:
            raise ValueError("ImageList.from_tensors needs at least one image")
        for t in tensors:
            if t.dim() != 3 or t.shape[0] != tensors[0].shape[0]:
                raise ValueError(
                    f"ImageList.from_tensors expects [C, H, W] images with equal C, got {tuple(t.shape)}"
                )
        image_sizes = [(int(t.shape[-2]), int(t.shape[-1])) for t in tensors]
        max_h, max_w = ImageList.padded_size(image_sizes, size_divisibility)
        if len(tensors) == 1 and image_sizes[0] == (max_h, max_w):
            return ImageList(tensors[0].unsqueeze(0), image_sizes)
        batched = torch.stack(
            [
                F.pad(t, (0, max_w - t.shape[-1], 0, max_h - t.shape[-2]), value=pad_value)
                for t in tensors
            ]
        )
        return ImageList(batched.contiguous(), image_sizes)
