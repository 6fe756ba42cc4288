"""Export an ArchConfig (and optionally weights) as a transformers model folder or in star's own format.

`--format hf` maps the LFM2 family (short conv + GQA + SwiGLU, uniform sizes) to `Lfm2Config` and an
all-attention Transformer++ to `Qwen3Config`; anything transformers cannot express is refused with
the reason, and `--format native` (our ArchConfig JSON + safetensors in our names) always works.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from star.arch import MIXERS, ArchConfig, AttentionMixer, ShortConvMixer, SwiGLUFFN
from star.errors import StarError
from star.validate import MAX_JSON_BYTES, check_memory, read_regular_file

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


def hf_family(config: ArchConfig) -> str:
    """'lfm2' or 'qwen3' when transformers can express the architecture; StarError with the reason."""
    reasons = _hf_refusals(config)
    if reasons:
        raise StarError(f"{config.name} cannot be exported as a transformers config: {reasons[0]} "
                        "(use --format native)")
    has_conv = any(isinstance(b.mixer, ShortConvMixer) for b in config.blocks)
    return "lfm2" if has_conv else "qwen3"


def _hf_refusals(config: ArchConfig) -> list[str]:
    reasons = []
    for i, block in enumerate(config.blocks):
        if block.mixer.hf_layer is None:
            mappable = ", ".join(kind for kind, mixer in MIXERS.items() if mixer.hf_layer)
            reasons.append(f"block {i} uses a {block.mixer.kind} mixer (only {mappable} map)")
        if not isinstance(block.ffn, SwiGLUFFN):
            reasons.append(f"block {i} has no SwiGLU feed-forward")
        if block.share_weights_with is not None or block.share_kv_with is not None:
            reasons.append(f"block {i} shares weights or KV cache with another block")
        if isinstance(block.mixer, AttentionMixer):
            if block.mixer.window:
                reasons.append(f"block {i} uses sliding-window attention")
            if not block.mixer.qk_norm:
                reasons.append(f"block {i} attention has no QK-norm")
    if reasons:
        return reasons
    if len({b.ffn.hidden for b in config.blocks}) > 1:
        reasons.append("feed-forward widths differ between blocks")
    attention = {(b.mixer.num_heads, b.mixer.num_kv_heads, b.mixer.head_dim)
                 for b in config.blocks if isinstance(b.mixer, AttentionMixer)}
    convs = {b.mixer.kernel for b in config.blocks if isinstance(b.mixer, ShortConvMixer)}
    if len(attention) > 1:
        reasons.append("attention heads, KV heads or head_dim differ between blocks")
    if len(convs) > 1:
        reasons.append("short-conv kernels differ between blocks")
    if convs and attention:
        heads, _, head_dim = next(iter(attention))
        if heads * head_dim != config.hidden_size:
            reasons.append(f"LFM2 needs heads·head_dim = hidden_size ({heads}·{head_dim} ≠ {config.hidden_size})")
    return reasons


def to_hf_config(config: ArchConfig) -> Any:
    """The transformers config (Lfm2Config or Qwen3Config) for an expressible architecture."""
    from transformers import Lfm2Config, Qwen3Config

    family = hf_family(config)
    attention = [b.mixer for b in config.blocks if isinstance(b.mixer, AttentionMixer)]
    common = {
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "intermediate_size": config.blocks[0].ffn.hidden,
        "num_hidden_layers": len(config.blocks),
        "max_position_embeddings": config.max_position_embeddings,
        "tie_word_embeddings": config.tie_embeddings,
        "rope_parameters": {"rope_type": "default", "rope_theta": config.rope_theta},
    }
    if family == "qwen3":
        a = attention[0]
        return Qwen3Config(**common, num_attention_heads=a.num_heads, num_key_value_heads=a.num_kv_heads,
                           head_dim=a.head_dim, rms_norm_eps=config.norm_eps, architectures=["Qwen3ForCausalLM"])
    if attention:
        heads, kv_heads = attention[0].num_heads, attention[0].num_kv_heads
    else:  # all-conv: transformers still wants head counts; any divisor of the width will do
        heads = kv_heads = 1
    kernel = next(b.mixer.kernel for b in config.blocks if isinstance(b.mixer, ShortConvMixer))
    layer_types = [b.mixer.hf_layer for b in config.blocks]
    return Lfm2Config(**common, num_attention_heads=heads, num_key_value_heads=kv_heads, norm_eps=config.norm_eps,
                      conv_L_cache=kernel, conv_bias=False, block_auto_adjust_ff_dim=False,
                      layer_types=layer_types, architectures=["Lfm2ForCausalLM"])


# Our module names follow LFM2's; Qwen3 renames a few.
_QWEN3_RENAMES = {
    ".operator_norm.": ".input_layernorm.",
    ".ffn_norm.": ".post_attention_layernorm.",
    ".mixer.out_proj.": ".self_attn.o_proj.",
    ".mixer.q_layernorm.": ".self_attn.q_norm.",
    ".mixer.k_layernorm.": ".self_attn.k_norm.",
    ".mixer.": ".self_attn.",
    ".feed_forward.w1.": ".mlp.gate_proj.",
    ".feed_forward.w3.": ".mlp.up_proj.",
    ".feed_forward.w2.": ".mlp.down_proj.",
}


def hf_state_dict(model: Any) -> dict[str, Any]:
    """Our weights under transformers' names (tied LM head left out: transformers ties it)."""
    config: ArchConfig = model.config
    family = hf_family(config)
    out = {}
    for name, tensor in model.state_dict().items():
        if name == "embedding_norm.weight":
            hf = "model.norm.weight" if family == "qwen3" else "model.embedding_norm.weight"
        elif name == "lm_head.weight":
            hf = name
        elif name.startswith("layers."):
            hf = "model." + name
            if family == "qwen3":
                for ours, theirs in _QWEN3_RENAMES.items():
                    if ours in hf:
                        hf = hf.replace(ours, theirs)
                        break
            else:
                index = int(name.split(".")[1])
                kind = "self_attn" if isinstance(config.blocks[index].mixer, AttentionMixer) else "conv"
                hf = hf.replace(".mixer.", f".{kind}.")
        else:
            hf = "model." + name
        out[hf] = tensor.detach().clone().contiguous()
    return out


