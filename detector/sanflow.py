"""SANFlow heads: CFLOW-AD's conditional flows with semantic-aware base distributions.

Kim, Baik, Kim, "SANFlow: Semantic-Aware Normalizing Flow for Anomaly Detection and
Localization", NeurIPS 2023. The flows are CFLOW-AD's (:mod:`detector.cflow`); what changes
is the base distribution. A small statistics network ``h`` reads the input image and
predicts, at every location, the parameters (α, β) of an inverse-gamma distribution over
the variance σ² of that location's base distribution. Normal fibers are mapped to
N(0, σ² I), synthetic anomalies (:mod:`training.augment`) to N(m, σ² I) (the margin m, 1
in every dimension by default). Training (:mod:`training.train`) maximises the likelihood
in its expectation form over σ² ~ IG(α, β) (per dimension)::

    E log N(z; μ, σ²) = -½ log 2π - ½ (log β - ψ(α)) - α/(2β) (z - μ)²

plus log|det J|, adds a binary cross-entropy on s(z) = p_normal / (p_normal + p_anomaly)
and the KL divergence of IG(α, β) from the prior IG(p²/2 - 1, p² ξ/2), whose mode is ξ.

Scoring (the paper's Eq. 6) uses only the normal base, with the variance the statistics
network predicts for the frame (the mode β/(α + 1) of its inverse gamma)::

    log p(x) = -(D/2) (log 2π + log σ²) - ||z||² / (2σ²) + log|det J|

so the head's ``forward`` returns per-layer log-likelihood maps in nats like CFLOW's, and
everything downstream (normal statistics, calibration, checkpoints, the worker) is shared.
The head needs the input images besides the features (``needs_images``), unless it was
trained with a fixed variance (the ablation without the statistics network: σ² = ξ
everywhere).

Cost: by default (``stats_input="full"``) the statistics network runs at the full input
resolution, as in the paper and its code; at 256 × 256 with 64 filters that is about
7.4 GMAC per frame -- over ten times the default EfficientNet-Lite0 encoder, about half a
WRN-50 -- and the flows are unchanged. The variance is only read at the feature grids
(strides 8, 16 and 32), so ``stats_input`` may run the network on the image downscaled by
2, 4 or 8 (area averaging): a quarter, a sixteenth or a sixty-fourth of the cost, with a
receptive field that many times wider in image pixels. That is a deviation from the
paper, recorded in the checkpoint's head config (a checkpoint without it is ``full``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from detector.cflow import LOG_2PI, CFlowHead, Positions

# The statistics network predicts log α and log β as offsets from the prior's, softly
# bounded to ± this many nats: at most a factor e^8 ~ 3000 either way.
STATS_RANGE = 8.0
# Input normalisation of the statistics network: images in [0, 1] -> about [-2, 2].
IMAGE_CENTER, IMAGE_SCALE = 0.5, 0.25
#: The statistics network's input: the image downscaled by this factor (``stats_input``).
STATS_INPUTS: dict[str, int] = {"full": 1, "half": 2, "quarter": 4, "eighth": 8}


def stats_input_factor(name: str) -> int:
    """The downscaling factor of a ``stats_input`` name; a ValueError names an unknown one."""
    if name not in STATS_INPUTS:
        raise ValueError(f"unknown SANFlow stats_input {name!r}; known: {', '.join(STATS_INPUTS)}")
    return STATS_INPUTS[name]


def statistics_macs(size: int, width: int = 64, layers: int = 5, stats_input: str = "full") -> int:
    """Multiply-accumulates of one frame through :class:`StatisticsNet` at a ``size`` x
    ``size`` input (its 3×3 convolutions; batch norms and ReLUs left out)."""
    side = max(1, size // stats_input_factor(stats_input))
    per_pixel = 9 * (3 * width + (layers - 2) * width * width + width * 2)
    return side * side * per_pixel


def prior_parameters(window: int, mode: float) -> tuple[float, float]:
    """The prior IG(α, β) over a location's variance: α = p²/2 - 1, β = p² ξ / 2.

    ``window`` is p (the official code uses 11), ``mode`` is ξ: the mode β/(α + 1) of the
    prior is exactly ξ.
    """
    alpha = window**2 / 2 - 1
    if alpha <= 0:
        raise ValueError(f"prior window p must satisfy p^2/2 > 1, got p = {window}")
    if mode <= 0:
        raise ValueError(f"prior mode must be positive, got {mode}")
    return alpha, window**2 * mode / 2


def inverse_gamma_kl(
    log_alpha: torch.Tensor, log_beta: torch.Tensor, prior_alpha: float, prior_beta: float
) -> torch.Tensor:
    """KL(IG(α, β) || IG(α₀, β₀)), elementwise, from log α and log β.

    (α - α₀) ψ(α) - log Γ(α) + log Γ(α₀) + α₀ (log β - log β₀) + α (β₀ - β) / β
    (the gamma KL of 1/σ², which the bijection σ² -> 1/σ² leaves unchanged).
    """
    alpha = log_alpha.exp()
    return (
        (alpha - prior_alpha) * torch.digamma(alpha)
        - torch.lgamma(alpha)
        + math.lgamma(prior_alpha)
        + prior_alpha * (log_beta - math.log(prior_beta))
        + prior_beta * torch.exp(log_alpha - log_beta)
        - alpha
    )


def expected_log_prob(
    z: torch.Tensor,
    log_det: torch.Tensor,
    log_alpha: torch.Tensor,
    log_beta: torch.Tensor,
    mean: float = 0.0,
) -> torch.Tensor:
    """E over σ² ~ IG(α, β) of log N(z; mean, σ² I), plus log|det J|, per fiber (nats).

    ``z`` (N, D), ``log_det``, ``log_alpha``, ``log_beta`` (N,). Uses E[log σ²] = log β - ψ(α)
    and E[1/σ²] = α/β.
    """
    dim = z.shape[1]
    per_dim = -0.5 * LOG_2PI - 0.5 * (log_beta - torch.digamma(log_alpha.exp()))
    return dim * per_dim - 0.5 * torch.exp(log_alpha - log_beta) * (z - mean).pow(2).sum(1) + log_det


def variance_log_prob(
    z: torch.Tensor, log_det: torch.Tensor, log_var: torch.Tensor | float, mean: float = 0.0
) -> torch.Tensor:
    """log N(z; mean, σ² I) + log|det J| per fiber (nats), with log σ² per fiber or scalar."""
    dim = z.shape[1]
    log_var = torch.as_tensor(log_var, dtype=z.dtype, device=z.device)
    return -0.5 * (dim * (LOG_2PI + log_var) + (z - mean).pow(2).sum(1) * torch.exp(-log_var)) + log_det


def mode_log_variance(log_alpha: torch.Tensor, log_beta: torch.Tensor) -> torch.Tensor:
    """log of the inverse gamma's mode β / (α + 1)."""
    return log_beta - F.softplus(log_alpha)


