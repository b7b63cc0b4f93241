"""Eval and loss parity with the original Mr. DETR code (``../shared/reference``, R50 Deformable).

Rows of per-query tensors are compared after matching them to the reference rows (the reference
README: near-equal proposal scores may come out in another order); token-level tensors compare directly.
Tolerances: 1e-4 absolute on outputs and intermediates (noise floor ~3e-6), 1e-4 relative on losses.
"""

from __future__ import annotations

import json

import pytest
import torch
from reference_data import (
    eval_batched_inputs,
    official_weights,
    ref_inputs,
    ref_outputs,
    reference_dir,
)
from scipy.optimize import linear_sum_assignment
from tiny_model import MODEL_CONFIG

from mrdetr.checkpoint.official import load_official
from mrdetr.config import LazyConfig, instantiate
from mrdetr.modeling.meta_arch.inputs import level_padding_masks
from mrdetr.modeling.postprocessing import fuse_layer_scores
from mrdetr.modeling.routes import Route
from mrdetr.ops.msda import MultiScaleDeformableAttention
from mrdetr.structures import Boxes, Instances

ATOL = 1e-4


def _model(short_name: str, num_queries: int):
    cfg = LazyConfig.apply_overrides(
        LazyConfig.load(str(MODEL_CONFIG)), [f"model.num_queries={num_queries}"]
    )
    model = instantiate(cfg.model)
    keys = load_official(model, official_weights(short_name))
    assert keys.missing_keys == [] and keys.unexpected_keys == []
    return model.eval()


@pytest.fixture(scope="module")
def model_300q():
    return _model("mrdetr_deformable_r50_300q", 300)