def load_config(path: str | Path) -> ArchConfig:
    """Read a native config.json (or any file holding ArchConfig JSON), with one-line errors."""
    path = Path(path)
    if path.is_dir():
        path = path / CONFIG_FILE
    if not path.exists():
        raise StarError(f"config file {str(path)!r} does not exist")
    text = read_regular_file(path, "config file", MAX_JSON_BYTES)
    return ArchConfig.from_json(text, source=f"config file {str(path)!r}")


def build_model(config: ArchConfig, seed: int = 0, weights_from: str | Path | None = None) -> Any:
    """Our model with seeded random weights, or the native safetensors file `weights_from`."""
    import torch
    from safetensors.torch import load_model

    from star.model import StarLM

    torch.manual_seed(seed)
    model = StarLM(config)
    if weights_from is not None:
        path = Path(weights_from)
        if path.is_dir():
            path = path / WEIGHTS_FILE
        if not path.is_file():
            raise StarError(f"weights file {str(path)!r} does not exist")
        try:
            missing, unexpected = load_model(model, str(path), strict=False)
        except Exception as err:  # safetensors raises several types for bad files
            raise StarError(f"cannot load weights {str(path)!r}: {str(err).splitlines()[0]}") from None
        if missing or unexpected:
            first = (list(missing) + list(unexpected))[0]
            raise StarError(f"weights {str(path)!r} do not fit this architecture (e.g. {first!r})")
    return model.eval()


def export(config: ArchConfig, out_dir: str | Path, fmt: str, weights: bool = False, seed: int = 0,
           weights_from: str | Path | None = None, force: bool = False) -> list[Path]:
    """Write config.json (and model.safetensors with `weights`) to `out_dir`; return the files.

    Everything that can be checked is checked before the first byte is written, and the files are
    written under temporary names and renamed at the end, so a failed export leaves the folder as
    it was (and removes it if this call created it)."""
    out = Path(out_dir)
    if fmt not in ("hf", "native"):
        raise StarError(f"unknown export format {fmt!r} (use hf or native)")
    with_weights = bool(weights or weights_from)
    targets = [out / CONFIG_FILE, *([out / WEIGHTS_FILE] if with_weights else [])]
    check_targets(out, targets, force)
    payload = to_hf_config(config).to_dict() if fmt == "hf" else config.to_dict()
    if with_weights:
        # fp32 weights, plus the copy that the transformers names need
        check_memory(config.params() * 4 * (2 if fmt == "hf" else 1), f"exporting the weights of {config.name}")
    model = build_model(config, seed, weights_from) if with_weights else None

    def write(temporary: list[Path]) -> None:
        temporary[0].write_text(json.dumps(payload, indent=2, default=str) + "\n")
        if model is not None:
            from safetensors.torch import save_file, save_model

            if fmt == "hf":
                save_file(hf_state_dict(model), str(temporary[1]), metadata={"format": "pt"})
            else:
                save_model(model, str(temporary[1]), metadata={"format": "pt"})

    write_all_or_nothing(out, targets, write)
    return targets


def check_targets(out: Path, targets: list[Path], force: bool) -> None:
    """One-line errors, before anything is built or written, for an output folder `out` that is a
    file, a target that exists but is not a file, and a target that exists without `force`."""
    if out.exists() and not out.is_dir():
        raise StarError(f"output {str(out)!r} exists and is not a folder")
    for target in targets:
        if target.exists() and not target.is_file():
            raise StarError(f"{str(target)!r} exists and is not a file")
    for target in targets:
        if target.exists() and not force:
            raise StarError(f"{str(target)!r} already exists (pass --force to overwrite)")


def write_all_or_nothing(out: Path, targets: list[Path], write: Callable[[list[Path]], None]) -> None:
    """Call `write` with a temporary name beside each of `targets` (files in folder `out`), then
    rename them all into place: a failure leaves the folder as it was, and removes it if this call
    created it."""
    created = not out.exists()
    temporary = [t.with_name(f".{t.name}.tmp") for t in targets]
    try:
        out.mkdir(parents=True, exist_ok=True)
        write(temporary)
        for tmp, target in zip(temporary, targets, strict=True):
            tmp.replace(target)
    except OSError as err:
        raise StarError(f"cannot write to {str(out)!r}: {err.strerror or err}") from None
    finally:
        for tmp in temporary:
            if tmp.is_file():
                tmp.unlink()
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