def grid_masks(masks: torch.Tensor, sizes: Sequence[tuple[int, int]]) -> list[torch.Tensor]:
    """Pixel masks (B, S, S) or (B, 1, S, S) -> boolean masks (B, H_l, W_l) per grid.

    Nearest neighbour at the cell centre: a grid cell is anomalous when the pixel at its
    centre is (``nearest-exact``; plain ``nearest`` would read the cell's top-left pixel).
    """
    m = masks.float()
    if m.dim() == 3:
        m = m.unsqueeze(1)
    return [F.interpolate(m, size=tuple(s), mode="nearest-exact").squeeze(1) > 0.5 for s in sizes]


class StatisticsNet(nn.Module):
    """h: five 3×3 convolutions (``width`` filters) with a skip connection, two outputs.

    As in the official code (a short DnCNN): conv-ReLU, three conv-BN-ReLU, and a last conv
    that reads the sum of the first layer's output (the skip) and the third block's. The
    two output channels are offsets of log α and log β from the prior's; the last layer
    starts at zero, so an untrained network predicts the prior everywhere.
    """

    def __init__(self, width: int = 64, layers: int = 5) -> None:
        super().__init__()
        self.first = nn.Conv2d(3, width, 3, padding=1, bias=False)
        body: list[nn.Module] = []
        for _ in range(layers - 2):
            body += [nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                     nn.ReLU(inplace=True)]
        self.body = nn.Sequential(*body)
        self.last = nn.Conv2d(width, 2, 3, padding=1, bias=False)
        nn.init.zeros_(self.last.weight)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.first((images - IMAGE_CENTER) / IMAGE_SCALE))
        return self.last(self.body(x) + x)


