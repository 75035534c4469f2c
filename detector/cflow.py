"""CFLOW-AD decoders: one conditional normalizing flow per pooling layer (pure ``nn.Module``).

Gudovskiy et al., "CFLOW-AD: Real-Time Unsupervised Anomaly Detection with Localization via
Conditional Normalizing Flows", WACV 2022. Every feature vector (a "fiber") of a pooling
layer is mapped by that layer's flow, conditioned on a 2-D sinusoidal encoding of its
position, to a standard normal; its log-likelihood is

    log p(x) = -(||u||^2 + D log 2*pi) / 2 + log |det J|.

The head is independent of the encoder: it takes the encoder's feature maps and returns one
log-likelihood map per layer. Training lives in :mod:`training.train`, turning the maps
into anomaly maps and scores in :mod:`detector.anomaly_map`.

**The condition projection, computed once per position.** Each coupling block's subnet
starts with ``Linear([x1, c])`` = ``W_x x1 + W_c c + b``. The condition ``c`` is the
positional encoding of the fiber's grid position, so ``W_c c + b`` takes one value per
position and block: :class:`CFlowHead` computes it for the grid's positions, not for every
fiber (at 256x256 with EfficientNet-Lite0 that is half of the heads' multiply-accumulates),
and at inference keeps it until the block's weights change. The coupling itself is
FrEIA's ``AllInOneBlock`` (its parameters, its arithmetic), written out in
:meth:`CFlowHead.flow`; :meth:`CFlowHead.reference_flow` runs FrEIA's own forward on the
explicit conditions, and the two agree to float rounding (``tests/detector/test_cflow.py``,
``bench/detector.py``). Training and inference call the same :meth:`CFlowHead.flow`.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import FrEIA.framework as Ff
import FrEIA.modules as Fm
import torch
import torch.nn.functional as F
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


@dataclass(frozen=True)
class Positions:
    """The grid positions of a set of fibers: the condition of each, as an index.

    ``index`` (N,) holds each fiber's flat position ``row * width + column`` on a
    ``grid = (height, width)`` feature map; ``frames`` is set when the fibers are whole
    frames in order (``index`` is ``0 .. H*W-1`` repeated), which lets the projection be
    broadcast instead of gathered. Indexing (``positions[idx]``, a slice or an index
    tensor) selects fibers as it would select rows of their conditions.
    """

    grid: tuple[int, int]
    index: torch.Tensor
    frames: int | None = None

    @classmethod
    def full(cls, frames: int, height: int, width: int, device: torch.device | None = None) -> Positions:
        index = torch.arange(height * width, device=device).repeat(frames)
        return cls((height, width), index, frames)

    def __len__(self) -> int:
        return int(self.index.shape[0])

    def __getitem__(self, idx: slice | torch.Tensor) -> Positions:
        hw = self.grid[0] * self.grid[1]
        if (isinstance(idx, slice) and self.frames is not None and idx.step in (None, 1)
                and (idx.start or 0) % hw == 0):
            sub = self.index[idx]
            if sub.shape[0] % hw == 0:
                return Positions(self.grid, sub, sub.shape[0] // hw)
        return Positions(self.grid, self.index[idx])

    def conditions(self, channels: int, like: torch.Tensor) -> torch.Tensor:
        """The explicit conditions (N, channels): each fiber's positional encoding."""
        table = position_table(channels, self.grid, like)
        return table[self.index.to(table.device)]


def position_table(channels: int, grid: tuple[int, int], like: torch.Tensor) -> torch.Tensor:
    """The positional encoding of every position of ``grid``, one row per flat position
    ``row * width + column``: (H*W, channels), on ``like``'s device and dtype."""
    return positional_encoding_2d(channels, *grid).to(like).reshape(channels, -1).T.contiguous()


