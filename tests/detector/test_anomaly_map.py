"""Anomaly maps and frame scores from per-layer NLL maps."""

from __future__ import annotations

import pytest
import torch

from detector.anomaly_map import (
    STD_FLOOR,
    MapStatistics,
    anomaly_map,
    frame_score,
    gaussian_blur,
    nll_per_dim,
)


def _nll(seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(6, 8, 8, generator=g) * 2 + 5, torch.randn(6, 4, 4, generator=g) + 1]


def test_nll_per_dim_divides_by_width() -> None:
    out = nll_per_dim([torch.full((1, 2, 2), -10.0), torch.full((1, 1, 1), -30.0)], [5, 10])
    assert out[0].eq(2.0).all() and out[1].eq(3.0).all()


@pytest.mark.parametrize("position_norm", [False, True])
def test_statistics_round_trip(position_norm: bool) -> None:
    stats = MapStatistics.from_nll(_nll(), position_norm)
    assert stats.position_norm is position_norm
    back = MapStatistics.from_saved(stats.meta(), stats.tensors())
    assert back.layer_mean == stats.layer_mean and back.layer_std == stats.layer_std
    if position_norm:
        assert stats.position_std is not None and back.position_std is not None
        for a, b, s in zip(stats.position_std, back.position_std, stats.layer_std, strict=True):
            assert torch.equal(a, b)
            assert a.min() >= STD_FLOOR * s - 1e-6


@pytest.mark.parametrize("position_norm", [False, True])
def test_map_of_the_normal_mean_is_zero(position_norm: bool) -> None:
    nll = _nll()
    stats = MapStatistics.from_nll(nll, position_norm)
    if position_norm:
        assert stats.position_mean is not None
        mean = [m.unsqueeze(0) for m in stats.position_mean]
    else:
        mean = [torch.full((1, *m.shape[1:]), mu) for m, mu in zip(nll, stats.layer_mean, strict=True)]
    maps = anomaly_map(mean, stats, (32, 32))
    assert maps.shape == (1, 32, 32)
    assert maps.abs().max() < 1e-5


def test_map_is_per_frame() -> None:
    nll = _nll()
    stats = MapStatistics.from_nll(nll, True)
    together = anomaly_map(nll, stats, (32, 32), blur_sigma=2.0)
    alone = anomaly_map([m[3:4] for m in nll], stats, (32, 32), blur_sigma=2.0)
    torch.testing.assert_close(alone[0], together[3], atol=1e-6, rtol=0)


def test_blur_keeps_constants_and_mass() -> None:
    const = torch.full((2, 20, 24), 3.0)
    torch.testing.assert_close(gaussian_blur(const, 2.0), const)
    spike = torch.zeros(1, 41, 41)
    spike[0, 20, 20] = 1.0
    blurred = gaussian_blur(spike, 2.0)
    assert blurred.shape == spike.shape
    assert blurred.sum().item() == pytest.approx(1.0, abs=1e-5)
    assert blurred.max() < 0.1


def test_frame_score_reductions() -> None:
    maps = torch.arange(100.0).view(1, 10, 10)
    assert frame_score(maps, "max").item() == 99.0
    assert frame_score(maps, "topk", 0.05).item() == pytest.approx((95 + 96 + 97 + 98 + 99) / 5)
    assert frame_score(maps, "topk", 1e-9).item() == 99.0  # at least one pixel
    with pytest.raises(ValueError, match="unknown frame-score reduction"):
        frame_score(maps, "mean")  # type: ignore[arg-type]
