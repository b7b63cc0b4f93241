"""Per-image annotations or predictions: a bag of same-length fields."""

from __future__ import annotations

import itertools
from typing import Any

import torch


class Instances:
    """A set of N instances of one image, stored as same-length fields.

    Example::

        Instances((480, 640), gt_boxes=Boxes(t), gt_classes=torch.tensor([3, 7]))

    Fields can be tensors, ``Boxes``, lists or any object with ``__len__`` and ``__getitem__``.

    Args:
        image_size: (height, width) of the image.
        **kwargs: fields to set.
    """

    def __init__(self, image_size: tuple[int, int], **kwargs: Any):
        self._image_size = (int(image_size[0]), int(image_size[1]))
        self._fields: dict[str, Any] = {}
        for k, v in kwargs.items():
            self.set(k, v)

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width)."""
        return self._image_size

    def __setattr__(self, name: str, val: Any) -> None:
        if name.startswith("_"):
            super().__setattr__(name, val)
        else:
            self.set(name, val)

    def __getattr__(self, name: str) -> Any:
        if name == "_fields" or name not in self._fields:
            raise AttributeError(f"Cannot find field '{name}' in the given Instances!")
        return self._fields[name]

    def set(self, name: str, value: Any) -> None:
        """Set a field; its length must match the other fields'."""
        data_len = len(value)
        if len(self._fields):
            if len(self) != data_len:
                raise ValueError(
                    f"Adding a field '{name}' of length {data_len} to Instances of length {len(self)}"
                )
        self._fields[name] = value

    def has(self, name: str) -> bool:
        return name in self._fields

    def remove(self, name: str) -> None:
        del self._fields[name]

    def get(self, name: str) -> Any:
        return self._fields[name]

    def get_fields(self) -> dict[str, Any]:
        return self._fields

    def to(self, *args: Any, **kwargs: Any) -> Instances:
        """Move every tensor-like field (tensors and ``Boxes``)."""
        ret = Instances(self._image_size)
        for k, v in self._fields.items():
            if hasattr(v, "to"):
                v = v.to(*args, **kwargs)
            ret.set(k, v)
        return ret

    def __getitem__(self, item: int | slice | torch.Tensor) -> Instances:
        if isinstance(item, int):
            if item >= len(self) or item < -len(self):
                raise IndexError("Instances index out of range!")
            item = slice(item, None, len(self)) if item != -1 else slice(item, None)
        ret = Instances(self._image_size)
        for k, v in self._fields.items():
            ret.set(k, v[item])
        return ret

    def __len__(self) -> int:
        for v in self._fields.values():
            return len(v)
        return 0

    def __iter__(self):
        raise NotImplementedError("`Instances` object is not iterable!")

    @staticmethod
    def cat(instance_lists: list[Instances]) -> Instances:
        """Concatenate instances of the same image size."""
        if len(instance_lists) == 0:
            raise ValueError("Instances.cat needs at least one Instances")
        if len(instance_lists) == 1:
            return instance_lists[0]
        image_size = instance_lists[0].image_size
        for i in instance_lists[1:]:
            if i.image_size != image_size:
                raise ValueError("Instances.cat: image sizes differ")
        ret = Instances(image_size)
        for k in instance_lists[0]._fields.keys():
            values = [i.get(k) for i in instance_lists]
            v0 = values[0]
            if isinstance(v0, torch.Tensor):
                values = torch.cat(values, dim=0)
            elif isinstance(v0, list):
                values = list(itertools.chain(*values))
            elif hasattr(type(v0), "cat"):
                values = type(v0).cat(values)
            else:
                raise ValueError(f"Unsupported type {type(v0)} for concatenation")
            ret.set(k, values)
        return ret

    def __repr__(self) -> str:
        s = f"Instances(num_instances={len(self)}, image_height={self._image_size[0]}, "
        s += f"image_width={self._image_size[1]}, fields=[{', '.join(self._fields)}])"
        return s
