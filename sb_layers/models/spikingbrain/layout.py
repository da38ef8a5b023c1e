"""The released checkpoint layout: read its weight names, adapt the config to them, write the layout.

A released SpikingBrain-7B directory holds ``config.json`` (``model_type: "gla_swa"``, architecture
``GLAswaForCausalLM``) and safetensors shards with ``model.safetensors.index.json`` (facts section 4). The
W8ASpike variant ships the same config.json; its layout is told only by its weights:
``<linear>.weight_quantizer.scales`` buffers ``(out, in / group, 1)`` and a merged ``gk_proj.weight``.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .configuration import SpikingBrainConfig
from sb_neurons.validation import check_int

RELEASE_MODEL_TYPE = "gla_swa"
RELEASE_ARCHITECTURE = "GLAswaForCausalLM"
INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"


def checkpoint_shapes(directory: str | os.PathLike) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor in the directory's safetensors files (headers only, no data read)."""
    root = Path(directory)
    if not root.is_dir():
        raise ValueError(f"directory must be an existing directory, got {directory!r}")
    files = sorted(root.glob("*.safetensors"))
    shapes: dict[str, tuple[int, ...]] = {}
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            for name in handle.keys():
                shapes[name] = tuple(handle.get_slice(name).get_shape())
    return shapes


def weight_file_shapes(directory: str | os.PathLike, variant: str | None = None) -> dict[str, tuple[int, ...]] | None:
    """Name -> shape of the tensors in the safetensors weights that ``from_pretrained`` loads from
    ``directory`` (``model.safetensors``, or the shards its index lists; ``model.<variant>...`` for a
    variant), read from the headers only. None when there is no such file or a header cannot be read
    (transformers then reports the problem itself)."""
    root = Path(directory)
    single = SINGLE_FILE if variant is None else f"model.{variant}.safetensors"
    index = INDEX_FILE if variant is None else f"model.safetensors.index.{variant}.json"
    try:
        if (root / single).is_file():
            files = [root / single]
        elif (root / index).is_file():
            files = [root / name for name in sorted(set(json.loads((root / index).read_text())["weight_map"].values()))]
        else:
            return None
        shapes: dict[str, tuple[int, ...]] = {}
        for file in files:
            with safe_open(str(file), framework="pt") as handle:
                for name in handle.keys():
                    shapes[name] = tuple(handle.get_slice(name).get_shape())
    except Exception:  # noqa: BLE001 - a truncated or garbled file: left to transformers' own error
        return None
    return shapes


def check_checkpoint_shapes(
    expected: Mapping[str, tuple[int, ...]], found: Mapping[str, tuple[int, ...]], prefix: str = "model",
) -> None:
    """Raise ``ValueError`` naming every checkpoint weight whose shape differs from the model's.

    ``expected``: the model's state-dict names -> shapes; ``found``: the checkpoint's. A checkpoint name
    matches the model's as is, without the base-model ``prefix`` (a causal-LM checkpoint loaded into the
    base model) or with it (the reverse); names the model lacks are left to transformers (unexpected keys).
    """
    mismatches = []
    for name, shape in found.items():
        for candidate in (name, name.removeprefix(prefix + "."), f"{prefix}.{name}"):
            if candidate in expected:
                if tuple(expected[candidate]) != tuple(shape):
                    mismatches.append(f"{name}: shape {tuple(shape)} in the checkpoint, {tuple(expected[candidate])} expected")
                break
    if mismatches:
        shown = "; ".join(mismatches[:8]) + (f"; and {len(mismatches) - 8} more" if len(mismatches) > 8 else "")
        raise ValueError(
            f"the checkpoint does not fit the model its config describes: size mismatch for {len(mismatches)} "
            f"weight(s): {shown}. Check that config.json belongs to these weights (or pass "
            "ignore_mismatched_sizes=True to re-initialize the mismatched weights)"
        )


