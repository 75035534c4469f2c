"""CFLOW-AD head: positional encoding, flow invertibility and exact log-likelihoods."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from detector.cflow import CFlowHead, conditional_flow, gaussian_log_prob, positional_encoding_2d
from detector.model import build_head


@pytest.fixture(autouse=True)
def _seeded() -> None:
    # FrEIA draws its soft permutations from numpy's global RNG.
    torch.manual_seed(0)
    np.random.seed(0)


# --------------------------------------------------------------------------- positional encoding


def test_positional_encoding_shape_and_bounds() -> None:
    enc = positional_encoding_2d(32, 5, 7)
    assert enc.shape == (32, 5, 7)
    assert torch.isfinite(enc).all()
    assert enc.min() >= -1.0 and enc.max() <= 1.0


def test_positional_encoding_sin_cos_pairs() -> None:
    channels, h, w = 16, 6, 9
    enc = positional_encoding_2d(channels, h, w)
    # Channels (2k, 2k+1) are a sin/cos pair at the same frequency, in both halves.
    sq = enc[0::2] ** 2 + enc[1::2] ** 2
    torch.testing.assert_close(sq, torch.ones_like(sq), atol=1e-6, rtol=0)


def test_positional_encoding_halves_encode_column_and_row() -> None:
    channels, h, w = 16, 6, 9
    enc = positional_encoding_2d(channels, h, w)
    half = channels // 2
    # First half varies only with the column, second half only with the row.
    assert torch.equal(enc[:half], enc[:half, :1].expand(-1, h, -1))
    assert torch.equal(enc[half:], enc[half:, :, :1].expand(-1, -1, w))
    # Position (0, 0): sin = 0, cos = 1.
    assert torch.equal(enc[0::2, 0, 0], torch.zeros(half))
    assert torch.equal(enc[1::2, 0, 0], torch.ones(half))


def test_positional_encoding_distinct_positions() -> None:
    enc = positional_encoding_2d(32, 16, 16).reshape(32, -1).T  # (positions, channels)
    dist = torch.cdist(enc, enc)
    off_diagonal = dist[~torch.eye(dist.shape[0], dtype=torch.bool)]
    assert off_diagonal.min() > 1e-3


@pytest.mark.parametrize("channels", [2, 6, 30, 129])
def test_positional_encoding_rejects_channels_not_divisible_by_4(channels: int) -> None:
    with pytest.raises(ValueError, match="divisible by 4"):
        positional_encoding_2d(channels, 4, 4)


# --------------------------------------------------------------------------- flows


def test_flow_is_invertible() -> None:
    flow = conditional_flow(16, 8, blocks=4).eval()
    x = torch.randn(64, 16)
    cond = torch.randn(64, 8)
    with torch.no_grad():
        z, log_det = flow(x, c=[cond])
        x_back, log_det_rev = flow(z, c=[cond], rev=True)
    assert z.shape == x.shape and log_det.shape == (64,)
    assert not torch.allclose(z, x, atol=1e-2)  # a fresh flow is not the identity
    torch.testing.assert_close(x_back, x, atol=1e-4, rtol=0)
    torch.testing.assert_close(log_det_rev, -log_det, atol=1e-4, rtol=0)


def test_flow_log_likelihood_matches_change_of_variables() -> None:
    dim, cond_dim = 4, 8
    flow = conditional_flow(dim, cond_dim, blocks=3).double().eval()
    x = torch.randn(1, dim, dtype=torch.float64)
    cond = torch.randn(1, cond_dim, dtype=torch.float64)

    def forward(v: torch.Tensor) -> torch.Tensor:
        return flow(v.unsqueeze(0), c=[cond])[0].squeeze(0)

    z, log_det = flow(x, c=[cond])
    jac = torch.autograd.functional.jacobian(forward, x.squeeze(0))
    sign, log_abs_det = torch.linalg.slogdet(jac)
    assert sign != 0
    base = torch.distributions.MultivariateNormal(
        torch.zeros(dim, dtype=torch.float64), torch.eye(dim, dtype=torch.float64)
    )
    expected = base.log_prob(z.detach().squeeze(0)) + log_abs_det
    torch.testing.assert_close(log_det.detach().squeeze(0), log_abs_det, atol=1e-3, rtol=0)
    torch.testing.assert_close(gaussian_log_prob(z, log_det).detach().squeeze(0), expected,
                               atol=1e-3, rtol=0)


def test_gaussian_log_prob_is_standard_normal() -> None:
    z = torch.randn(10, 5, dtype=torch.float64)
    expected = torch.distributions.MultivariateNormal(
        torch.zeros(5, dtype=torch.float64), torch.eye(5, dtype=torch.float64)
    ).log_prob(z)
    torch.testing.assert_close(gaussian_log_prob(z, torch.zeros(10, dtype=torch.float64)), expected)
    shift = torch.full((10,), 1.5, dtype=torch.float64)
    torch.testing.assert_close(gaussian_log_prob(z, shift), expected + 1.5)


# --------------------------------------------------------------------------- head


def _tiny_features(batch: int = 3) -> list[torch.Tensor]:
    return [torch.randn(batch, 6, 8, 8), torch.randn(batch, 10, 4, 4)]


def test_head_maps_have_one_value_per_position() -> None:
    head = CFlowHead([6, 10], cond_dim=8, blocks=2).eval()
    with torch.no_grad():
        maps = head(_tiny_features())
    assert [tuple(m.shape) for m in maps] == [(3, 8, 8), (3, 4, 4)]
    assert all(torch.isfinite(m).all() for m in maps)


def test_head_maps_do_not_depend_on_batch_or_chunking() -> None:
    head = CFlowHead([6, 10], cond_dim=8, blocks=2).eval()
    feats = _tiny_features(4)
    with torch.no_grad():
        together = head(feats)
        alone = head([f[2:3] for f in feats])
        head.chunk = 7  # chunks cut rows of one frame apart
        chunked = head(feats)
    for t, a, c in zip(together, alone, chunked, strict=True):
        torch.testing.assert_close(a[0], t[2], atol=1e-5, rtol=0)
        torch.testing.assert_close(c, t, atol=1e-5, rtol=0)


def test_head_fiber_log_prob_agrees_with_forward() -> None:
    head = CFlowHead([6], cond_dim=8, blocks=2).eval()
    feature = torch.randn(2, 6, 3, 5)
    with torch.no_grad():
        (log_map,) = head([feature])
        fibers, positions = head.fibers(feature)
        direct = head.fiber_log_prob(0, fibers, positions)
    assert fibers.shape == (30, 6) and positions.conditions(8, fibers).shape == (30, 8)
    # Fiber order is (batch, row, column), as in the map.
    torch.testing.assert_close(fibers[5 + 2], feature[0, :, 1, 2])
    torch.testing.assert_close(direct.view(2, 3, 5), log_map)


def test_build_head_from_config() -> None:
    head = CFlowHead([6, 10], cond_dim=8, blocks=2, clamp=1.5)
    rebuilt = build_head("cflow", head.config())
    assert rebuilt.config() == head.config()
    rebuilt.load_state_dict(head.state_dict(), strict=True)
    with pytest.raises(ValueError, match="unknown model kind 'nope'"):
        build_head("nope", {})


def _trained_like(head: CFlowHead) -> CFlowHead:
    """Move every parameter off its initial value (the last subnet layers start at zero)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in head.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return head


