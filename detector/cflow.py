"""CFLOW-AD decoders: one conditional normalizing flow per pooling layer (pure ``nn.Module``).

Gudovskiy et al., "CFLOW-AD: Real-Time Unsupervised Anomaly Detection with Localization via
Conditional Normalizing Flows", WACV 2022. Every feature vector (a "fiber") of a pooling
layer is mapped by that layer's flow, conditioned on a 2-D sinusoidal encoding of its
position, to a standard normal; its log-likelihood is

    log p(x) = -(||u||^2 + D log 2*pi) / 2 + log |det J|.

The head is independent of the encoder: it takes the encoder's feature maps and returns one
log-likelihood map per layer. Training lives in :mod:`training.train`, turning the maps
into anomaly maps and scores in :mod:`detector.anomaly_map`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import FrEIA.framework as Ff
import FrEIA.modules as Fm
import torch
from torch import nn

LOG_2PI = math.log(2 * math.pi)


def positional_encoding_2d(channels: int, height: int, width: int) -> torch.Tensor:
    """2-D sinusoidal positional encoding, shape (channels, height, width).

    The first half of the channels encodes the column, the second half the row, each with
    interleaved sin/cos at geometric frequencies (as in CFLOW-AD's official code).
    """
    if channels % 4:
        raise ValueError(f"positional encoding needs a channel count divisible by 4, got {channels}")
    enc = torch.zeros(channels, height, width)
    half = channels // 2
    div_term = torch.exp(torch.arange(0.0, half, 2) * -(math.log(1e4) / half))
    pos_w = torch.arange(0.0, width).unsqueeze(1)
    pos_h = torch.arange(0.0, height).unsqueeze(1)
    enc[0:half:2] = torch.sin(pos_w * div_term).T.unsqueeze(1).repeat(1, height, 1)
    enc[1:half:2] = torch.cos(pos_w * div_term).T.unsqueeze(1).repeat(1, height, 1)
    enc[half::2] = torch.sin(pos_h * div_term).T.unsqueeze(2).repeat(1, 1, width)
    enc[half + 1 :: 2] = torch.cos(pos_h * div_term).T.unsqueeze(2).repeat(1, 1, width)
    return enc


def _subnet(dims_in: int, dims_out: int) -> nn.Module:
    # Linear(d -> 2d) - ReLU - Linear, as in the paper.
    return nn.Sequential(nn.Linear(dims_in, 2 * dims_in), nn.ReLU(), nn.Linear(2 * dims_in, dims_out))


def conditional_flow(
    dim: int, cond_dim: int, blocks: int = 8, clamp: float = 1.9
) -> Ff.SequenceINN:
    """A conditional flow of ``blocks`` FrEIA AllInOneBlocks over ``dim``-vectors."""
    flow = Ff.SequenceINN(dim)
    for _ in range(blocks):
        flow.append(
            Fm.AllInOneBlock,
            cond=0,
            cond_shape=(cond_dim,),
            subnet_constructor=_subnet,
            affine_clamping=clamp,
            global_affine_type="SOFTPLUS",
            permute_soft=True,
        )
    return flow


def gaussian_log_prob(z: torch.Tensor, log_det: torch.Tensor) -> torch.Tensor:
    """log p of a flow output under N(0, I): -(|z|^2 + D log 2pi)/2 + log|det J|."""
    dim = z.shape[1]
    return -0.5 * (z.pow(2).sum(1) + dim * LOG_2PI) + log_det


class CFlowHead(nn.Module):
    """The per-scene part of CFLOW-AD: one conditional flow per pooling layer.

    ``forward(features)`` maps the encoder's feature maps (B, C_l, H_l, W_l) to
    log-likelihood maps (B, H_l, W_l), one per layer, in nats (not per dimension).
    Each fiber is transformed independently, so a frame's maps do not depend on the batch.
    """

    kind = "cflow"
    # Heads that read the input images besides the features (SANFlow's statistics network)
    # set this; callers then pass ``images`` to ``forward``.
    needs_images = False

    def __init__(
        self,
        feature_dims: Sequence[int],
        cond_dim: int = 128,
        blocks: int = 8,
        clamp: float = 1.9,
        chunk: int = 16384,
    ) -> None:
        super().__init__()
        self.feature_dims = list(feature_dims)
        self.cond_dim = cond_dim
        self.blocks = blocks
        self.clamp = clamp
        self.chunk = chunk
        self.flows = nn.ModuleList(
            conditional_flow(d, cond_dim, blocks, clamp) for d in self.feature_dims
        )

    def config(self) -> dict:
        return {
            "feature_dims": self.feature_dims,
            "cond_dim": self.cond_dim,
            "blocks": self.blocks,
            "clamp": self.clamp,
        }

    def fibers(self, feature: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Flatten a feature map to fibers (B*H*W, C) and their conditions (B*H*W, cond)."""
        b, c, h, w = feature.shape
        pos = positional_encoding_2d(self.cond_dim, h, w).to(feature)
        cond = pos.unsqueeze(0).expand(b, -1, -1, -1)
        return (
            feature.permute(0, 2, 3, 1).reshape(-1, c),
            cond.permute(0, 2, 3, 1).reshape(-1, self.cond_dim),
        )

    def fiber_log_prob(self, layer: int, fibers: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """log p of fibers (N, C_l) under layer ``layer``'s flow."""
        z, log_det = self.flows[layer](fibers, c=[cond])
        return gaussian_log_prob(z, log_det)

    def forward(
        self, features: Sequence[torch.Tensor], images: torch.Tensor | None = None
    ) -> list[torch.Tensor]:
        """Log-likelihood maps per layer; ``images`` is accepted for a uniform head interface
        and unused (CFLOW-AD reads features only)."""
        maps = []
        for layer, feature in enumerate(features):
            b, _, h, w = feature.shape
            fibers, cond = self.fibers(feature)
            log_p = torch.cat(
                [
                    self.fiber_log_prob(layer, fibers[i : i + self.chunk], cond[i : i + self.chunk])
                    for i in range(0, fibers.shape[0], self.chunk)
                ]
            )
            maps.append(log_p.view(b, h, w))
        return maps