def _match(ours: torch.Tensor, ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row permutation pairing [Q, 4] boxes with the reference rows (Hungarian on L1)."""
    rows, cols = linear_sum_assignment(torch.cdist(ours, ref, p=1).numpy())
    return torch.as_tensor(rows), torch.as_tensor(cols)


def _close(a, b, what):
    diff = (a - b).abs().max().item()
    assert diff <= ATOL, f"{what}: max |diff| {diff:.3g} > {ATOL}"


@pytest.mark.parametrize("image", [0, 1])
def test_300q_eval_matches_every_intermediate(model_300q, image):
    model = model_300q
    ref = ref_outputs("mrdetr_deformable_r50_300q")["single"][image]
    inputs = eval_batched_inputs((image,))
    with torch.no_grad():
        images, mask = model.preprocess(inputs)
        feats = model.backbone(images.tensor)
        for name, value in ref.get("backbone", {}).items():
            scale = value.abs().max().item()
            _close(feats[name] / scale, value / scale, f"backbone {name} (relative)")
        for lvl, (ours, theirs) in enumerate(zip(model.neck(feats), ref["neck"])):
            _close(ours, theirs, f"neck level {lvl}")
        enc = model.encode(images, mask)
        _close(enc.memory, ref["memory"], "memory")
        primary = model.transformer.select(enc, Route.PRIMARY)
        instruct = model.transformer.select(enc, Route.INSTRUCT)
        _close(primary.predictions.logits, ref["enc_outputs_class"], "enc_outputs_class")
        _close(instruct.predictions.logits, ref["o2m_enc_outputs_class"], "o2m_enc_outputs_class")
        valid = torch.isfinite(ref["output_proposals"])
        assert torch.equal(torch.isfinite(enc.anchors), valid)
        _close(enc.anchors[valid], ref["output_proposals"][valid], "output_proposals")
        coord = ref["enc_outputs_coord_unact"]
        _close(primary.predictions.boxes[valid], coord.sigmoid()[valid], "enc boxes")
        routes = {
            Route.PRIMARY: ("init_reference", "dec_main_ref", "dec_main_hidden"),
            Route.INSTRUCT: ("o2m_init_reference", "dec_o2m_ref", "dec_o2m_hidden_last"),
            Route.SEP_FFN: ("init_reference", "dec_sep_ref", "dec_sep_hidden_last"),
        }
        for route, (init_key, ref_key, hidden_key) in routes.items():
            seed = instruct if route is Route.INSTRUCT else primary
            out = model.run_route(enc, route, seed.box_logits)
            rows, cols = _match(out.references[-1][0], ref[ref_key][-1, 0])
            _close(out.init_reference[0][rows], ref[init_key][0][cols], f"{route.name} init")
            _close(out.references[:, 0][:, rows], ref[ref_key][:, 0][:, cols], f"{route.name} refs")
            hidden = ref[hidden_key]
            ours_hidden = out.hidden[:, 0] if hidden.dim() == 4 else out.hidden[-1]
            theirs = hidden[:, 0] if hidden.dim() == 4 else hidden
            _close(ours_hidden[..., rows, :], theirs[..., cols, :], f"{route.name} hidden")
        raw = model.forward_raw(inputs)
    rows, cols = _match(raw.pred_boxes[0], ref["box_pred"][0])
    _close(raw.pred_boxes[0][rows], ref["box_pred"][0][cols], "box_pred")
    _close(raw.pred_logits[0][rows], ref["box_cls"][0][cols], "box_cls")


def test_300q_instances_match(model_300q):
    ref = ref_outputs("mrdetr_deformable_r50_300q")["single"][0]["instances"]
    out = model_300q(eval_batched_inputs((0,)))[0]["instances"]
    assert out.image_size == tuple(ref["image_size"])
    assert len(out) == len(ref["scores"])
    # top-K scores agree as a sorted list; boxes agree per (score-matched) detection set
    torch.testing.assert_close(
        out.scores.sort().values, ref["scores"].sort().values, atol=ATOL, rtol=0
    )
    rows, cols = _match(out.pred_boxes.tensor, ref["pred_boxes"])
    _close(
        out.pred_boxes.tensor[rows] / 720, ref["pred_boxes"][cols] / 720, "pred_boxes (relative)"
    )


def test_900q_eval_matches():
    model = _model("mrdetr_deformable_r50_900q", 900)
    ref = ref_outputs("mrdetr_deformable_r50_900q")["single"]
    for image in (0, 1):
        raw = model.forward_raw(eval_batched_inputs((image,)))
        rows, cols = _match(raw.pred_boxes[0], ref[image]["box_pred"][0])
        _close(raw.pred_boxes[0][rows], ref[image]["box_pred"][0][cols], f"900q box_pred {image}")
        _close(raw.pred_logits[0][rows], ref[image]["box_cls"][0][cols], f"900q box_cls {image}")


def _primary_from_neck(model, features: list[torch.Tensor], mask: torch.Tensor, sizes):
    """Transformer + heads + score fusion from given neck maps and a pixel padding mask."""
    shapes = [tuple(f.shape[-2:]) for f in features]
    masks = level_padding_masks(mask, sizes, shapes, "exact")
    pos = [model.position_embedding(m) for m in masks]
    encoded = model.transformer.encode(features, masks, pos)
    seed = model.transformer.select(encoded, Route.PRIMARY)
    route = model.run_route(encoded, Route.PRIMARY, seed.box_logits)
    logits = fuse_layer_scores([p.logits for p in route.layers], model.score_fusion_exponents)
    return logits, route.layers[-1].boxes


def test_batched_eval_uses_the_padding_mask(model_300q):
    """Everything after the neck is padding-invariant: a padded batch whose padding holds garbage
    gives each image's own outputs to float tolerance (the official code uses an all-zero mask at
    eval, so padding changes its outputs by up to ~1.2 logits).

    A full batched forward still differs from single-image runs by an amount inherent to the
    architecture, not to the mask: the ResNet's receptive fields near the bottom/right border see
    the padded zeros (activations of the padded region are not zero after the first FrozenBN), and
    the neck's GroupNorm statistics are taken over the whole padded map. Detectron2-style CNN
    backbones share this; it is checked below to stay confined to those two stages. Also, the
    official per-level masks (``padding_mask_mode="interpolate"``) nearest-resize the pixel mask,
    which marks one column of pure padding valid at stride 64 for the 384-wide image in a 480-wide
    batch; the ``"exact"`` mode used here marks exactly the tokens an image has alone.
    """
    model = model_300q
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        singles, necks = [], []
        for i in (0, 1):
            images, mask = model.preprocess(eval_batched_inputs((i,)))
            necks.append(model.neck(model.backbone(images.tensor)))
            singles.append(_primary_from_neck(model, necks[-1], mask, images.image_sizes))
        images, mask = model.preprocess(eval_batched_inputs((0, 1)))
        batch_neck = model.neck(model.backbone(images.tensor))
        padded = []
        for lvl, ref in enumerate(batch_neck):
            level = torch.randn(ref.shape, generator=g) * 10  # garbage in the padding
            for i in (0, 1):
                h, w = necks[i][lvl].shape[-2:]
                level[i, :, :h, :w] = necks[i][lvl][0]
            padded.append(level)
        logits, boxes = _primary_from_neck(model, padded, mask, images.image_sizes)
        # the backbone border effect: the top-left interior of image 0 is untouched by padding
        feats_single = model.backbone(model.preprocess(eval_batched_inputs((0,)))[0].tensor)
        feats_batch = model.backbone(images.tensor)
        _close(
            feats_batch["res3"][0, :, :30, :50],
            feats_single["res3"][0, :, :30, :50],
            "res3 interior",
        )
    for i in (0, 1):
        rows, cols = _match(boxes[i], singles[i][1][0])
        _close(boxes[i][rows], singles[i][1][0][cols], f"batched boxes {i}")
        _close(logits[i][rows], singles[i][0][0][cols], f"batched logits {i}")


def test_300q_training_losses_match(model_300q):
    """The 60 weighted loss terms of one training forward (seed 3) within 1e-4 relative.

    The one-to-many assigner subsamples positives at random only when there are more than its cap
    (225); here there are far fewer, so the terms do not depend on the RNG: a different seed and an
    explicit generator give the same values.
    """
    ref = json.loads((reference_dir() / "mrdetr_deformable_r50_300q.train_losses.json").read_text())
    expected = ref["dn_enabled"]["losses_as_returned"]
    inputs = ref_inputs()
    batch = [
        {
            "image": img,
            "instances": Instances(
                tuple(img.shape[-2:]),
                gt_boxes=Boxes(gt["boxes_xyxy_abs"]),
                gt_classes=gt["classes"],
            ),
        }
        for img, gt in zip(inputs["eval_images"], inputs["train_gt"])
    ]
    model_300q.train()
    try:
        torch.manual_seed(3)
        losses = model_300q(batch)
        other_seed = model_300q.losses(batch, generator=torch.Generator().manual_seed(123))
    finally:
        model_300q.eval()
    assert set(losses) == set(expected) and len(losses) == 60
    for key, value in expected.items():
        torch.testing.assert_close(losses[key].item(), value, rtol=1e-4, atol=0, msg=key)
        torch.testing.assert_close(other_seed[key], losses[key], rtol=0, atol=0, msg=key)


def test_every_cpu_backend_gives_the_reference_outputs(model_300q):
    """The model's outputs do not depend on the deformable-attention backend (issue: fast MSDA):
    the grid_sample reference and the gather-based CPU path both reproduce the original code."""
    ref = ref_outputs("mrdetr_deformable_r50_300q")["single"][1]
    modules = [m for m in model_300q.modules() if isinstance(m, MultiScaleDeformableAttention)]
    assert len(modules) == 12
    try:
        for backend in ("reference", "cpu"):
            for m in modules:
                m.backend = backend
            raw = model_300q.forward_raw(eval_batched_inputs((1,)))
            rows, cols = _match(raw.pred_boxes[0], ref["box_pred"][0])
            _close(raw.pred_boxes[0][rows], ref["box_pred"][0][cols], f"{backend} box_pred")
            _close(raw.pred_logits[0][rows], ref["box_cls"][0][cols], f"{backend} box_cls")
    finally:
        for m in modules:
            m.backend = "auto"


def test_bf16_inference_stays_within_its_stated_tolerance_of_the_reference(model_300q):
    """The bf16 inference switch on the official weights (``benchmarks/README.md``, bf16 inference):
    weights cast once, batch norms folded, every part in bf16. Stated tolerances against the original
    code's float32 outputs: encoder memory within 3 % of its largest magnitude; the 300 highest
    class probabilities, as a sorted list, within 0.01; the final boxes, rows matched to the
    reference, within 0.01 in mean absolute normalised coordinate (measured: 1.5 %, 0.002, 0.004; a
    few rows differ more because bf16 rounding reorders the near-tied two-stage proposals of these
    untrained weights)."""
    from mrdetr.engine.precision import inference_autocast, inference_model

    ref = ref_outputs("mrdetr_deformable_r50_300q")["single"][0]
    inputs = eval_batched_inputs((0,))
    model = inference_model(model_300q, torch.bfloat16)
    with inference_autocast("cpu", torch.bfloat16):
        images, mask = model.preprocess(inputs)
        memory = model.encode(images, mask).memory.float()
        raw = model.forward_raw(inputs)
    scale = ref["memory"].abs().max().item()
    assert (memory - ref["memory"]).abs().max().item() <= 0.03 * scale
    probs = raw.pred_logits[0].float().sigmoid().flatten().sort(descending=True).values[:300]
    ref_probs = ref["box_cls"][0].sigmoid().flatten().sort(descending=True).values[:300]
    assert (probs - ref_probs).abs().max().item() <= 0.01
    boxes = raw.pred_boxes[0].float()
    rows, cols = _match(boxes, ref["box_pred"][0])
    assert (boxes[rows] - ref["box_pred"][0][cols]).abs().mean().item() <= 0.01
    assert next(model_300q.parameters()).dtype == torch.float32  # the float32 model is untouched
