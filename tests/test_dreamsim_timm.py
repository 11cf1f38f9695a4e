"""The key map and our ViT against timm's own ``VisionTransformer``, where timm is installed
(not in our environment, whose CPU torch cannot run beside torchvision: the GPU machines have
it). Random timm models, weights perturbed, compared token for token before the final norm,
and through the projection for the CLIP towers; DINOv2 at its native 518 px (no resampling)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")

from dreamsim.backbones import build_vit, timm_to_vit  # noqa: E402

CASES = [
    ("vit_base_patch16_224", "dino", 224, 0),
    ("vit_base_patch14_dinov2", "dinov2", 518, 0),
    ("vit_large_patch14_dinov2", "dinov2", 518, 0),
    ("vit_base_patch16_clip_quickgelu_224", "clip", 224, 512),
    ("vit_base_patch32_clip_quickgelu_224", "clip", 224, 512),
    ("vit_base_patch32_clip_224", "open_clip", 224, 512),
]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "kind", "size", "classes"), CASES)
def test_key_map_and_vit_equal_timms_model(name, kind, size, classes):
    generator = torch.Generator().manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=classes, img_size=size).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.02)
        if classes:
            model.head.bias.zero_()  # a CLIP projection has none
    state, proj = timm_to_vit(dict(model.state_dict()), name)
    ours = build_vit(state, kind, size, name)
    x = torch.rand(2, 3, size, size, generator=generator)
    with torch.no_grad():
        tokens = model.norm_pre(model.patch_drop(model._pos_embed(model.patch_embed(x))))
        torch.testing.assert_close(ours(x), model.blocks(tokens), atol=1e-4, rtol=1e-4)
        if classes:
            torch.testing.assert_close(
                ours.norm(ours(x))[:, 0] @ proj,
                model.forward_head(model.forward_features(x)),
                atol=1e-4,
                rtol=1e-4,
            )
