"""Tiny-config tests of the whole Mr. DETR model on CPU (shapes, losses, gradients, routes, inputs)."""

from __future__ import annotations

import pytest
import torch
from tiny_model import tiny_batch, tiny_model

from mrdetr.modeling.routes import Route
from mrdetr.structures import Instances

# Parameters used only by the auxiliary routes (training-only).
AUX_ONLY = (
    "self_attn.instruction_content",
    "self_attn.instruction_pos",
    "self_attn.norm_instruct",
    "ffn.sep.",
    "proposals.heads.instruct.",
)


def test_train_forward_returns_weighted_official_loss_names():
    model = tiny_model()
    model.train()
    losses = model(tiny_batch())
    # 2 decoder layers: primary final + 1 aux, instruct x2, sep x2, two encoder heads; 3 terms each.
    expected = {"", "_0", "_group_0", "_group_1", "_sep_0", "_sep_1", "_enc", "_enc_o2m"}
    assert set(losses) == {f"loss_{t}{s}" for t in ("class", "bbox", "giou") for s in expected}
    for k, v in losses.items():
        assert v.dim() == 0 and torch.isfinite(v), k
    raw = model.criterion(
        model.forward_features(tiny_batch(), model.train_routes),
        [{"labels": torch.tensor([0]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])}] * 2,
    )
    assert set(raw) == set(losses)
    assert (
        model.weight_dict["loss_bbox_enc"] == 15.0 and model.weight_dict["loss_class_sep_1"] == 2.0
    )


def test_backward_reaches_every_trainable_parameter():
    model = tiny_model()
    # The official init zeroes some layers (box-head outputs, sampling offsets), which blocks
    # gradients at step 0 only; perturb like the reference weights so every path is live.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    model.train()
    losses = model(tiny_batch(num_boxes=(3, 2)))
    sum(losses.values()).backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert no_grad == []
    zero = [
        n
        for n, p in model.named_parameters()
        if p.requires_grad and p.grad is not None and p.grad.abs().sum() == 0
    ]
    # Every auxiliary-route parameter really learns (instruction tokens, their norm, the second FFN).
    for marker in AUX_ONLY:
        assert any(marker in n for n, _ in model.named_parameters())
        assert not any(marker in n for n in zero), (marker, zero)
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert frozen == ["backbone.stem.conv1.weight"]


def test_primary_route_ignores_auxiliary_parameters():
    model = tiny_model()
    model.eval()
    batch = tiny_batch()
    before = model.forward_raw(batch)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if any(m in n for m in AUX_ONLY):
                p.add_(torch.randn_like(p))
    after = model.forward_raw(batch)
    torch.testing.assert_close(after.pred_logits, before.pred_logits, rtol=0, atol=0)
    torch.testing.assert_close(after.pred_boxes, before.pred_boxes, rtol=0, atol=0)


def test_eval_outputs_and_postprocess():
    model = tiny_model()
    model.eval()
    batch = tiny_batch()
    batch[0]["height"], batch[0]["width"] = 128, 160  # 2x up-scaled output
    raw = model.forward_raw(batch)
    assert raw.pred_logits.shape == (2, 30, 5) and raw.pred_boxes.shape == (2, 30, 4)
    out = model(batch)
    assert len(out) == 2
    inst = out[0]["instances"]
    assert isinstance(inst, Instances) and inst.image_size == (128, 160)
    assert len(inst) <= 20 and inst.pred_classes.max() < 5
    boxes = inst.pred_boxes.tensor
    assert (boxes[:, 0::2] <= 160).all() and (boxes[:, 1::2] <= 128).all() and (boxes >= 0).all()
    assert (inst.scores[:-1] >= inst.scores[1:]).all()


def test_only_primary_route_runs_at_inference(monkeypatch):
    model = tiny_model()
    model.eval()
    seen = []
    original = model.run_route
    monkeypatch.setattr(
        model,
        "run_route",
        lambda enc, route, *rest: seen.append(route) or original(enc, route, *rest),
    )
    model(tiny_batch())
    assert seen == [Route.PRIMARY]