def _check_block(block: nn.Module) -> None:
    """The coupling :meth:`CFlowHead.flow` writes out: FrEIA's AllInOneBlock as
    :func:`conditional_flow` configures it (no householder, no GIN, no pre-permutation,
    1-D fibers, a Linear-ReLU-Linear subnet)."""
    ok = (isinstance(block, Fm.AllInOneBlock) and not block.householder and not block.GIN
          and not block.reverse_pre_permute and block.input_rank == 0 and block.conditional
          and isinstance(block.subnet, nn.Sequential) and len(block.subnet) == 3
          and isinstance(block.subnet[0], nn.Linear) and isinstance(block.subnet[2], nn.Linear))
    if not ok:
        raise TypeError("CFlowHead.flow supports FrEIA AllInOneBlocks as conditional_flow builds them")


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
        chunk: int = 4096,
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
        for flow in self.flows:
            for block in flow.module_list:
                _check_block(block)
        # Caches of values that depend only on the grid (and, for projections, on weights
        # that only training changes); not state: neither is saved with the head.
        self._encodings: dict[tuple, torch.Tensor] = {}
        self._projections: dict[tuple, tuple[tuple[int, int, int], torch.Tensor]] = {}
        # int8 copies of each coupling subnet's feature part (see quantize_int8); None: float
        self._int8: dict[tuple[int, int], tuple[nn.Module, nn.Module]] | None = None

    def quantize_int8(self) -> CFlowHead:
        """Reduced-precision inference, measured and not shipped (``bench/detector.py`` rows
        ``cflow-int8`` / ``heads-int8``; docs/results.md): each coupling subnet's two
        matrix products on the fibers -- the feature part ``W_x`` of its first
        layer and its second layer -- run as dynamically quantised int8 linear layers
        (weights int8 per tensor, activations quantised per call); the condition projection
        per position (cached) and everything else stay float32. Made from the current
        weights, for inference only: :meth:`flow` refuses it with gradients enabled. The
        activations' int8 scale is taken per call, so :meth:`chunks` gives such a head one
        frame per call: a frame's scores still depend on that frame alone, never on its
        batch. At that it runs slower than the float heads on this CPU (docs/results.md),
        so no config setting offers it. Returns the head.

        >>> head = CFlowHead([8], cond_dim=8, blocks=2).eval().quantize_int8()
        >>> with torch.inference_mode():
        ...     [m] = head([torch.randn(1, 8, 4, 4)])
        >>> tuple(m.shape)
        (1, 4, 4)
        """
        # torch.ao.quantization is deprecated in favour of torchao (it says: removed in a later
        # torch); this torch still has it, and its warnings would repeat at every scene load
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*")
            from torch.ao.quantization import quantize_dynamic

            copies: dict = {}
            with torch.inference_mode(False), torch.no_grad():  # plain tensors, even called in inference
                self._quantized_copies(copies, quantize_dynamic)
        self._int8 = copies
        return self

    def _quantized_copies(self, copies: dict, quantize_dynamic: Callable) -> None:
        for layer, flow in enumerate(self.flows):
            for b, block in enumerate(flow.module_list):
                first, _relu, second = block.subnet
                dx = block.splits[0]
                wx = nn.Linear(dx, first.out_features, bias=False)
                wx.weight = nn.Parameter(first.weight.detach()[:, :dx].clone(), requires_grad=False)
                pair = nn.ModuleList([wx, copy.deepcopy(second)]).requires_grad_(False)
                q = quantize_dynamic(pair, {nn.Linear}, dtype=torch.qint8)
                copies[(layer, b)] = (q[0], q[1])

    def config(self) -> dict:
        return {
            "feature_dims": self.feature_dims,
            "cond_dim": self.cond_dim,
            "blocks": self.blocks,
            "clamp": self.clamp,
        }

    def fibers(self, feature: torch.Tensor) -> tuple[torch.Tensor, Positions]:
        """Flatten a feature map to fibers (B*H*W, C) and their grid positions."""
        b, c, h, w = feature.shape
        return feature.permute(0, 2, 3, 1).reshape(-1, c), Positions.full(b, h, w, feature.device)

    def _encoding(self, grid: tuple[int, int], like: torch.Tensor) -> torch.Tensor:
        """The positional encoding of ``grid``'s positions (H*W, cond_dim), made once per grid."""
        key = (grid, like.device, like.dtype)
        table = self._encodings.get(key)
        if table is None:
            table = self._encodings[key] = position_table(self.cond_dim, grid, like)
        return table

    def _training(self, first: nn.Linear) -> bool:
        return torch.is_grad_enabled() and (first.weight.requires_grad or first.bias.requires_grad)

    def _projection(self, layer: int, block: int, first: nn.Linear, dx: int, grid: tuple[int, int],
                    like: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """``W_c c + b`` of block ``block``: for every position of ``grid`` (``index`` None,
        shape (H*W, hidden)), or per fiber at the flat positions ``index`` (N, hidden).

        Without gradients it is computed for the whole grid and kept until the block's
        first layer changes (its weights' version counter, bumped by every in-place update:
        an optimizer step, ``load_state_dict``); fibers gather their rows. With gradients
        (training) it is computed afresh: for the whole grid and gathered when the fibers
        outnumber the grid's positions four times or more (coarse grids), else from each
        fiber's own encoding, as the official loop does, without a gather of the wider
        projection."""
        encoding = self._encoding(grid, like)
        w_c = first.weight[:, dx:].T
        if self._training(first):
            if index is None or index.shape[0] >= 4 * encoding.shape[0]:
                table = torch.addmm(first.bias, encoding, w_c)
                return table if index is None else table[index]
            return torch.addmm(first.bias, encoding[index], w_c)
        key = (layer, block, grid, like.device, like.dtype)
        version = (first.weight._version, first.bias._version, first.weight.data_ptr())
        hit = self._projections.get(key)
        if hit is None or hit[0] != version:
            hit = (version, torch.addmm(first.bias, encoding, w_c))
            self._projections[key] = hit
        return hit[1] if index is None else hit[1][index]

    def flow(self, layer: int, fibers: torch.Tensor, positions: Positions
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer ``layer``'s flow on fibers (N, C_l) at ``positions``: ``(z, log|det J|)``.

        FrEIA's ``AllInOneBlock`` forward (soft permutation, SOFTPLUS global affine, clamped
        affine coupling), with each subnet's condition projection per position (see the
        module docstring): broadcast over whole frames, or gathered for a set of fibers (a
        training batch; :meth:`_projection`). The operations are FrEIA's, regrouped: the
        subnet's two output halves as two products with its 0.1 folded in, and each
        block's global affine folded into its permutation matrix.
        """
        x = fibers
        log_det = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        hw = positions.grid[0] * positions.grid[1]
        # whole frames broadcast the grid's projection; a set of fibers gathers theirs
        index = None if positions.frames is not None else positions.index.to(x.device)
        if self._int8 is not None and (torch.is_grad_enabled() or index is not None):
            raise RuntimeError("an int8 head (quantize_int8) is for inference on whole frames only")
        constant = x.new_zeros(())  # the global affines' log-determinants, the same for every fiber
        for b, block in enumerate(self.flows[layer].module_list):
            x1, x2 = torch.split(x, block.splits, dim=1)
            first, _relu, second = block.subnet
            dx, ch = x1.shape[1], x2.shape[1]
            proj = self._projection(layer, b, first, dx, positions.grid, x, index)
            if self._int8 is not None:
                wx, second_int8 = self._int8[(layer, b)]
                hidden = (wx(x1).view(-1, hw, proj.shape[1]) + proj).view(-1, proj.shape[1])
                a = second_int8(F.relu(hidden)) * 0.1
                s_pre, t = a[:, :ch], a[:, ch:]
            else:
                if index is None:  # whole frames: the grid's projection broadcast over them
                    hidden = x1 @ first.weight[:, :dx].T
                    hidden.view(-1, hw, hidden.shape[1]).add_(proj)
                else:
                    hidden = torch.addmm(proj, x1, first.weight[:, :dx].T)
                hidden = hidden.relu_()
                # the subnet's output halves (scale, shift) as two products, times FrEIA's 0.1
                s_pre = torch.addmm(second.bias[:ch], hidden, second.weight[:ch].T, beta=0.1, alpha=0.1)
                t = torch.addmm(second.bias[ch:], hidden, second.weight[ch:].T, beta=0.1, alpha=0.1)
            sub_jac = block.clamp * torch.tanh(s_pre)
            x2 = torch.addcmul(t, x2, torch.exp(sub_jac))
            # the global affine (x * scale + offset) folded into the permutation's matrix
            scale = block.global_scale_activation(block.global_scale)
            w_perm = block.w_perm * scale
            offset = F.linear(block.global_offset, block.w_perm).view(-1)
            x = torch.addmm(offset, x1, w_perm[:, :dx].T).addmm_(x2, w_perm[:, dx:].T)
            log_det = log_det + sub_jac.sum(1)
            constant = constant + torch.log(scale).sum()
        return x, log_det + constant

    def reference_flow(self, layer: int, fibers: torch.Tensor, cond: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """FrEIA's own forward of layer ``layer``'s flow on explicit conditions (N, cond_dim):
        the reference :meth:`flow` is checked against (tests, ``bench/detector.py``)."""
        z, log_det = self.flows[layer](fibers, c=[cond])
        return z, log_det

    def fiber_log_prob(self, layer: int, fibers: torch.Tensor, positions: Positions) -> torch.Tensor:
        """log p of fibers (N, C_l) at ``positions`` under layer ``layer``'s flow."""
        z, log_det = self.flow(layer, fibers, positions)
        return gaussian_log_prob(z, log_det)

    def chunks(self, positions: Positions) -> list[slice]:
        """Slices of at most about ``chunk`` fibers, on frame boundaries where the fibers
        are whole frames (so each chunk broadcasts its projection)."""
        n = len(positions)
        step = self.chunk
        if positions.frames is not None:
            hw = positions.grid[0] * positions.grid[1]
            # int8: activations are quantised per call, so one frame per call keeps a
            # frame's scores independent of the other frames of its batch
            step = hw if self._int8 is not None else max(1, self.chunk // hw) * hw
        return [slice(i, i + step) for i in range(0, n, step)]

    def forward(
        self, features: Sequence[torch.Tensor], images: torch.Tensor | None = None
    ) -> list[torch.Tensor]:
        """Log-likelihood maps per layer; ``images`` is accepted for a uniform head interface
        and unused (CFLOW-AD reads features only)."""
        maps = []
        for layer, feature in enumerate(features):
            b, _, h, w = feature.shape
            fibers, positions = self.fibers(feature)
            log_p = torch.cat([self.fiber_log_prob(layer, fibers[sl], positions[sl])
                               for sl in self.chunks(positions)])
            maps.append(log_p.view(b, h, w))
        return maps
