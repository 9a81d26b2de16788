"""Checkpoints: this project's own (config stored beside the weights) and an import of the reference's `.pckl` files.

Everything loads with `torch.load(..., weights_only=True)`: a checkpoint holds tensors and plain values only.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dsr.config import DSRConfig
from dsr.model import DSR

CHECKPOINT_FORMAT = "dsr-studies/1"

# Reference tensor-name fragments -> this project's, applied in order to every key of a file.
_LATENT_RENAMES = [
    (r"^_encoder_b\.", "encoder_hi."),
    (r"^_encoder_t\.", "encoder_lo."),
    (r"^_pre_vq_conv_bot\.", "pre_quant_hi."),
    (r"^_pre_vq_conv_top\.", "pre_quant_lo."),
    (r"^_vq_vae_bot\.", "quantizer_hi."),
    (r"^_vq_vae_top\.", "quantizer_lo."),
    (r"^_decoder_b\.", "general_decoder."),
    (r"^upsample_t\.", "upsample_lo."),
    (r"\._ema_w$", ".ema_weight"),
    (r"\._ema_cluster_size$", ".ema_cluster_size"),
    (r"\._embedding\.", ".embedding."),
]
_COMMON_RENAMES = [
    (r"_residual_stack\._layers\.(\d+)\._block\.", r"residual_stack.layers.\1.block."),
    (r"_conv_trans_(\d)\.", r"deconv\1."),
    (r"_conv_(\d)\.", r"conv\1."),
]
_OBJECT_DECODER_RENAMES = [
    (r"^pre_vq_conv\.", "bottleneck."),
    (r"^upblock(\d)\.", r"up\1."),
    (r"^_", "tail._"),  # the reference's decoder tail (_conv_1, _residual_stack, _conv_trans_*) sits at top level
]
_UNET_RENAMES = [(r"^unet\.", "")]

# (reference file stem, DSR attribute, renames); per-category files are "<prefix>_<stem>_<category>.pckl".
_PER_CATEGORY_FILES = [
    ("subspace_restriction_hi", "restriction_hi", _UNET_RENAMES),
    ("subspace_restriction_lo", "restriction_lo", _UNET_RENAMES),
    ("image_recon_module", "object_decoder", _OBJECT_DECODER_RENAMES + _COMMON_RENAMES),
    ("anomaly_det_module", "anomaly_detection", _UNET_RENAMES),
    ("upsample_module", "upsampling", _UNET_RENAMES),
]


def _rename(key: str, renames: list[tuple[str, str]]) -> str:
    for pattern, replacement in renames:
        key = re.sub(pattern, replacement, key)
    return key


def read_weights_only(path: Path, map_location: str | torch.device = "cpu", what: str = "checkpoint") -> Any:
    """`torch.load(weights_only=True)` with a missing or corrupt file reported by name (`what` names its kind)."""
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises several types for a corrupt or non-tensor file
        raise ValueError(f"{path}: not a readable {what} ({type(error).__name__}: {error})") from error


def write_atomic(payload: Any, path: str | Path) -> Path:
    """`torch.save` through a temporary file, so an interrupted save never leaves a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    state = read_weights_only(path)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a state_dict (a dict of tensors), got {type(state).__name__}")
    return {k.removeprefix("module."): v for k, v in state.items()}  # DataParallel saves carry "module."


def _import_into(module: nn.Module, path: Path, renames: list[tuple[str, str]],
                 reference: dict[str, torch.Tensor] | None = None) -> None:
    """Copy a reference state_dict (read from `path` unless given) into `module`, checking names and shapes;
    raises naming file and tensor."""
    reference = _load_state_dict(path) if reference is None else reference
    mapped = {_rename(k, renames): (k, v) for k, v in reference.items()}
    target = module.state_dict()
    extra = sorted(ref_key for key, (ref_key, _) in mapped.items() if key not in target)
    if extra:
        raise ValueError(f"{path}: unexpected tensor(s) {', '.join(extra)} (not part of this model)")
    inverse = {key: ref_key for key, (ref_key, _) in mapped.items()}
    missing = sorted(key for key in target if key not in mapped)
    if missing:
        raise ValueError(f"{path}: missing tensor(s) for {', '.join(missing)}")
    for key, (ref_key, tensor) in mapped.items():
        if tuple(tensor.shape) != tuple(target[key].shape):
            raise ValueError(f"{path}: tensor {inverse[key]} has shape {tuple(tensor.shape)}, this model "
                             f"expects {tuple(target[key].shape)} (check the config's widths and codebook_size)")
    module.load_state_dict({key: tensor for key, (_, tensor) in mapped.items()})