def test_images_without_objects_train():
    model = tiny_model()
    model.train()
    losses = model(tiny_batch(num_boxes=(0, 0)))
    assert all(torch.isfinite(v) for v in losses.values())
    assert all(v.item() == 0 for k, v in losses.items() if "bbox" in k or "giou" in k)
    sum(losses.values()).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_boxes_partly_outside_are_clipped_and_outside_dropped():
    model = tiny_model()
    model.train()
    batch = tiny_batch(num_boxes=(2, 1))
    batch[0]["instances"].gt_boxes.tensor[0] = torch.tensor([-10.0, -5.0, 30.0, 40.0])
    batch[0]["instances"].gt_boxes.tensor[1] = torch.tensor([200.0, 200.0, 230.0, 240.0])
    from mrdetr.modeling.meta_arch.inputs import prepare_targets

    targets = prepare_targets(batch, torch.device("cpu"))
    assert len(targets[0]["boxes"]) == 1
    assert (targets[0]["boxes"] >= 0).all() and (targets[0]["boxes"] <= 1).all()
    losses = model(batch)
    assert all(torch.isfinite(v) for v in losses.values())


@pytest.mark.parametrize(
    "mutate, error, match",
    [
        (lambda b: b[0].update(image=torch.zeros(1, 64, 64)), ValueError, r"\[3, H, W\]"),
        (lambda b: b[0].pop("image"), KeyError, "no 'image'"),
        (lambda b: b[1].pop("instances"), KeyError, "no 'instances'"),
        (
            lambda b: b[0]["instances"].gt_boxes.tensor.__setitem__(
                0, torch.tensor([30.0, 5, 10, 40])
            ),
            ValueError,
            "x2 >= x1",
        ),
    ],
)
def test_bad_inputs_give_clear_errors(mutate, error, match):
    model = tiny_model()
    model.train()
    batch = tiny_batch(num_boxes=(2, 1))
    mutate(batch)
    with pytest.raises(error, match=match):
        model(batch)


def test_normalisation_constants_are_buffers_that_follow_the_model():
    model = tiny_model()
    names = dict(model.named_buffers())
    assert "pixel_mean" in names and "pixel_std" in names
    assert "pixel_mean" not in model.state_dict()  # not part of the checkpoint layout
    model.to(torch.float64)
    assert model.pixel_mean.dtype == torch.float64


def test_gradient_checkpointing_recomputes_and_keeps_gradients():
    batch = tiny_batch(num_boxes=(3, 2))
    grads = []
    calls = []
    for use_ckpt in (False, True):
        model = tiny_model(
            [
                f"model.transformer.encoder.use_checkpoint={use_ckpt}",
                f"model.transformer.decoder.use_checkpoint={use_ckpt}",
            ]
        )
        model.train()
        # (a submodule: the checkpoint wrapper re-runs the layer's forward, not its hooks)
        layer = model.transformer.encoder.layers[0].ffn.fc1
        counter = []
        layer.register_forward_hook(lambda *a, c=counter: c.append(1))
        torch.manual_seed(0)
        sum(model(batch).values()).backward()
        calls.append(len(counter))
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert calls == [1, 2]  # the checkpointed layer runs again in backward
    assert grads[0].keys() == grads[1].keys()
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], rtol=1e-4, atol=1e-6, msg=n)


@pytest.mark.parametrize(
    "routes",
    [
        ["primary"],
        ["primary", "instruct"],
        ["primary", "sep_ffn"],
        ["primary", "instruct", "sep_ffn"],
    ],
)
def test_trains_every_parameter_says_whether_training_leaves_a_parameter_without_gradient(routes):
    """What DDP's find_unused_parameters="auto" reads: the model's claim against a real step."""
    model = tiny_model([f"model.train_routes={routes}"])
    with torch.no_grad():  # as above: every path live
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    model.train()
    sum(model(tiny_batch(num_boxes=(3, 2))).values()).backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert model.trains_every_parameter == (no_grad == [])
    assert model.trains_every_parameter == (len(routes) == len(Route))
