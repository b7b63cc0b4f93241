"""High-level inference: ``Predictor(config)(images) -> Detections`` for users of a trained model.

Example::

    from mrdetr.engine.predictor import Predictor

    predictor = Predictor("projects/mr_detr_deformable/configs/<config>.py", weights="model_final.pth")
    dets = predictor("photo.jpg", threshold=0.5)       # one image -> one Detections
    batch = predictor([array_rgb, tensor_rgb])          # a list -> a list of Detections
    dets = predictor(cv2.imread("photo.jpg"), format="BGR")
    print(dets.boxes, dets.scores, dets.class_names)

Inputs are file paths, PIL images, numpy arrays [H, W, 3] (channel order given by ``format=`` or
``input_format``: ``cv2.imread`` gives BGR) or tensors [3, H, W] in RGB (uint8 or float 0..255;
float inputs with NaN/inf are refused). By default the Predictor follows the config: each image is
resized as the config evaluates (``dataloader.test.mapper.augmentation``: shorter side ``min_size``,
longer side capped at ``max_size``, no side below 1 pixel), fed in the channel order the model was
trained on (``dataloader.test.mapper.img_format``) and named with the classes of the training
dataset; images of equal resized size are run together in batches of ``batch_size`` (so a batch
needs no padding and gives the same detections as single-image calls), and boxes come back in the
coordinates of the ORIGINAL image.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import torch
from torch import nn
from torchvision.transforms.v2 import functional as TF

from mrdetr.checkpoint.io import load_checkpoint_file
from mrdetr.config.access import get_dotted

from .compiling import compile_from_config
from .defaults import resolve_device
from .detections import Detections
from .precision import (
    INFERENCE_DTYPE_KEY,
    configured_inference_dtype,
    inference_autocast,
    prepare_for_inference,
    resolve_inference_dtype,
)
from .predictor_config import (
    DEFAULT_SCORE_THRESHOLD,
    class_names_from_checkpoint,
    class_names_from_config,
    model_image_format,
    test_resize_from_config,
)
from .predictor_inputs import ImageInput, check_format, describe_input, to_rgb_tensor

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_SCORE_THRESHOLD",
    "Detections",
    "ImageInput",
    "Predictor",
    "build_predictor_model",
    "load_config",
]

_MASK_THRESHOLD = 0.5  # probability above which a soft predicted mask pixel is foreground


def resolve_config_path(name: str | os.PathLike) -> str:
    """Map a user-given config name (a file, or a model-zoo name) to a file.

    Raises:
        FileNotFoundError: ``name`` is neither an existing config file nor a model-zoo name.
    """
    from ..model_zoo import get_config_file, list_models

    path = os.fspath(name)
    if os.path.isfile(path):
        return path
    if path in list_models():
        return str(get_config_file(path))
    raise FileNotFoundError(
        f"config file not found: '{path}' (expected a path to a .py or .yaml config, or a "
        "model zoo name: mrdetr.model_zoo.list_models())"
    )


def load_config(cfg_or_path: Any, opts: Sequence[str] | None = None) -> Any:
    """Load a LazyConfig from a path or model-zoo name (or take a loaded one), apply overrides.

    A model-zoo name sets ``train.init_checkpoint`` to the released weights of that model.
    """
    from ..config import LazyConfig
    from ..model_zoo import get_config

    if isinstance(cfg_or_path, (str, os.PathLike)):
        path = resolve_config_path(cfg_or_path)
        is_zoo_name = path != os.fspath(cfg_or_path)
        cfg = get_config(os.fspath(cfg_or_path)) if is_zoo_name else LazyConfig.load(path)
    else:
        cfg = cfg_or_path
    if opts:
        cfg = LazyConfig.apply_overrides(cfg, list(opts))
    return cfg


def build_predictor_model(
    cfg: Any, weights: str | os.PathLike | Mapping[str, Any] | None, device: torch.device
) -> nn.Module:
    """Instantiate ``cfg.model`` on ``device`` in eval mode and load ``weights`` (official or ours).

    Args:
        weights: a file, ``hf://<owner>/<repo>/<file>`` or a model-zoo name (resolved by
            :func:`mrdetr.model_zoo.resolve_checkpoint`), a checkpoint already read (a state
            dict or ``{"model": state_dict, ...}``), or None for the model's initialisation.

    Raises:
        FileNotFoundError: ``weights`` cannot be found (the message says where to put it).
    """
    from ..checkpoint.official import load_official
    from ..config import instantiate
    from ..model_zoo import resolve_checkpoint

    if isinstance(weights, (str, os.PathLike)):  # before the (slow) model build
        weights = resolve_checkpoint(weights)
    model = instantiate(cfg.model)
    if weights is not None:
        load_official(model, weights)
    return model.to(device).eval()


class Predictor:
    """Run a Mr. DETR model on images and return :class:`Detections`.

    Args:
        cfg: a loaded LazyConfig, the path of a config file or a model-zoo name (which also
            selects its released weights).
        weights: checkpoint to load (official layout, ``{"model": sd}`` or a plain state dict):
            a file, ``hf://<owner>/<repo>/<file>`` or a model-zoo name; ``None`` uses
            ``train.init_checkpoint`` when the config sets it.
        device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda:0"``...
        amp: run under autocast (float16 on CUDA, bfloat16 on CPU); ``None`` follows
            ``train.amp.enabled`` of the config on CUDA and is off on CPU. Not used when
            ``dtype`` resolves to bfloat16.
        min_size_test: shorter side after the test-time resize (default: the config's
            ``dataloader.test.mapper.augmentation.min_size``).
        max_size_test: cap on the longer side after the resize (default: the config's ``max_size``).
        input_format: default channel order of numpy inputs, ``"RGB"`` or ``"BGR"`` (OpenCV);
            a call's ``format=`` overrides it.
        threshold: default score threshold (detections with score > threshold are kept),
            :data:`DEFAULT_SCORE_THRESHOLD`.
        batch_size: images per forward pass when a list is given.
        metadata_dataset: registered dataset whose classes name the detections (default: the
            names stored in the checkpoint by training, else those of the config's
            ``dataloader.train.dataset``, else of ``dataloader.test.dataset``).
        opts: ``key=value`` config overrides.
        backend: ``"pytorch"``, or run the exported graph with ``"onnxruntime"`` / ``"openvino"``
            (:mod:`mrdetr.export.runtime`; same inputs, preprocessing and :class:`Detections`).
        onnx_path: for an exported backend, an ONNX file exported with post-processing
            (``mrdetr-export-onnx --dynamic --postprocess``); None exports the model once into the
            cache (``$MRDETR_CACHE/onnx``, default ``~/.cache/mrdetr/onnx``).
        backend_options: for an exported backend, e.g. ``{"precision": "bf16"}`` for OpenVINO's
            inference precision (default ``"f32"``).
        dtype: ``"float32"``, ``"bfloat16"`` (weights cast once, frozen batch norms folded,
            channels-last backbone, detections back in float32: :mod:`mrdetr.engine.precision`)
            or ``"auto"`` (bfloat16 where it is faster: a CUDA device with bf16, a CPU with AMX);
            ``None`` follows the config's ``train.inference_dtype`` (default ``"float32"``).
        torch_compile: ``torch.compile`` the submodules of ``train.compile.modules``
            (:mod:`mrdetr.engine.compiling`); ``None`` follows ``train.compile.enabled`` (off).

    The model gets its images in the channel order of ``dataloader.test.mapper.img_format``.
    """

    def __init__(
        self,
        cfg: Any,
        weights: str | os.PathLike | None = None,
        device: str | torch.device = "auto",
        amp: bool | None = None,
        min_size_test: int | None = None,
        max_size_test: int | None = None,
        input_format: str = "RGB",
        *,
        threshold: float = DEFAULT_SCORE_THRESHOLD,
        batch_size: int = 8,
        metadata_dataset: str | None = None,
        opts: Sequence[str] | None = None,
        backend: str = "pytorch",
        onnx_path: str | os.PathLike | None = None,
        backend_options: dict[str, Any] | None = None,
        dtype: str | None = None,
        torch_compile: bool | None = None,
    ):
        check_format(input_format, "input_format")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.cfg = load_config(cfg, opts)
        cfg_min, cfg_max = test_resize_from_config(self.cfg)
        min_size_test = cfg_min if min_size_test is None else int(min_size_test)
        max_size_test = cfg_max if max_size_test is None else int(max_size_test)
        if min_size_test <= 0 or max_size_test < min_size_test:
            raise ValueError(
                f"need 0 < min_size_test <= max_size_test, got {min_size_test}, {max_size_test}"
            )
        self.model_format = model_image_format(self.cfg)
        check_format(self.model_format, "dataloader.test.mapper.img_format")
        self.device = resolve_device(str(device))
        if weights is None:
            weights = get_dotted(self.cfg, "train.init_checkpoint") or None
        # an exported graph given as onnx_path needs no weights (class names then come from the config)
        read_weights = weights is not None and (backend == "pytorch" or onnx_path is None)
        checkpoint = load_checkpoint_file(weights) if read_weights else None
        if backend == "pytorch":
            self.dtype = resolve_inference_dtype(  # before the (slow) model build
                dtype or configured_inference_dtype(self.cfg),
                self.device,
                name="dtype" if dtype else INFERENCE_DTYPE_KEY,
            )
            self.model = prepare_for_inference(
                build_predictor_model(self.cfg, checkpoint, self.device), self.dtype
            )
            compile_from_config(self.model, self.cfg, torch_compile)
        else:  # an exported graph, called like the model (amp does not apply)
            from ..export.runtime import load_exported_model

            if dtype not in (None, "float32"):
                raise ValueError(
                    f"dtype={dtype!r} applies to backend='pytorch'; an exported backend takes its "
                    "precision from backend_options (OpenVINO: {'precision': 'bf16'})"
                )
            self.dtype = torch.float32
            build = partial(build_predictor_model, self.cfg, checkpoint, torch.device("cpu"))
            self.model = load_exported_model(
                backend, onnx_path, build, trace_size=(min_size_test, min_size_test),
                device=self.device, **(backend_options or {}),
            )  # fmt: skip
            amp = False
        self.backend = backend
        if amp is None:
            amp = (
                bool(get_dotted(self.cfg, "train.amp.enabled", False))
                and self.device.type == "cuda"
            )
        self.amp = bool(amp)
        self.min_size_test = int(min_size_test)
        self.max_size_test = int(max_size_test)
        self.input_format = input_format
        self.threshold = float(threshold)
        self.batch_size = int(batch_size)
        self.class_names = None if metadata_dataset else class_names_from_checkpoint(checkpoint)
        if self.class_names is None:
            self.class_names = class_names_from_config(self.cfg, metadata_dataset)

    # ------------------------------------------------------------------------------------ steps
    def preprocess(
        self, image: ImageInput, index: int = 0, format: str | None = None
    ) -> dict[str, Any]:
        """One input -> the model's input dict (resized image in the model's channel order,
        original height/width); ``format`` is the channel order of a numpy input."""
        from ..data.transforms import shortest_edge_size

        rgb = to_rgb_tensor(image, format or self.input_format, index)
        h, w = rgb.shape[-2:]
        if h == 0 or w == 0:
            raise ValueError(f"image {index}: empty image of size {h}x{w}")
        # an extreme aspect ratio (1 x 5000) would round the short side to 0: keep >= 1 pixel
        size = tuple(
            max(1, side)
            for side in shortest_edge_size(h, w, self.min_size_test, self.max_size_test)
        )
        resized = TF.resize(rgb, list(size), antialias=True) if size != (h, w) else rgb
        if self.model_format == "BGR":
            resized = resized.flip(0)
        return {"image": resized.float(), "height": int(h), "width": int(w)}

    def _autocast(self):
        if self.dtype != torch.float32:
            return inference_autocast(self.device, self.dtype)
        if not self.amp:
            return contextlib.nullcontext()
        dtype = torch.float16 if self.device.type == "cuda" else torch.bfloat16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def _to_detections(self, instances: Any, threshold: float) -> Detections:
        inst = instances.to("cpu")
        scores = inst.scores.float()
        order = torch.argsort(scores, descending=True, stable=True)
        keep = order[scores[order] > threshold]
        classes = inst.pred_classes[keep].long()
        masks = None
        if inst.has("pred_masks"):
            masks = inst.pred_masks[keep]
            if masks.dtype != torch.bool:
                masks = masks > _MASK_THRESHOLD
        names = None
        if self.class_names is not None:
            names = [
                self.class_names[c] if c < len(self.class_names) else str(c)
                for c in classes.tolist()
            ]
        return Detections(
            boxes=inst.pred_boxes.tensor[keep].float(),
            scores=scores[keep],
            classes=classes,
            image_size=tuple(inst.image_size),
            class_names=names,
            masks=masks,
        )

    @torch.no_grad()
    def __call__(
        self,
        images: ImageInput | Sequence[ImageInput],
        threshold: float | None = None,
        *,
        format: str | None = None,
    ) -> Detections | list[Detections]:
        """Detect objects in one image or a list of images.

        Args:
            images: one input or a list of inputs (paths, PIL images, numpy HWC arrays, CHW RGB
                tensors).
            threshold: keep detections with score > threshold (default: the constructor's).
            format: channel order of numpy inputs, ``"RGB"`` or ``"BGR"`` (``cv2.imread``);
                default: the constructor's ``input_format``.

        Returns:
            one :class:`Detections` for one input, a list for a list.
        """
        single = not isinstance(images, (list, tuple))
        items = [images] if single else list(images)
        thr = self.threshold if threshold is None else float(threshold)
        if format is not None:
            check_format(format, "format")
        inputs = [self.preprocess(img, i, format) for i, img in enumerate(items)]
        # Batch only images of the same resized size: padding changes the neck's GroupNorm statistics
        # and the convolutions at the image border, so a padded image would not give the detections
        # it gets alone. Same-size batches (video frames, one camera) need no padding.
        groups: dict[tuple[int, int], list[int]] = {}
        for i, inp in enumerate(inputs):
            groups.setdefault(tuple(inp["image"].shape[-2:]), []).append(i)
        results: list[Detections | None] = [None] * len(items)
        for indices in groups.values():
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start : start + self.batch_size]
                try:
                    with self._autocast():
                        outputs = self.model([inputs[i] for i in chunk])
                except ValueError as exc:  # e.g. an image too small for the model: name it
                    names = ", ".join(describe_input(items[i], inputs[i], i) for i in chunk)
                    raise ValueError(f"{names}: {exc}") from exc
                for i, out in zip(chunk, outputs):
                    results[i] = self._to_detections(out["instances"], thr)
        return results[0] if single else results