class SANFlowHead(CFlowHead):
    """CFLOW-AD's per-layer conditional flows plus SANFlow's statistics network.

    ``forward(features, images)`` returns log-likelihood maps (B, H_l, W_l) in nats under the
    normal base N(0, σ² I) with the variance predicted from ``images`` (B, 3, S, S) in
    [0, 1] (the input the encoder saw). With ``fixed_variance`` there is no statistics
    network, σ² = ``prior_mode`` everywhere and no images are needed. In eval mode a
    frame's maps depend on that frame only (the network's batch norms use running
    statistics).
    """

    kind = "sanflow"

    def __init__(
        self,
        feature_dims: Sequence[int],
        cond_dim: int = 128,
        blocks: int = 8,
        clamp: float = 1.9,
        chunk: int = 4096,
        stats_width: int = 64,
        prior_mode: float = 0.1,
        prior_window: int = 11,
        fixed_variance: bool = False,
        stats_input: str = "full",
        score_variance: str = "learned",
    ) -> None:
        super().__init__(feature_dims, cond_dim, blocks, clamp, chunk)
        if score_variance not in ("learned", "prior"):
            raise ValueError(f"score_variance must be 'learned' or 'prior', got {score_variance!r}")
        self.score_variance = score_variance
        self.stats_factor = stats_input_factor(stats_input)
        self.stats_input = stats_input
        self.stats_width = stats_width
        self.prior_mode = prior_mode
        self.prior_window = prior_window
        self.fixed_variance = fixed_variance
        self.prior_alpha, self.prior_beta = prior_parameters(prior_window, prior_mode)
        self.stats = None if fixed_variance else StatisticsNet(stats_width)

    @property
    def needs_images(self) -> bool:
        return not self.fixed_variance and self.score_variance == "learned"

    def config(self) -> dict:
        return {
            **super().config(),
            "stats_width": self.stats_width,
            "prior_mode": self.prior_mode,
            "prior_window": self.prior_window,
            "fixed_variance": self.fixed_variance,
            "stats_input": self.stats_input,
            "score_variance": self.score_variance,
        }

    # ------------------------------------------------------------------ variance
    def statistics_maps(self, images: torch.Tensor, sizes: Sequence[tuple[int, int]]) -> list[torch.Tensor]:
        """The statistics network's raw output (B, 2, H_l, W_l), area-averaged to each grid.

        The network reads ``images`` downscaled by the ``stats_input`` factor (area
        averaging; ``full``: the images as they are)."""
        if self.stats is None:
            raise RuntimeError("a fixed-variance SANFlow head has no statistics network")
        if self.stats_factor > 1:
            f = self.stats_factor
            h, w = images.shape[-2:]
            images = F.interpolate(images, size=(max(1, h // f), max(1, w // f)), mode="area")
        raw = self.stats(images)
        return [F.interpolate(raw, size=tuple(s), mode="area") for s in sizes]

    def log_alpha_beta(self, raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw statistics (..., 2) -> (log α, log β), softly bounded around the prior."""
        bounded = STATS_RANGE * torch.tanh(raw / STATS_RANGE)
        return (bounded[..., 0] + math.log(self.prior_alpha), bounded[..., 1] + math.log(self.prior_beta))

    def _prior_log_variance(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """log σ² = log of the prior mode at every location of every grid."""
        return [torch.full((f.shape[0], *f.shape[2:]), math.log(self.prior_mode)).to(f) for f in features]

    def log_variance_maps(
        self, features: Sequence[torch.Tensor], images: torch.Tensor | None
    ) -> list[torch.Tensor]:
        """log σ² per location (B, H_l, W_l): the mode of the predicted inverse gamma."""
        if self.stats is None:
            return self._prior_log_variance(features)
        if images is None:
            raise ValueError("SANFlow needs the input images to predict its variances (images=None)")
        sizes = [tuple(f.shape[2:]) for f in features]
        out = []
        for raw in self.statistics_maps(images.to(features[0]), sizes):
            log_alpha, log_beta = self.log_alpha_beta(raw.permute(0, 2, 3, 1))
            out.append(mode_log_variance(log_alpha, log_beta))
        return out

    def forward(
        self, features: Sequence[torch.Tensor], images: torch.Tensor | None = None
    ) -> list[torch.Tensor]:
        maps = []
        if self.score_variance == "prior":  # the network shaped training only; score with σ² = ξ
            log_vars = self._prior_log_variance(features)
        else:
            log_vars = self.log_variance_maps(features, images)
        for layer, (feature, log_var) in enumerate(zip(features, log_vars, strict=True)):
            b, _, h, w = feature.shape
            fibers, positions = self.fibers(feature)
            lv = log_var.reshape(-1)
            parts = []
            for sl in self.chunks(positions):
                z, log_det = self.flow(layer, fibers[sl], positions[sl])
                parts.append(variance_log_prob(z, log_det, lv[sl]))
            maps.append(torch.cat(parts).view(b, h, w))
        return maps

    # ------------------------------------------------------------------ training
    def fiber_loss(
        self,
        layer: int,
        fibers: torch.Tensor,
        positions: Positions,
        raw_stats: torch.Tensor | None,
        anomalous: torch.Tensor,
        bce_weight: float = 1.0,
        kl_weight: float = 0.2,
        margin: float = 1.0,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """SANFlow's training loss on a fiber batch, and its parts (detached, per fiber).

        ``raw_stats`` (N, 2): the statistics network's output at the fibers' locations (None
        for a fixed-variance head); ``anomalous`` (N,) bool: the fiber is inside a synthetic
        anomaly. Every term is per feature dimension, as CFLOW-AD's -log σ(log p / D):

        - NLL: -log σ(E log p / D) under N(0, σ²) at normal fibers, N(m, σ²) at anomalous
          ones, m = ``margin`` in every dimension (the paper's and its code's: 1);
        - BCE of s(z) = p̄_n / (p̄_n + p̄_a), p̄ = p^(1/D) (per-dimension likelihoods), against
          "normal", with σ² from the network but not trained by this term;
        - KL(IG(α, β) || prior) / D at every fiber (the ELBO's one KL per location, shared by
          its D dimensions).

        At anomalous fibers α and β get gradient only from the KL: anomalies never teach the
        network to inflate the variance where they are.
        """
        z, log_det = self.flow(layer, fibers, positions)
        dim = z.shape[1]
        anomalous = anomalous.to(torch.bool)
        zero = torch.zeros_like(log_det)
        if raw_stats is None:
            if self.stats is not None:
                raise ValueError("this SANFlow head predicts variances: raw_stats is required")
            log_var = math.log(self.prior_mode)
            lp_normal = variance_log_prob(z, log_det, log_var, 0.0)
            lp_anomaly = variance_log_prob(z, log_det, log_var, margin)
            precision = torch.full_like(log_det, 1.0 / self.prior_mode)
            kl = zero
        else:
            log_alpha, log_beta = self.log_alpha_beta(raw_stats)
            la_n = torch.where(anomalous, log_alpha.detach(), log_alpha)
            lb_n = torch.where(anomalous, log_beta.detach(), log_beta)
            lp_normal = expected_log_prob(z, log_det, la_n, lb_n, 0.0)
            lp_anomaly = expected_log_prob(z, log_det, log_alpha.detach(), log_beta.detach(), margin)
            precision = torch.exp(log_alpha - log_beta).detach()  # E[1/σ²] = α/β
            kl = inverse_gamma_kl(log_alpha, log_beta, self.prior_alpha, self.prior_beta) / dim
        log_p = torch.where(anomalous, lp_anomaly, lp_normal)
        nll = -F.logsigmoid(log_p / dim)
        # log p_n - log p_a under the same σ²: -(α/2β)(||z||² - ||z - m||²); log|det J| cancels.
        logit = -0.5 * precision * (z.pow(2).sum(1) - (z - margin).pow(2).sum(1)) / dim
        bce = F.binary_cross_entropy_with_logits(logit, (~anomalous).to(logit.dtype), reduction="none")
        loss = (nll + bce_weight * bce + kl_weight * kl).mean()
        parts = {
            "nll": nll.detach(), "bce": bce.detach(), "kl": kl.detach(),
            "nll_per_dim": (-log_p / dim).detach(),
        }
        return loss, parts