def _reference_log_prob(head: CFlowHead, layer: int, fibers: torch.Tensor, positions) -> torch.Tensor:
    z, log_det = head.reference_flow(layer, fibers, positions.conditions(head.cond_dim, fibers))
    return gaussian_log_prob(z, log_det)


def test_flow_with_cached_condition_projection_equals_freias_forward() -> None:
    head = _trained_like(CFlowHead([40, 112], cond_dim=32, blocks=3)).eval()
    features = [torch.randn(3, 40, 8, 8), torch.randn(3, 112, 4, 4)]
    with torch.no_grad():
        maps = head(features)
        for layer, feature in enumerate(features):
            fibers, positions = head.fibers(feature)
            ref = _reference_log_prob(head, layer, fibers, positions)
            torch.testing.assert_close(maps[layer].reshape(-1), ref, rtol=1e-5, atol=1e-4)
            # a shuffled subset (gathered projections) agrees too
            idx = torch.randperm(fibers.shape[0])[:50]
            sub = head.fiber_log_prob(layer, fibers[idx], positions[idx])
            torch.testing.assert_close(sub, ref[idx], rtol=1e-5, atol=1e-4)


def test_chunks_follow_frame_boundaries_and_do_not_change_the_maps() -> None:
    head = _trained_like(CFlowHead([6], cond_dim=8, blocks=2)).eval()
    feature = torch.randn(5, 6, 3, 4)
    with torch.no_grad():
        (whole,) = head([feature])
        head.chunk = 25  # two frames of 12 fibers per chunk
        chunks = head.chunks(head.fibers(feature)[1])
        assert [(s.start, s.stop) for s in chunks] == [(0, 24), (24, 48), (48, 72)]
        (chunked,) = head([feature])
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-6)


def test_training_gradients_equal_freias_and_the_cache_follows_the_weights() -> None:
    head = _trained_like(CFlowHead([6], cond_dim=8, blocks=2))
    ref_head = CFlowHead([6], cond_dim=8, blocks=2)
    ref_head.load_state_dict(head.state_dict())
    fibers, positions = head.fibers(torch.randn(2, 6, 3, 3))
    idx = torch.tensor([0, 4, 8, 13, 17])
    head.fiber_log_prob(0, fibers[idx], positions[idx]).sum().backward()
    _reference_log_prob(ref_head, 0, fibers[idx], positions[idx]).sum().backward()
    for (name, p), q in zip(head.named_parameters(), ref_head.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6, msg=name)
    # Inference caches the projections; an optimizer step changes the weights in place,
    # and the next inference sees the new weights.
    head.eval()
    with torch.no_grad():
        before = head.fiber_log_prob(0, fibers, positions)
    torch.optim.SGD(head.parameters(), lr=0.5).step()
    with torch.no_grad():
        after = head.fiber_log_prob(0, fibers, positions)
        ref_head.load_state_dict(head.state_dict())
        expected = _reference_log_prob(ref_head, 0, fibers, positions)
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, expected, rtol=1e-5, atol=1e-4)


def test_int8_heads_approximate_the_float_heads_and_refuse_training() -> None:
    torch.manual_seed(0)
    head = CFlowHead([16, 32], cond_dim=16, blocks=4).eval()
    feats = [torch.randn(2, 16, 8, 8), torch.randn(2, 32, 4, 4)]
    q = copy.deepcopy(head).quantize_int8()
    with torch.inference_mode():
        exact = head(feats)
        approx = q(feats)
        again = q([f[:1] for f in feats])
    for a, b in zip(approx, exact, strict=True):
        assert a.shape == b.shape
        assert float(((a - b).abs() / b.abs().clamp_min(1.0)).max()) < 0.05
    for a, b in zip(again, approx, strict=True):  # still independent of the batch
        assert torch.allclose(a, b[:1], atol=1e-5)
    with pytest.raises(RuntimeError, match="inference on whole frames only"):
        q(feats)
