"""Run an exported Mr. DETR graph with ONNX Runtime or OpenVINO behind the model's eval interface.

:class:`ExportedModel` is called like ``MrDETR`` in eval mode -- ``model(batched_inputs)`` with
``[{"image": [3, H, W] (0..255, the model's channel order), "height", "width"}]`` returns
``[{"instances": Instances(pred_boxes, scores, pred_classes)}]`` in the requested height/width -- so
:class:`mrdetr.engine.predictor.Predictor` runs it with its own preprocessing and output code
(``Predictor(..., backend="onnxruntime" | "openvino")``). The graph is one exported with
``postprocess=True`` (:func:`mrdetr.export.onnx.export_onnx`): top-K scores, labels and pixel boxes
of the resized input; rescaling to the requested size, clipping and dropping empty boxes are
:func:`mrdetr.modeling.postprocessing.detector_postprocess`, as in the model.

Without a file, :func:`cached_onnx` exports the model (dynamic batch and size, post-processing in
the graph, checked with onnxruntime) once into ``$MRDETR_CACHE/onnx`` (default
``~/.cache/mrdetr/onnx``), named by a hash of the weights, the module structure and settings, and
the library, torch and opset versions.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import __version__
from ..modeling.postprocessing import detector_postprocess
from ..structures import Boxes, Instances
from .onnx import DEFAULT_OPSET, INPUT_NAMES, POSTPROCESS_OUTPUT_NAMES, export_onnx

__all__ = [
    "BACKENDS",
    "OPENVINO_PRECISIONS",
    "ExportedModel",
    "cached_onnx",
    "load_exported_model",
    "require_package",
]

logger = logging.getLogger(__name__)

BACKENDS = ("pytorch", "onnxruntime", "openvino")
# backend -> (module, pip extra that installs it)
_PACKAGES = {"onnxruntime": ("onnxruntime", "export"), "openvino": ("openvino", "openvino")}
OPENVINO_PRECISIONS = ("f32", "bf16", "f16")
_CACHE_ENV = "MRDETR_CACHE"
_DEFAULT_CACHE = Path("~/.cache/mrdetr")
_CACHE_VERSION = "1"  # bump when the exported graph changes for the same weights
_HASH_CHUNK = 1 << 20
_CPU = torch.device("cpu")
Runner = Callable[[np.ndarray], list[np.ndarray]]


def require_package(backend: str) -> Any:
    """Import the package of ``backend``, or raise one line naming the extra to install."""
    module, extra = _PACKAGES[backend]
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"backend='{backend}' needs the {module} package: pip install 'mrdetr[{extra}]'"
        ) from exc


def _module_settings(model: nn.Module) -> str:
    """The plain attributes of every submodule (e.g. ``select_box_nums_for_evaluation``, query
    counts, score-fusion exponents): they shape the graph but are not in ``repr`` or the weights."""
    plain = (bool, int, float, str, tuple, list, type(None))
    return repr(
        [
            (name, sorted((k, repr(v)) for k, v in vars(m).items() if isinstance(v, plain)))
            for name, m in model.named_modules()
        ]
    )


def _model_key(model: nn.Module, opset: int) -> str:
    """sha256 of the module structure and settings, every state-dict tensor and the export
    settings (library, torch and opset versions)."""
    versions = f"{_CACHE_VERSION}|{__version__}|{opset}|{torch.__version__}"
    digest = hashlib.sha256(f"{versions}|{model!r}|{_module_settings(model)}".encode())
    for name, tensor in model.state_dict().items():
        data = tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        for start in range(0, data.size, _HASH_CHUNK):
            digest.update(data[start : start + _HASH_CHUNK].tobytes())
    return digest.hexdigest()[:16]


def cached_onnx(
    model: nn.Module,
    *,
    height: int,
    width: int,
    cache_dir: str | os.PathLike | None = None,
    opset: int = DEFAULT_OPSET,
) -> Path:
    """The dynamic, post-processed ONNX file of ``model``, exported on the first call.

    Args:
        model: a ``MrDETR`` (exported on the CPU).
        height: trace height (any size with enough encoder tokens; the graph is dynamic).
        width: trace width.
        cache_dir: folder of the cached files (default ``$MRDETR_CACHE/onnx``, else
            ``~/.cache/mrdetr/onnx``).
        opset: ONNX opset.
    """
    if cache_dir is None:
        root = os.environ.get(_CACHE_ENV) or _DEFAULT_CACHE
        cache_dir = Path(root).expanduser() / "onnx"
    path = Path(cache_dir) / f"mrdetr-{_model_key(model, opset)}.onnx"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        logger.info("exporting the model to %s (dynamic shapes, post-processing)", path)
        export_onnx(
            model, str(path), height=height, width=width, opset=opset, dynamic=True,
            postprocess=True,
        )  # fmt: skip
    return path


def _check_outputs(path: str, names: list[str]) -> None:
    if sorted(names) != sorted(POSTPROCESS_OUTPUT_NAMES):
        raise ValueError(
            f"{path}: the graph has outputs {names}, expected {POSTPROCESS_OUTPUT_NAMES} "
            "(export it with --postprocess / export_onnx(..., postprocess=True))"
        )


def _onnxruntime_runner(
    path: str, device: torch.device, num_threads: int | None
) -> tuple[Runner, str]:
    ort = require_package("onnxruntime")
    options = ort.SessionOptions()
    if num_threads is not None:
        options.intra_op_num_threads = num_threads
    providers = ["CPUExecutionProvider"]
    if device.type == "cuda":
        if "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        else:
            logger.warning(
                "backend='onnxruntime' on %s: this onnxruntime has no CUDAExecutionProvider "
                "(pip install onnxruntime-gpu); running on the CPU",
                device,
            )
    session = ort.InferenceSession(path, options, providers=providers)
    _check_outputs(path, [o.name for o in session.get_outputs()])
    return lambda images: session.run(POSTPROCESS_OUTPUT_NAMES, {INPUT_NAMES[0]: images}), "f32"


def _openvino_runner(path: str, precision: str, num_threads: int | None) -> tuple[Runner, str]:
    ov = require_package("openvino")
    if precision not in OPENVINO_PRECISIONS:
        raise ValueError(
            f"OpenVINO precision must be one of {OPENVINO_PRECISIONS}, got '{precision}'"
        )
    config = {"INFERENCE_PRECISION_HINT": precision}
    if num_threads is not None:
        config["INFERENCE_NUM_THREADS"] = num_threads
    compiled = ov.Core().compile_model(path, "CPU", config)
    _check_outputs(path, [o.get_any_name() for o in compiled.outputs])
    outputs = [compiled.output(name) for name in POSTPROCESS_OUTPUT_NAMES]

    def run(images: np.ndarray) -> list[np.ndarray]:
        result = compiled({INPUT_NAMES[0]: images})
        return [result[o] for o in outputs]

    # what the plugin resolved the hint to ("f32", "bf16", ...)
    return run, compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()


class ExportedModel:
    """An exported graph called like ``MrDETR`` in eval (see the module docstring).

    Args:
        backend: ``"onnxruntime"`` or ``"openvino"``.
        path: an ONNX file exported with ``postprocess=True``.
        device: where onnxruntime runs (CUDA when the device is CUDA and onnxruntime-gpu is
            installed, else the CPU); OpenVINO always runs on the CPU.
        precision: OpenVINO's ``INFERENCE_PRECISION_HINT`` (``"f32"`` default: the same numbers
            as PyTorch; ``"bf16"`` is OpenVINO's own default on CPUs with bf16 instructions).
        num_threads: intra-op threads of the runtime (None: the runtime's default).

    Attributes:
        precision: the inference precision the runtime reports (OpenVINO: the compiled model's
            ``INFERENCE_PRECISION_HINT``, ``"f32"`` or ``"bf16"``; onnxruntime: ``"f32"``).
    """

    def __init__(
        self,
        backend: str,
        path: str | os.PathLike,
        device: torch.device = _CPU,
        precision: str = "f32",
        num_threads: int | None = None,
    ):
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"onnx_path: no such file '{path}'")
        if backend == "onnxruntime":
            self._run, self.precision = _onnxruntime_runner(path, device, num_threads)
        elif backend == "openvino":
            self._run, self.precision = _openvino_runner(path, precision, num_threads)
        else:
            raise ValueError(f"exported backends are 'onnxruntime' and 'openvino', got '{backend}'")
        self.backend = backend
        self.path = path

    def __call__(self, batched_inputs: list[dict]) -> list[dict[str, Instances]]:
        """Detect in a batch of images of one size (the Predictor groups them so).

        Raises:
            ValueError: images of different sizes, or the runtime failed on the batch.
        """
        sizes = {tuple(x["image"].shape[-2:]) for x in batched_inputs}
        if len(sizes) != 1:
            raise ValueError(
                f"{self.backend}: one call takes images of one size, got {sorted(sizes)}"
            )
        images = torch.stack([x["image"] for x in batched_inputs]).to("cpu", torch.float32)
        try:
            scores, labels, boxes = self._run(np.ascontiguousarray(images.numpy()))
        except Exception as exc:  # the runtimes raise their own types: name the input
            raise ValueError(
                f"{self.backend} failed on input {tuple(images.shape)}: {exc}"
            ) from exc
        (h, w) = sizes.pop()
        results = []
        for i, inp in enumerate(batched_inputs):
            inst = Instances(
                (h, w),
                pred_boxes=Boxes(torch.from_numpy(boxes[i]).float()),
                scores=torch.from_numpy(scores[i]).float(),
                pred_classes=torch.from_numpy(labels[i]).long(),
            )
            out_h, out_w = inp.get("height", h), inp.get("width", w)
            results.append({"instances": detector_postprocess(inst, out_h, out_w)})
        return results


def load_exported_model(
    backend: str,
    onnx_path: str | os.PathLike | None,
    build_model: Callable[[], nn.Module],
    *,
    trace_size: tuple[int, int],
    device: torch.device = _CPU,
    **options: Any,
) -> ExportedModel:
    """An :class:`ExportedModel` of ``onnx_path``, or of ``build_model()`` exported to the cache.

    Args:
        backend: ``"onnxruntime"`` or ``"openvino"``.
        onnx_path: a post-processed ONNX file, or None to export (:func:`cached_onnx`).
        build_model: builds the PyTorch model; called only when ``onnx_path`` is None.
        trace_size: (height, width) of the export's trace.
        device: see :class:`ExportedModel`.
        **options: ``precision`` (OpenVINO), ``num_threads``.
    """
    if backend not in BACKENDS[1:]:
        raise ValueError(f"backend must be one of {BACKENDS}, got '{backend}'")
    require_package(backend)  # before any export work
    if onnx_path is None:
        if importlib.util.find_spec("onnxruntime") is None:
            raise ImportError(
                f"backend='{backend}' without onnx_path= exports the model and checks it with "
                "onnxruntime: pip install 'mrdetr[export]' (or pass an exported file)"
            )
        onnx_path = cached_onnx(build_model(), height=trace_size[0], width=trace_size[1])
    return ExportedModel(backend, onnx_path, device, **options)
