"""SANFlow head: the inverse-gamma formulas, masks on the grids, the head and its loss."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import integrate, stats
from torch import nn

from detector.cflow import Positions
from detector.model import SceneModel, build_head
from detector.sanflow import (
    STATS_INPUTS,
    SANFlowHead,
    StatisticsNet,
    expected_log_prob,
    grid_masks,
    inverse_gamma_kl,
    mode_log_variance,
    prior_parameters,
    statistics_macs,
    variance_log_prob,
)


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)
    np.random.seed(0)  # FrEIA's soft permutations


# --------------------------------------------------------------------------- formulas


def test_prior_has_mode_xi() -> None:
    alpha, beta = prior_parameters(11, 0.1)
    assert alpha == pytest.approx(11**2 / 2 - 1) and beta == pytest.approx(11**2 * 0.1 / 2)
    assert beta / (alpha + 1) == pytest.approx(0.1)  # the inverse gamma's mode
    with pytest.raises(ValueError, match="p\\^2/2 > 1"):
        prior_parameters(1, 0.1)


@pytest.mark.parametrize(
    ("q", "p"),
    [((3.0, 2.0), (59.5, 6.05)), ((59.5, 6.05), (59.5, 6.05)), ((1.5, 0.3), (4.0, 1.0)),
     ((80.0, 2.0), (10.0, 5.0))],
)
def test_inverse_gamma_kl_matches_numeric_integral(q: tuple[float, float], p: tuple[float, float]) -> None:
    qd, pd = stats.invgamma(q[0], scale=q[1]), stats.invgamma(p[0], scale=p[1])

    def integrand(u: float) -> float:  # over u = log x: heavy tails of IG stay integrable
        x = math.exp(u)
        return qd.pdf(x) * x * (qd.logpdf(x) - pd.logpdf(x))

    lo, hi = math.log(qd.ppf(1e-14)), math.log(qd.isf(1e-14))
    numeric, _err = integrate.quad(integrand, lo, hi, points=[math.log(qd.median())], limit=500,
                                   epsabs=1e-12)
    kl = inverse_gamma_kl(torch.tensor(math.log(q[0]), dtype=torch.float64),
                          torch.tensor(math.log(q[1]), dtype=torch.float64), *p)
    assert float(kl) == pytest.approx(numeric, rel=1e-6, abs=1e-8)
    if q == p:
        assert float(kl) == pytest.approx(0.0, abs=1e-10)


@pytest.mark.parametrize("mean", [0.0, 1.0])
def test_expected_log_likelihood_matches_monte_carlo(mean: float) -> None:
    gen = torch.Generator().manual_seed(1)
    dim, samples = 6, 400_000
    z = torch.randn(3, dim, generator=gen, dtype=torch.float64) * 0.4
    log_det = torch.tensor([0.0, 1.5, -2.0], dtype=torch.float64)
    alpha = torch.tensor([59.5, 4.0, 2.5], dtype=torch.float64)
    beta = torch.tensor([6.05, 1.0, 0.2], dtype=torch.float64)
    formula = expected_log_prob(z, log_det, alpha.log(), beta.log(), mean)
    # sigma^2 ~ IG(alpha, beta)  <=>  1/sigma^2 ~ Gamma(alpha, rate beta)
    precision = torch.distributions.Gamma(alpha, beta).sample((samples,))  # (samples, 3)
    log_var = -precision.log()
    log_p = variance_log_prob(z.expand(samples, -1, -1).reshape(-1, dim), log_det.repeat(samples),
                              log_var.reshape(-1), mean).view(samples, 3)
    mc, se = log_p.mean(0), log_p.std(0) / math.sqrt(samples)
    assert torch.all((formula - mc).abs() < 5 * se + 1e-9), (formula, mc, se)


def test_variance_log_prob_is_a_scaled_normal() -> None:
    z = torch.randn(5, 4, dtype=torch.float64)
    var = torch.tensor([0.1, 0.5, 1.0, 2.0, 7.0], dtype=torch.float64)
    expected = torch.distributions.Normal(1.0, var.sqrt()[:, None]).log_prob(z).sum(1) + 0.25
    got = variance_log_prob(z, torch.full((5,), 0.25, dtype=torch.float64), var.log(), mean=1.0)
    torch.testing.assert_close(got, expected)


def test_mode_variance() -> None:
    la, lb = torch.tensor([0.3, 4.0]), torch.tensor([-1.0, 2.0])
    torch.testing.assert_close(mode_log_variance(la, lb).exp(), lb.exp() / (la.exp() + 1))


# --------------------------------------------------------------------------- masks on grids


@pytest.mark.parametrize("size", [64, 96])
def test_masks_land_on_the_right_grid_cells_at_every_scale(size: int) -> None:
    gen = torch.Generator().manual_seed(2)
    masks = torch.rand(3, size, size, generator=gen) > 0.7
    # A block covering exactly stride-8 cell (2, 5) in frame 0.
    masks[0] = False
    masks[0, 16:24, 40:48] = True
    sizes = [(size // 8, size // 8), (size // 16, size // 16), (size // 32, size // 32)]
    cells = grid_masks(masks, sizes)
    for (h, w), grid in zip(sizes, cells, strict=True):
        assert grid.shape == (3, h, w) and grid.dtype == torch.bool
        stride = size // h
        centre = stride // 2
        # Every cell reads the pixel at its centre.
        torch.testing.assert_close(grid, masks[:, centre::stride, centre::stride][:, :h, :w])
    assert cells[0][0].nonzero().tolist() == [[2, 5]]
    # The stride-16 cell (1, 2) has its centre (24, 40) just outside the block: nearest neighbour.
    assert not cells[1][0].any()
    # (B, 1, S, S) masks work the same.
    for a, b in zip(grid_masks(masks[:, None], sizes), cells, strict=True):
        assert torch.equal(a, b)


# --------------------------------------------------------------------------- head


def _head(**kw) -> SANFlowHead:
    return SANFlowHead([6, 10], cond_dim=8, blocks=2, stats_width=4, **kw)


def _inputs(batch: int = 3) -> tuple[list[torch.Tensor], torch.Tensor]:
    return [torch.randn(batch, 6, 8, 8), torch.randn(batch, 10, 4, 4)], torch.rand(batch, 3, 32, 32)


def test_untrained_head_predicts_the_prior_mode_everywhere() -> None:
    head = _head().eval()
    feats, images = _inputs()
    with torch.no_grad():
        maps = head(feats, images)
        for lv in head.log_variance_maps(feats, images):
            torch.testing.assert_close(lv, torch.full_like(lv, math.log(0.1)), atol=1e-6, rtol=0)
        # = a fixed-variance head with the same flows
        fixed = _head(fixed_variance=True).eval()
        fixed.flows.load_state_dict(head.flows.state_dict())
        for a, b in zip(maps, fixed(feats), strict=True):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-6)
    assert [tuple(m.shape) for m in maps] == [(3, 8, 8), (3, 4, 4)]


def test_head_needs_images_unless_the_variance_is_fixed() -> None:
    feats, images = _inputs()
    head = _head().eval()
    assert head.needs_images and head.stats is not None
    with pytest.raises(ValueError, match="needs the input images"):
        head(feats)
    fixed = _head(fixed_variance=True).eval()
    assert not fixed.needs_images and fixed.stats is None
    assert not any(k.startswith("stats.") for k in fixed.state_dict())
    with torch.no_grad():
        assert all(torch.isfinite(m).all() for m in fixed(feats))
    model = SceneModel("sanflow", head, "enc", "digest", 32)
    assert model.needs_images
    with pytest.raises(ValueError, match="needs the input images"):
        model.nll_maps(feats)


def _perturb_statistics(head: SANFlowHead) -> None:
    with torch.no_grad():
        head.stats.last.weight.normal_(0, 0.3)
        bn = head.stats.body[1]
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)


def test_head_maps_do_not_depend_on_batch_or_chunking() -> None:
    head = _head()
    _perturb_statistics(head)
    head.eval()
    feats, images = _inputs(4)
    with torch.no_grad():
        together = head(feats, images)
        alone = head([f[1:2] for f in feats], images[1:2])
        head.chunk = 7
        chunked = head(feats, images)
        variances = head.log_variance_maps(feats, images)
    assert float(variances[0].std()) > 1e-3  # the perturbed network varies the variance
    for t, a, c in zip(together, alone, chunked, strict=True):
        torch.testing.assert_close(a[0], t[1], atol=1e-5, rtol=1e-6)
        torch.testing.assert_close(c, t, atol=1e-5, rtol=1e-6)


def test_forward_is_the_normal_base_with_the_predicted_variance() -> None:
    head = _head()
    _perturb_statistics(head)
    head.eval()
    feats, images = _inputs(2)
    with torch.no_grad():
        (log_map, _) = head(feats, images)
        (log_var, _) = head.log_variance_maps(feats, images)
        fibers, positions = head.fibers(feats[0])
        z, log_det = head.reference_flow(0, fibers, positions.conditions(head.cond_dim, fibers))
        dim = z.shape[1]
        var = log_var.reshape(-1).exp()
        direct = (-0.5 * dim * math.log(2 * math.pi) - 0.5 * dim * var.log()
                  - z.pow(2).sum(1) / (2 * var) + log_det)
    torch.testing.assert_close(log_map.reshape(-1), direct, atol=1e-4, rtol=1e-5)


def test_build_head_from_config_round_trip() -> None:
    head = _head(prior_mode=0.2, prior_window=7)
    rebuilt = build_head("sanflow", head.config())
    assert rebuilt.config() == head.config()
    assert rebuilt.config()["fixed_variance"] is False and rebuilt.config()["stats_width"] == 4
    rebuilt.load_state_dict(head.state_dict(), strict=True)


def test_an_old_head_config_builds_the_full_resolution_network() -> None:
    config = _head().config()
    assert config["stats_input"] == "full"
    del config["stats_input"]  # what checkpoints written before the setting hold
    assert build_head("sanflow", config).stats_input == "full"
    with pytest.raises(ValueError, match="'sixteenth'.*full, half, quarter, eighth"):
        _head(stats_input="sixteenth")


@pytest.mark.parametrize("stats_input", ["half", "quarter", "eighth"])
def test_cheaper_statistics_network_reads_the_downscaled_image(stats_input: str) -> None:
    full = _head()
    _perturb_statistics(full)
    full.eval()
    cheap = _head(stats_input=stats_input).eval()
    cheap.load_state_dict(full.state_dict(), strict=True)  # same weights, any input size
    assert cheap.config()["stats_input"] == stats_input
    feats, images = _inputs(2)
    sizes = [tuple(f.shape[2:]) for f in feats]
    factor = STATS_INPUTS[stats_input]
    small = F.interpolate(images, size=(32 // factor, 32 // factor), mode="area")
    with torch.no_grad():
        got = cheap.statistics_maps(images, sizes)
        expected = full.statistics_maps(small, sizes)
        assert [tuple(g.shape) for g in got] == [(2, 2, 8, 8), (2, 2, 4, 4)]
        for g, e in zip(got, expected, strict=True):
            torch.testing.assert_close(g, e)
        # ... which is not what the full-resolution network predicts
        assert not torch.allclose(got[0], full.statistics_maps(images, sizes)[0], atol=1e-4)
        assert all(torch.isfinite(m).all() for m in cheap(feats, images))


def test_statistics_cost_shrinks_with_the_square_of_the_factor() -> None:
    # The paper's network at 256 x 256: 7.4 GMAC per frame.
    assert statistics_macs(256) == 256 * 256 * 9 * (3 * 64 + 3 * 64 * 64 + 64 * 2)
    assert statistics_macs(256) / 1e9 == pytest.approx(7.44, abs=0.01)
    for name, factor in STATS_INPUTS.items():
        assert statistics_macs(256, stats_input=name) * factor**2 == statistics_macs(256)
    # The formula counts what the network's convolutions do.
    net, counted = StatisticsNet(8), []

    def count(module: nn.Conv2d, _inp: tuple, out: torch.Tensor) -> None:
        counted.append(out.numel() * module.in_channels * module.kernel_size[0] * module.kernel_size[1])

    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            m.register_forward_hook(count)
    with torch.no_grad():
        net(torch.rand(1, 3, 16, 16))
    assert sum(counted) == statistics_macs(64, width=8, stats_input="quarter")


# --------------------------------------------------------------------------- loss


def _loss_inputs(head: SANFlowHead, n: int = 64):
    fibers, cond = torch.randn(n, 6) * 0.3, Positions((8, n // 8), torch.randperm(n))
    raw = (torch.randn(n, 2) * 0.5).requires_grad_()
    anomalous = torch.zeros(n, dtype=torch.bool)
    anomalous[: n // 4] = True
    return fibers, cond, raw, anomalous


def test_loss_terms_and_their_switches() -> None:
    head = _head()
    fibers, cond, raw, anomalous = _loss_inputs(head)
    loss, parts = head.fiber_loss(0, fibers, cond, raw, anomalous, 1.0, 0.2)
    assert torch.isfinite(loss)
    assert set(parts) == {"nll", "bce", "kl", "nll_per_dim"}
    expected = (parts["nll"] + parts["bce"] + 0.2 * parts["kl"]).mean()
    torch.testing.assert_close(loss.detach(), expected)
    assert (parts["kl"] > 0).all()
    no_bce, _ = head.fiber_loss(0, fibers, cond, raw, anomalous, 0.0, 0.2)
    no_kl, _ = head.fiber_loss(0, fibers, cond, raw, anomalous, 1.0, 0.0)
    torch.testing.assert_close(no_bce.detach(), (parts["nll"] + 0.2 * parts["kl"]).mean())
    torch.testing.assert_close(no_kl.detach(), (parts["nll"] + parts["bce"]).mean())
    # The BCE is on s(z) = p_n / (p_n + p_a) with per-dimension likelihoods: compare directly.
    z, log_det = head.flow(0, fibers, cond)
    la, lb = head.log_alpha_beta(raw.detach())
    lp_n = expected_log_prob(z, log_det, la, lb, 0.0) / 6
    lp_a = expected_log_prob(z, log_det, la, lb, 1.0) / 6
    # log s and log(1 - s) for s = p_n / (p_n + p_a), evaluated without underflow
    log_total = torch.logaddexp(lp_n, lp_a)
    target = (~anomalous).float()
    bce = -(target * (lp_n - log_total) + (1 - target) * (lp_a - log_total))
    torch.testing.assert_close(parts["bce"], bce.detach(), atol=1e-4, rtol=1e-4)


def test_margin_is_the_mean_of_the_anomalies_base() -> None:
    head = _head()
    fibers, cond, raw, anomalous = _loss_inputs(head)
    default, parts = head.fiber_loss(0, fibers, cond, raw, anomalous)
    one, _ = head.fiber_loss(0, fibers, cond, raw, anomalous, margin=1.0)
    torch.testing.assert_close(default, one)
    loss, two = head.fiber_loss(0, fibers, cond, raw, anomalous, margin=2.0)
    z, log_det = head.flow(0, fibers, cond)
    la, lb = head.log_alpha_beta(raw.detach())
    lp_n = expected_log_prob(z, log_det, la, lb, 0.0) / 6
    lp_a = expected_log_prob(z, log_det, la, lb, 2.0) / 6
    log_total = torch.logaddexp(lp_n, lp_a)
    target = (~anomalous).float()
    bce = -(target * (lp_n - log_total) + (1 - target) * (lp_a - log_total))
    torch.testing.assert_close(two["bce"], bce.detach(), atol=1e-4, rtol=1e-4)
    nll = -F.logsigmoid(torch.where(anomalous, lp_a, lp_n))
    torch.testing.assert_close(two["nll"], nll.detach(), atol=1e-5, rtol=1e-5)
    # Normal fibers do not see the margin in their NLL.
    torch.testing.assert_close(two["nll"][~anomalous], parts["nll"][~anomalous])
    fixed = _head(fixed_variance=True)
    _, fixed_two = fixed.fiber_loss(0, fibers, cond, None, anomalous, margin=2.0)
    z, log_det = fixed.flow(0, fibers, cond)
    lp = variance_log_prob(z, log_det, math.log(0.1), 2.0) / 6
    torch.testing.assert_close(fixed_two["nll"][anomalous], -F.logsigmoid(lp[anomalous]).detach())


def test_anomalies_train_the_variance_only_through_the_kl() -> None:
    head = _head()
    fibers, cond, raw, anomalous = _loss_inputs(head)
    loss, _ = head.fiber_loss(0, fibers, cond, raw, anomalous, bce_weight=1.0, kl_weight=0.0)
    loss.backward()
    assert raw.grad is not None
    assert torch.all(raw.grad[anomalous] == 0)
    assert torch.all(raw.grad[~anomalous].abs().sum(1) > 0)
    raw.grad = None
    loss, _ = head.fiber_loss(0, fibers, cond, raw, anomalous, bce_weight=1.0, kl_weight=0.2)
    loss.backward()
    assert torch.all(raw.grad[anomalous].abs().sum(1) > 0)


def test_fixed_variance_loss_has_no_kl() -> None:
    head = _head(fixed_variance=True)
    fibers, cond, _raw, anomalous = _loss_inputs(head)
    loss, parts = head.fiber_loss(0, fibers, cond, None, anomalous)
    assert torch.isfinite(loss) and torch.all(parts["kl"] == 0)
    with pytest.raises(ValueError, match="raw_stats is required"):
        _head().fiber_loss(0, fibers, cond, None, anomalous)


# --------------------------------------------------------------------------- in the system


@pytest.fixture(scope="module")
def sanflow_model(encoder, clip_frames) -> SceneModel:
    from tests.conftest import TINY_SIZE, resize, tiny_settings
    from training.train import train_scene

    small = resize(clip_frames, TINY_SIZE)
    settings = tiny_settings(model="sanflow", sanflow_stats_width=8)
    return train_scene(encoder, small[:24], small[24:32], settings, progress=False).model


def test_sanflow_scene_checkpoint_scorer_and_worker(
    encoder, scene_model: SceneModel, sanflow_model: SceneModel, clip_frames, tmp_path
) -> None:
    import threading

    from prometheus_client import CollectorRegistry

    from common.bus import InProcessBus
    from common.messages import FRAMES_TOPIC, SCORES_TOPIC, FrameMessage, ScoreMessage
    from detector.checkpoint import load_scene, save_scene
    from detector.scorer import FrameScorer
    from detector.worker import DetectorMetrics, DetectorSettings, DetectorWorker
    from scenes.registry import SceneRegistry

    registry = SceneRegistry(tmp_path / "scenes")
    save_scene(registry, "gate", sanflow_model, {"training": {"note": "tiny"}})
    save_scene(registry, "hall", scene_model, {"training": {"note": "tiny"}})
    loaded, meta = load_scene(registry, "gate")
    assert meta["kind"] == "sanflow" and meta["head"]["stats_width"] == 8
    assert loaded.needs_images and isinstance(loaded.head, SANFlowHead)
    for key, value in sanflow_model.head.state_dict().items():
        assert torch.equal(loaded.head.state_dict()[key], value), key
    # Scores: the same before and after the round trip, independent of the batch.
    before = FrameScorer(encoder, sanflow_model, "gate").score_batch(clip_frames[:3])
    scorer = FrameScorer(encoder, loaded, "gate")
    after = scorer.score_batch(clip_frames[:3])
    assert [r.score for r in after] == pytest.approx([r.score for r in before], abs=1e-6)
    (alone,) = scorer.score_batch([clip_frames[1]])
    assert alone.score == pytest.approx(after[1].score, abs=1e-5)
    np.testing.assert_allclose(alone.anomaly_map, after[1].anomaly_map, atol=1e-5)
    # The detector worker scores CFLOW and SANFlow scenes in one micro-batch.
    bus = InProcessBus(partitions=1)
    producer = bus.producer()
    for seq in range(4):
        scene = ("gate", "hall")[seq % 2]
        msg = FrameMessage.from_image(clip_frames[seq], camera=f"cam-{scene}", scene=scene, seq=seq,
                                      ts=1_700_000_000_000 + seq, source="replay")
        producer.send(FRAMES_TOPIC, *msg.to_record())
    worker = DetectorWorker(bus.consumer("det", [FRAMES_TOPIC]), producer, encoder, registry,
                            DetectorSettings(batch_size=8, max_wait_ms=0),
                            DetectorMetrics(CollectorRegistry()), threading.Event())
    assert worker.process(worker.poll_batch()) == 4
    consumer = bus.consumer("check", [SCORES_TOPIC])
    scores = [ScoreMessage.from_record(r.key, r.value, r.headers) for r in consumer.poll(100, 200)]
    assert sorted(s.model.split(":")[1] for s in scores) == ["cflow", "cflow", "sanflow", "sanflow"]
    for s in scores:
        if s.scene == "gate":
            image = FrameMessage.from_image(clip_frames[s.seq], camera="x", scene="x", seq=0, ts=0,
                                            source="replay").image()
            assert s.score == pytest.approx(scorer.score_batch([image])[0].score, abs=1e-4)


def test_checkpoint_records_the_statistics_input(encoder, sanflow_model: SceneModel, clip_frames,
                                                 tmp_path) -> None:
    import dataclasses
    import json

    from detector.checkpoint import load_checkpoint, save_checkpoint, to_checkpoint
    from detector.scorer import FrameScorer
    from scenes.checkpoint import write_checkpoint

    frames = clip_frames[:2]
    before = FrameScorer(encoder, sanflow_model).score_batch(frames)
    # A checkpoint written before the setting existed has no stats_input: it is the full network.
    tensors, meta = to_checkpoint(sanflow_model)
    assert meta["head"]["stats_input"] == "full"
    del meta["head"]["stats_input"]
    old, _ = load_checkpoint(write_checkpoint(tmp_path / "old", tensors, meta))
    assert old.head.stats_input == "full" and old.head.stats_factor == 1
    after = FrameScorer(encoder, old).score_batch(frames)
    assert [r.score for r in after] == pytest.approx([r.score for r in before], abs=1e-6)
    # A quarter-resolution head keeps its choice through a checkpoint.
    head = build_head("sanflow", {**sanflow_model.head.config(), "stats_input": "quarter"})
    head.load_state_dict(sanflow_model.head.state_dict(), strict=True)
    quarter = dataclasses.replace(sanflow_model, head=head.eval())
    folder = save_checkpoint(quarter, tmp_path / "quarter")
    assert json.loads((folder / "meta.json").read_text())["head"]["stats_input"] == "quarter"
    loaded, _ = load_checkpoint(folder)
    assert loaded.head.stats_input == "quarter"
    q_before = FrameScorer(encoder, quarter).score_batch(frames)
    q_after = FrameScorer(encoder, loaded).score_batch(frames)
    assert [r.score for r in q_after] == pytest.approx([r.score for r in q_before], abs=1e-6)
    assert not np.allclose([r.raw for r in q_after], [r.raw for r in before], atol=1e-3)


def test_scoring_with_the_prior_variance_needs_no_images_and_equals_a_fixed_variance_likelihood() -> None:
    head = _head()
    _perturb_statistics(head)
    head.eval()
    feats, images = _inputs(2)
    with torch.no_grad():
        learned = head(feats, images)
        head.score_variance = "prior"
        assert not head.needs_images and head.config()["score_variance"] == "prior"
        prior = head(feats, None)
        fixed = _head(fixed_variance=True)
        fixed.load_state_dict({k: v for k, v in head.state_dict().items() if not k.startswith("stats.")})
        expected = fixed.eval()(feats, None)
    for a, b in zip(prior, expected, strict=True):
        torch.testing.assert_close(a, b)
    assert any(not torch.allclose(a, b) for a, b in zip(prior, learned, strict=True))
    with pytest.raises(ValueError, match="score_variance"):
        _head(score_variance="posterior")
