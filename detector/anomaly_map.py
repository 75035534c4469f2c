"""Turn per-layer log-likelihood maps into an anomaly map and a raw frame score.

Everything here is per frame: the normalisation statistics were measured on held-out
normal footage at training time and are stored in the checkpoint, so a frame's map and
score depend on that frame and the checkpoint only (never on the batch or other frames).

Per layer, the negative log-likelihood per dimension is standardised by the mean and
standard deviation it had on held-out normal frames -- per layer, or per position of the
layer's grid when ``position_norm`` is on (where normal pedestrians walk, the normal
likelihood is lower and more variable; the per-position statistics discount that). The
standardised layers are upsampled to the input size and averaged. The frame score is read
off the map by a reduction (maximum or mean of the top-k fraction of pixels).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from detector.settings import Reduction  # re-exported: callers import it from here too

# Floor on per-position standard deviations, as a fraction of the layer's global one:
# held-out footage is short, and a position that barely varied in it must not explode.
STD_FLOOR = 0.5


@dataclass
class MapStatistics:
    """Normal-footage statistics of each layer's NLL per dimension.

    ``layer_mean``/``layer_std`` are scalars per layer; ``position_mean``/``position_std``
    are (H_l, W_l) grids per layer, or None when per-position normalisation is off.
    """

    layer_mean: list[float]
    layer_std: list[float]
    position_mean: list[torch.Tensor] | None = None
    position_std: list[torch.Tensor] | None = None

    @classmethod
    def from_nll(cls, nll_maps: Sequence[torch.Tensor], position_norm: bool) -> MapStatistics:
        """Measure statistics from NLL-per-dimension maps (N, H_l, W_l) of normal frames."""
        layer_mean = [float(m.mean()) for m in nll_maps]
        layer_std = [float(m.std().clamp_min(1e-6)) for m in nll_maps]
        if not position_norm:
            return cls(layer_mean, layer_std)
        pos_mean = [m.mean(0) for m in nll_maps]
        pos_std = [
            m.std(0).clamp_min(STD_FLOOR * s) if m.shape[0] > 1 else torch.full_like(m[0], s)
            for m, s in zip(nll_maps, layer_std, strict=True)
        ]
        return cls(layer_mean, layer_std, pos_mean, pos_std)

    @property
    def position_norm(self) -> bool:
        return self.position_mean is not None

    def tensors(self) -> dict[str, torch.Tensor]:
        """The per-position grids, for a safetensors file."""
        out: dict[str, torch.Tensor] = {}
        if self.position_mean is not None and self.position_std is not None:
            for i, (m, s) in enumerate(zip(self.position_mean, self.position_std, strict=True)):
                out[f"stats.position_mean.{i}"] = m.contiguous()
                out[f"stats.position_std.{i}"] = s.contiguous()
        return out

    def meta(self) -> dict:
        return {
            "layer_mean": self.layer_mean,
            "layer_std": self.layer_std,
            "position_norm": self.position_norm,
        }

    @classmethod
    def from_saved(cls, meta: dict, tensors: dict[str, torch.Tensor]) -> MapStatistics:
        n = len(meta["layer_mean"])
        if not meta["position_norm"]:
            return cls(list(meta["layer_mean"]), list(meta["layer_std"]))
        return cls(
            list(meta["layer_mean"]),
            list(meta["layer_std"]),
            [tensors[f"stats.position_mean.{i}"] for i in range(n)],
            [tensors[f"stats.position_std.{i}"] for i in range(n)],
        )


def nll_per_dim(log_p_maps: Sequence[torch.Tensor], feature_dims: Sequence[int]) -> list[torch.Tensor]:
    """Negative log-likelihood per feature dimension, so layers of any width compare."""
    return [-lp / d for lp, d in zip(log_p_maps, feature_dims, strict=True)]


def gaussian_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Per-image Gaussian blur of (B, H, W) maps (reflect padding)."""
    # Reflect padding needs the radius below the map size; a wider kernel adds nothing.
    radius = min(max(1, int(math.ceil(3 * sigma))), min(maps.shape[-2:]) - 1)
    x = torch.arange(-radius, radius + 1, dtype=maps.dtype, device=maps.device)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    out = F.pad(maps.unsqueeze(1), (radius, radius, radius, radius), mode="reflect")
    out = F.conv2d(out, kernel.view(1, 1, 1, -1))
    out = F.conv2d(out, kernel.view(1, 1, -1, 1))
    return out.squeeze(1)


def anomaly_map(
    nll_maps: Sequence[torch.Tensor],
    stats: MapStatistics,
    size: tuple[int, int],
    blur_sigma: float = 0.0,
) -> torch.Tensor:
    """Standardise each layer's NLL map, upsample to ``size``, average and optionally
    blur (``blur_sigma`` in output pixels, 0 = off): (B, H, W)."""
    total = None
    for i, nll in enumerate(nll_maps):
        if stats.position_mean is not None and stats.position_std is not None:
            mean, std = stats.position_mean[i].to(nll), stats.position_std[i].to(nll)
        else:
            mean, std = stats.layer_mean[i], stats.layer_std[i]
        z = ((nll - mean) / std).unsqueeze(1)
        up = F.interpolate(z, size=size, mode="bilinear", align_corners=False).squeeze(1)
        total = up if total is None else total + up
    assert total is not None, "no layers"
    total = total / len(nll_maps)
    return gaussian_blur(total, blur_sigma) if blur_sigma > 0 else total


def frame_score(maps: torch.Tensor, reduction: Reduction, topk: float | None = None) -> torch.Tensor:
    """Raw frame scores (B,) from anomaly maps (B, H, W).

    Args:
        maps: the anomaly maps.
        reduction: ``max``, or ``topk``: the mean of the map's highest ``topk`` fraction.
        topk: that fraction (required for ``topk``). A model's come from its
            :class:`~detector.model.ScoreSettings`; there are no defaults here.

    Returns:
        The frame scores.
    """
    flat = maps.flatten(1)
    if reduction == "max":
        return flat.max(1).values
    if reduction == "topk":
        if topk is None:
            raise ValueError("the 'topk' frame-score reduction needs its fraction (topk)")
        k = max(1, int(round(topk * flat.shape[1])))
        return flat.topk(k, dim=1).values.mean(1)
    raise ValueError(f"unknown frame-score reduction {reduction!r} (use 'max' or 'topk')")