def adapt_config_to_checkpoint(config: SpikingBrainConfig, directory: str | os.PathLike) -> SpikingBrainConfig:
    """A copy of ``config`` matching the weights in ``directory`` (unchanged when they already match).

    - ``...weight_quantizer.scales`` present: ``spiking=True``, ``coding.weight_bits=8`` (unless set),
      ``coding.group_size = in_features / scales.shape[1]`` (the stored group size) and ``spike_attention=True``
      (the release's W8ASpike attention: spiking queries, int8 keys and values).
    - ``...attn.gk_proj.weight`` (no ``gk_proj.0``) present: ``gla_gate="merged"``.
    """
    if not isinstance(config, SpikingBrainConfig):
        raise TypeError(f"config must be a SpikingBrainConfig, got {type(config).__name__}")
    shapes = checkpoint_shapes(directory)
    adapted = copy.deepcopy(config)
    scales = {name: shape for name, shape in shapes.items() if name.endswith(".weight_quantizer.scales")}
    if scales:
        name, shape = next((n, s) for n, s in scales.items() if ".mlp.down_proj." not in n)
        in_features = shapes[name.replace("weight_quantizer.scales", "weight")][1]
        adapted.spiking = True
        adapted.coding = {"weight_bits": adapted.coding.weight_bits or 8, "group_size": in_features // shape[1]}
        adapted.spike_attention = True
    if any(name.endswith("attn.gk_proj.weight") for name in shapes):
        adapted.gla_gate = "merged"
    return adapted


def save_released_checkpoint(
    state_dict: Mapping[str, torch.Tensor],
    config: SpikingBrainConfig | Mapping,
    directory: str | os.PathLike,
    *,
    max_shard_bytes: int = 5 * 2**30,
    dtype: torch.dtype | None = torch.bfloat16,
) -> Path:
    """Write ``state_dict`` in the release's layout: ``config.json`` (``model_type: "gla_swa"``) and shards.

    Args:
        state_dict: release names (``model.embeddings.weight``, ``model.layers.{i}...``, ``lm_head.weight``).
        config: a :class:`SpikingBrainConfig` or a plain dict of config.json fields.
        directory: created if missing.
        max_shard_bytes: shard size limit; more than one shard adds ``model.safetensors.index.json``.
        dtype: floating tensors are stored in this dtype (bfloat16 as released); None keeps them; float32
            buffers named ``...scales`` are kept in float32 as released.

    Returns the directory path.
    """
    check_int(max_shard_bytes, "max_shard_bytes", minimum=1)
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    fields = config.to_dict() if isinstance(config, SpikingBrainConfig) else dict(config)
    fields.update(model_type=RELEASE_MODEL_TYPE, architectures=[RELEASE_ARCHITECTURE])
    if dtype is not None:
        fields["torch_dtype"] = str(dtype).removeprefix("torch.")
    (root / "config.json").write_text(json.dumps(fields, indent=2, sort_keys=True))

    shards: list[dict[str, torch.Tensor]] = [{}]
    used = 0
    for name, tensor in state_dict.items():
        tensor = tensor.detach().contiguous().cpu()
        if dtype is not None and tensor.is_floating_point() and not name.endswith("scales"):
            tensor = tensor.to(dtype)
        size = tensor.numel() * tensor.element_size()
        if shards[-1] and used + size > max_shard_bytes:
            shards.append({})
            used = 0
        shards[-1][name] = tensor
        used += size
    if len(shards) == 1:
        save_file(shards[0], str(root / SINGLE_FILE), metadata={"format": "pt"})
        return root
    weight_map = {}
    for number, shard in enumerate(shards, start=1):
        file = f"model-{number:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(root / file), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, file))
    total = sum(t.numel() * t.element_size() for shard in shards for t in shard.values())
    (root / INDEX_FILE).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    return root


__all__ = ["adapt_config_to_checkpoint", "check_checkpoint_shapes", "checkpoint_shapes", "save_released_checkpoint", "weight_file_shapes"]
