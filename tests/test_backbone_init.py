"""ImageNet initialisation files load through ``load_official`` with an explicit key map."""

from __future__ import annotations

import torch
import torchvision

from mrdetr.checkpoint.official import load_official
from mrdetr.checkpoint.resnet import convert_torchvision_resnet_to_ours
from mrdetr.modeling.backbone import ResNet


class _Wrapper(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = ResNet(depth=50, out_features=("res3", "res4", "res5"), freeze_at=1)


def test_torchvision_resnet50_loads_into_our_backbone_with_the_same_features():
    torch.manual_seed(0)
    reference = torchvision.models.resnet50(weights=None).eval()
    with torch.no_grad():  # non-trivial batch-norm statistics
        for m in reference.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.normal_(1, 0.1)
                m.bias.normal_(0, 0.1)
    model = _Wrapper()
    keys = load_official(model, reference.state_dict())
    assert keys.missing_keys == [] and keys.unexpected_keys == []
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        ours = model.backbone(x)
        h = reference.maxpool(reference.relu(reference.bn1(reference.conv1(x))))
        h = reference.layer1(h)
        expected = {}
        for name, layer in (
            ("res3", reference.layer2),
            ("res4", reference.layer3),
            ("res5", reference.layer4),
        ):
            h = layer(h)
            expected[name] = h
    for name in expected:
        torch.testing.assert_close(ours[name], expected[name], rtol=1e-3, atol=1e-3)


def test_torchvision_key_map_is_explicit():
    sd = torchvision.models.resnet50(weights=None).state_dict()
    ours = convert_torchvision_resnet_to_ours(sd)
    assert "backbone.stem.conv1.weight" in ours and "backbone.stem.conv1.norm.running_var" in ours
    assert (
        "backbone.res2.0.shortcut.norm.weight" in ours and "backbone.res5.2.conv3.norm.bias" in ours
    )
    assert not any("fc." in k or "num_batches_tracked" in k for k in ours)
