"""Latency and memory predictions from a roofline device model.

A roofline model says an operation takes as long as the slower of its arithmetic (FLOPs / attainable
FLOP/s) and its memory traffic (bytes / attainable bandwidth).  At batch 1, decoding is almost always
memory-bound (every weight and the whole cache are read per token) and prefill compute-bound, which
is why convolution blocks (tiny state, no growing cache) decode faster than attention at long context.

These devices are MODELS built from public specifications, not measurements; their numbers say so in
`kind`.  They give the search a device-aware ranking for thousands of genomes at no cost.  A measured
profile of a real machine (`star profile`, once it exists) replaces them where it is available.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from star.arch import ArchConfig, AttentionMixer
from star.errors import StarError


@dataclass(frozen=True)
class DeviceModel:
    """Attainable throughput of one device at batch 1, with the sources of each figure."""

    name: str
    description: str
    peak_flops: float  # FLOP/s at the inference dtype, all cores
    bandwidth: float  # bytes/s, DRAM
    compute_efficiency: float  # fraction of peak reached by GEMM-heavy prefill
    memory_efficiency: float  # fraction of bandwidth reached by weight/cache streaming at decode
    overhead_ms_per_block: float  # dispatch and synchronisation per block and call
    weight_bytes: float = 2.0  # bytes per weight (2: bf16/fp16)
    p95_over_p50: float = 1.15  # decode jitter; a model cannot know it, so it is an assumption
    sources: str = ""
    kind: str = "roofline model (public specifications), not a measurement"

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


DEVICES: dict[str, DeviceModel] = {
    "ryzen-hx370": DeviceModel(
        name="ryzen-hx370",
        description="AMD Ryzen AI 9 HX 370 laptop CPU (4 Zen 5 + 8 Zen 5c cores, LPDDR5X-7500)",
        peak_flops=1.5e12, bandwidth=120e9, compute_efficiency=0.35, memory_efficiency=0.6,
        overhead_ms_per_block=0.02,
        sources="AMD product page: 12 cores, up to 5.1 GHz, AVX-512 on 256-bit datapaths (32 fp32 FLOP/cycle/core); "
                "LPDDR5X-7500 on a 128-bit bus = 120 GB/s"),
    "s24-ultra": DeviceModel(
        name="s24-ultra",
        description="Samsung Galaxy S24 Ultra CPU (Snapdragon 8 Gen 3: 1 Cortex-X4 + 5 A720 + 2 A520, LPDDR5X-8533)",
        peak_flops=0.7e12, bandwidth=68.3e9, compute_efficiency=0.3, memory_efficiency=0.5,
        overhead_ms_per_block=0.04,
        sources="Qualcomm/Arm specifications: 128-bit NEON FMA pipes (4 on X4, 2 on A720), fp16 at up to 3.3 GHz; "
                "LPDDR5X-8533 on a 64-bit bus = 68.3 GB/s"),
}
DEFAULT_DEVICE = "ryzen-hx370"


def get_device(name: str) -> DeviceModel:
    if name not in DEVICES:
        raise StarError(f"unknown device profile {name!r} (known: {', '.join(DEVICES)})")
    return DEVICES[name]


def _seconds(device: DeviceModel, flops: float, bytes_moved: float, blocks: int) -> float:
    compute = flops / (device.peak_flops * device.compute_efficiency)
    memory = bytes_moved / (device.bandwidth * device.memory_efficiency)
    return max(compute, memory) + blocks * device.overhead_ms_per_block / 1e3


def weight_bytes(config: ArchConfig, device: DeviceModel) -> float:
    """Bytes of weights read per forward pass: every block, the final norm and the LM head (a tied
    embedding is read once, as the head; the lookup of one row per token is negligible)."""
    head = config.vocab_size * config.hidden_size
    return (config.non_embedding_params() + head) * device.weight_bytes


def peak_memory_bytes(config: ArchConfig, context: int, value_bytes: float, runtime_bytes: float = 0.0) -> float:
    """Peak resident memory of decoding one token with `context` tokens cached, as our model runs it.

    Weights, plus the whole cache, plus what one step holds on top: the attention layer whose cache
    grows by concatenation briefly holds its old and its new cache (the largest such layer is the
    peak), and the step's activations (the residual stream, the widest intermediate, the logits).
    `runtime_bytes` is the runtime's fixed working memory, which a measured profile calibrates."""
    d = config.hidden_size
    growth = max([block.mixer.cache_values(d, context) * value_bytes for block in config.blocks
                  if block.owns_kv and isinstance(block.mixer, AttentionMixer)], default=0)
    widest = max([3 * d] + [2 * b.ffn.hidden for b in config.blocks if b.ffn is not None])
    activations = 4 * (4 * d + widest + 2 * config.vocab_size)
    return (config.params() * value_bytes + config.cache_bytes(context, int(value_bytes)) + growth + activations
            + runtime_bytes)


def predict(config: ArchConfig, device: DeviceModel | str = DEFAULT_DEVICE, prompt: int = 1024,
            context: int = 4096) -> dict[str, float]:
    """Time to first token for a `prompt`-token prompt, prefill throughput, decode latency per token at
    `context` (p50 and p95) and peak memory while decoding at `context` (`peak_memory_bytes`)."""
    if prompt < 1 or context < 1:
        raise StarError(f"prompt and context must be >= 1, got {prompt} and {context}")
    device = get_device(device) if isinstance(device, str) else device
    blocks = len(config.blocks)
    weights = weight_bytes(config, device)
    prefill_s = _seconds(device, config.flops(prompt, 0), weights + config.cache_bytes(prompt), blocks)
    decode_s = _seconds(device, config.flops(1, context), weights + config.cache_bytes(context), blocks)
    peak = peak_memory_bytes(config, context, device.weight_bytes)
    return {
        "ttft_ms": 1e3 * prefill_s,
        "prefill_tok_s": prompt / prefill_s,
        "decode_ms": 1e3 * decode_s,
        "decode_ms_p95": 1e3 * decode_s * device.p95_over_p50,
        "peak_memory": float(peak),
    }
