"""Encoders: real packaged weights, and clear errors for missing or wrong weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from detector.encoders import ENCODERS, Encoder, WeightsError, encoder_names, weights_digest
from tests.conftest import TINY_SIZE


def _timm_state(name: str) -> dict[str, torch.Tensor]:
    import timm

    return timm.create_model(name, pretrained=False).state_dict()


def test_packaged_encoder_features(encoder: Encoder) -> None:
    assert encoder.name == "tf_efficientnet_lite0"
    assert encoder.channels == [40, 112, 320]
    assert encoder.reductions == [8, 16, 32]
    assert len(encoder.digest) == 16
    images = torch.rand(2, 3, TINY_SIZE, TINY_SIZE)
    feats = encoder(images)
    assert [tuple(f.shape) for f in feats] == [
        (2, c, TINY_SIZE // r, TINY_SIZE // r)
        for c, r in zip(encoder.channels, encoder.reductions, strict=True)
    ]
    assert not any(p.requires_grad for p in encoder.parameters())


def test_encoder_stays_in_eval_mode(encoder: Encoder) -> None:
    encoder.train()
    try:
        assert not encoder.backbone.training
    finally:
        encoder.eval()


def test_encoder_names() -> None:
    assert set(encoder_names()) == set(ENCODERS)
    with pytest.raises(WeightsError, match="unknown encoder 'nope'"):
        Encoder("nope")


def test_missing_weights_file_names_the_path() -> None:
    with pytest.raises(WeightsError, match="/nonexistent.pth"):
        Encoder("resnet18", "/nonexistent.pth")


def test_encoder_without_packaged_weights_needs_a_file() -> None:
    with pytest.raises(WeightsError, match="weights"):
        Encoder("resnet18")


def test_unreadable_weights_file(tmp_path: Path) -> None:
    bad = tmp_path / "garbage.pth"
    bad.write_bytes(b"this is not a checkpoint")
    with pytest.raises(WeightsError, match="garbage.pth"):
        Encoder("resnet18", bad)


def test_weights_of_another_model_are_rejected(tmp_path: Path) -> None:
    path = tmp_path / "mobilenet.pth"
    torch.save(_timm_state("mobilenetv3_large_100"), path)
    with pytest.raises(WeightsError, match="not weights for this encoder"):
        Encoder("resnet18", path)


def test_weights_of_another_model_are_rejected_by_order(tmp_path: Path) -> None:
    path = tmp_path / "resnet18.pth"
    torch.save(_timm_state("resnet18"), path)
    with pytest.raises(WeightsError, match="not weights for this encoder"):
        Encoder("tf_efficientnet_lite0", path)


def test_encoder_from_a_user_weights_file(tmp_path: Path) -> None:
    state = _timm_state("resnet18")
    path = tmp_path / "resnet18.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    enc = Encoder("resnet18", path)
    assert enc.channels == [128, 256, 512]
    assert enc.digest == Encoder("resnet18", path).digest


@pytest.mark.parametrize("name", ["resnet18", "tf_efficientnet_lite0"])
def test_batch_norms_are_folded_with_the_same_features_and_digest(tmp_path: Path, name: str) -> None:
    import timm

    full = timm.create_model(name, pretrained=False)
    gen = torch.Generator().manual_seed(0)
    for m in full.modules():  # statistics unlike the identity a fresh model has
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
    path = tmp_path / f"{name}.pth"
    torch.save(full.state_dict(), path)
    enc = Encoder(name, path)
    spec = ENCODERS[name]
    plain = timm.create_model(spec.timm_name, pretrained=False, features_only=True, out_indices=spec.layers)
    plain.load_state_dict(full.state_dict(), strict=False)
    plain.eval()
    assert enc.digest == weights_digest(plain)  # the digest is of the weights as loaded
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in enc.backbone.modules())
    x = torch.rand(2, 3, TINY_SIZE, TINY_SIZE)
    with torch.no_grad():
        want = plain((x - enc.mean) / enc.std)
    for got, ref in zip(enc(x), want, strict=True):
        assert float((got - ref).abs().max() / ref.abs().max()) < 1e-5


def test_weights_of_a_deeper_sibling_are_rejected(tmp_path: Path) -> None:
    path = tmp_path / "resnet34.pth"
    torch.save(_timm_state("resnet34"), path)
    with pytest.raises(WeightsError):
        Encoder("resnet18", path)