def reference_checkpoint_paths(directory: str | Path, category: str, prefix: str = "DSR") -> dict[str, Path]:
    """The reference files this import reads, by DSR attribute ("latent", "restriction_hi", ...)."""
    directory = Path(directory)
    paths = {"latent": directory / "vq_model_pretrained_128_4096.pckl"}
    for stem, attribute, _ in _PER_CATEGORY_FILES:
        paths[attribute] = directory / f"{prefix}_{stem}_{category}.pckl"
    return paths


def load_reference_checkpoints(model: DSR, directory: str | Path, category: str, prefix: str = "DSR") -> DSR:
    """Import the reference's `.pckl` state dicts for one category into `model` (in place; returned too).

    The reference reads images as BGR: use `channel_order="bgr"` in the config for its weights to see what they
    were trained on. Raises FileNotFoundError for a missing file and ValueError naming the file and the tensor for
    an unreadable file, a missing or unexpected tensor, or a shape mismatch. Nothing is modified unless every
    file imports (each module is checked before it is written, and all files are checked first).
    """
    paths = reference_checkpoint_paths(directory, category, prefix)
    renames = {"latent": _LATENT_RENAMES + _COMMON_RENAMES}
    renames.update({attribute: rules for _, attribute, rules in _PER_CATEGORY_FILES})
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"reference checkpoint(s) not found: {', '.join(missing)}")
    staged = {name: copy.deepcopy(getattr(model, name)) for name in paths}
    for name, path in paths.items():
        _import_into(staged[name], path, renames[name])
    for name, module in staged.items():
        getattr(model, name).load_state_dict(module.state_dict())
    return model


def load_stage1_checkpoint(latent: nn.Module, path: str | Path) -> nn.Module:
    """Load a stage-1 (discrete latent) model into `latent` (a `DSR(...).latent`), from any of:
    the reference's `vq_model_pretrained_128_4096.pckl`, a stage-1 `latent.pt` of a study, or a whole-model
    checkpoint of ours (its `latent.` part). Raises ValueError naming the file and the tensor that does not fit
    (names, shapes: the config's widths and codebook_size must match the file's)."""
    path = Path(path)
    payload = read_weights_only(path, what="stage-1 checkpoint")
    if isinstance(payload, dict) and payload.get("format") == CHECKPOINT_FORMAT:
        state = {k.removeprefix("latent."): v for k, v in payload["state_dict"].items() if k.startswith("latent.")}
    elif isinstance(payload, dict) and payload and all(isinstance(v, torch.Tensor) for v in payload.values()):
        state = {k.removeprefix("module."): v for k, v in payload.items()}
    else:
        raise ValueError(f"{path}: not a stage-1 checkpoint (expected a state_dict of tensors or a dsr-studies "
                         f"checkpoint)")
    reference_format = any(k.startswith(("_encoder_b.", "_vq_vae_bot.")) for k in state)
    _import_into(latent, path, _LATENT_RENAMES + _COMMON_RENAMES if reference_format else [], state)
    return latent


def save_checkpoint(model: DSR, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Save the whole model with its config, so `load_checkpoint` can rebuild it without other input."""
    payload = {"format": CHECKPOINT_FORMAT, "config": model.config.to_dict(), "state_dict": model.state_dict(),
               "extra": extra or {}}
    return write_atomic(payload, path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> DSR:
    """Rebuild a model saved by `save_checkpoint` (config and weights)."""
    path = Path(path)
    payload = read_weights_only(path, map_location)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a dsr-studies checkpoint (expected format {CHECKPOINT_FORMAT!r})")
    model = DSR(DSRConfig.from_dict(payload["config"]))
    model.load_state_dict(payload["state_dict"])
    return model
