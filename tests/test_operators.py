"""The LIV operators and StarLM: the cached decoding path equals the full-sequence forward, every mixer
is causal (and reaches exactly as far back as it should), and bf16 autocast runs everywhere."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from star import operators
from star.arch import (
    LAYOUT_LETTERS,
    MIXERS,
    MLPFFN,
    ArchConfig,
    AttentionMixer,
    BlockConfig,
    IdentityMixer,
    LongConvMixer,
    Mixer,
    RecurrenceMixer,
    ShortConvMixer,
    SwiGLUFFN,
)
from star.model import StarLM, build_mixer
from star.operators import Attention, Context, LongConv, Recurrence, init_weights

HIDDEN = 32
VOCAB = 64
BATCH = 2
TOL = 1e-5  # fp32 agreement between the cached and the full-sequence paths

SWIGLU = SwiGLUFFN(hidden=48)
MLP = MLPFFN(hidden=40)

# name -> (mixer, sequence length). Recurrence runs past its chunk of 64, at a length that is no multiple.
OPERATOR_CASES: dict[str, tuple[Mixer, int]] = {
    "short_conv_k1": (ShortConvMixer(kernel=1), 24),
    "short_conv_k2": (ShortConvMixer(kernel=2), 24),
    "short_conv_k3": (ShortConvMixer(kernel=3), 24),
    "short_conv_k5": (ShortConvMixer(kernel=5), 24),
    "long_conv": (LongConvMixer(kernel=20), 40),
    "mha": (AttentionMixer(num_heads=4, num_kv_heads=4, head_dim=8, qk_norm=True), 24),
    "mha_no_qk_norm": (AttentionMixer(num_heads=4, num_kv_heads=4, head_dim=8, qk_norm=False), 24),
    "gqa": (AttentionMixer(num_heads=4, num_kv_heads=2, head_dim=8, qk_norm=True), 24),
    "gqa_no_qk_norm": (AttentionMixer(num_heads=4, num_kv_heads=2, head_dim=8, qk_norm=False), 24),
    "mqa": (AttentionMixer(num_heads=4, num_kv_heads=1, head_dim=8, qk_norm=True), 24),
    "mqa_no_qk_norm": (AttentionMixer(num_heads=4, num_kv_heads=1, head_dim=8, qk_norm=False), 24),
    "gqa_window": (AttentionMixer(num_heads=4, num_kv_heads=2, head_dim=8, qk_norm=True, window=5), 40),
    "mqa_window_no_qk_norm": (AttentionMixer(num_heads=2, num_kv_heads=1, head_dim=16, qk_norm=False, window=3), 40),
    "recurrence": (RecurrenceMixer(num_heads=2, head_dim=16), 150),
}


def _randomise(module: nn.Module, std: float) -> None:
    """A wider init than training's 0.02, so that every mixer moves the output well above the 1e-5
    tolerance, plus non-default decays so that decays and filters are really exercised (recurrence
    gates 0.5 .. 0.95: much faster decays lose fp32 digits in the chunked form's cumulative log-decay)."""
    init_weights(module, std=std)
    for sub in module.modules():
        if isinstance(sub, LongConv):
            nn.init.normal_(sub.decay, std=1.0)
        if isinstance(sub, Recurrence):
            nn.init.uniform_(sub.gate_proj.bias, 0.0, 3.0)


def _mixes_tokens(config: ArchConfig) -> bool:
    """Whether any block carries information between positions (a kernel-1 conv does not)."""
    return any(b.mixer.kind != "identity" and getattr(b.mixer, "kernel", 2) > 1 for b in config.blocks)


def _config(blocks: list[BlockConfig], tie: bool = True) -> ArchConfig:
    return ArchConfig(hidden_size=HIDDEN, vocab_size=VOCAB, blocks=tuple(blocks), tie_embeddings=tie,
                      rope_theta=10_000.0).validate()


def _stack(mixer: Mixer, ffn: SwiGLUFFN | MLPFFN | None = SWIGLU, depth: int = 2) -> list[BlockConfig]:
    return [BlockConfig(mixer=mixer, ffn=ffn) for _ in range(depth)]


def _model_cases() -> dict[str, tuple[ArchConfig, int]]:
    cases = {name: (_config(_stack(mixer)), length) for name, (mixer, length) in OPERATOR_CASES.items()}
    cases["long_conv_mlp"] = (_config(_stack(LongConvMixer(kernel=12), MLP)), 30)
    attn = AttentionMixer(num_heads=4, num_kv_heads=2, head_dim=8, qk_norm=True)
    attn_w = AttentionMixer(num_heads=4, num_kv_heads=2, head_dim=8, qk_norm=False, window=4)
    reader = AttentionMixer(num_heads=2, num_kv_heads=2, head_dim=8, qk_norm=True)  # fewer query heads
    cases["kv_sharing"] = (_config([
        BlockConfig(attn, SWIGLU),
        BlockConfig(ShortConvMixer(kernel=3), SWIGLU),
        BlockConfig(reader, MLP, share_kv_with=0),
    ]), 30)
    cases["kv_sharing_window"] = (_config([
        BlockConfig(attn_w, None),
        BlockConfig(attn_w, SWIGLU, share_kv_with=0),
        BlockConfig(attn_w, SWIGLU, share_kv_with=0),
    ]), 30)
    conv, rec = ShortConvMixer(kernel=4), RecurrenceMixer(num_heads=2, head_dim=8)
    cases["weight_sharing"] = (_config([
        BlockConfig(conv, SWIGLU),
        BlockConfig(attn_w, MLP),
        BlockConfig(conv, None, share_weights_with=0),
        BlockConfig(attn_w, SWIGLU, share_weights_with=1),
        BlockConfig(rec, SWIGLU),
        BlockConfig(rec, MLP, share_weights_with=4),
    ]), 80)
    cases["identity_blocks"] = (_config([
        BlockConfig(IdentityMixer(), SWIGLU),
        BlockConfig(attn, None),
        BlockConfig(IdentityMixer(), None),
        BlockConfig(ShortConvMixer(kernel=3), MLP),
        BlockConfig(IdentityMixer(), MLP),
    ]), 20)
    cases["ffn_variants_untied"] = (_config([
        BlockConfig(ShortConvMixer(kernel=2), None),
        BlockConfig(attn, MLP),
        BlockConfig(rec, SWIGLU),
        BlockConfig(LongConvMixer(kernel=6), None),
    ], tie=False), 70)
    return cases


MODEL_CASES = _model_cases()


def _model(config: ArchConfig, seed: int = 0) -> StarLM:
    torch.manual_seed(seed)
    model = StarLM(config)
    _randomise(model, std=0.05)  # logits of order one
    return model.eval()


def _ids(length: int, seed: int = 1) -> Tensor:
    return torch.randint(0, VOCAB, (BATCH, length), generator=torch.Generator().manual_seed(seed))


def _chunk_sizes(length: int) -> list[int]:
    """Uneven chunks: a single token, a long one (crossing the recurrence chunk for long inputs), two."""
    half = length // 2
    return [1, half - 1, 2, length - half - 2]


def _close(actual: Tensor, expected: Tensor) -> None:
    torch.testing.assert_close(actual, expected, atol=TOL, rtol=0)


# --------------------------------------------------------------------------------------------------
# Operator level
# --------------------------------------------------------------------------------------------------


class SharedKVPair(nn.Module):
    """Two attention modules where the second reads the first's keys and values (blocks 0 and 1)."""

    def __init__(self, mixer: AttentionMixer, reader: AttentionMixer) -> None:
        super().__init__()
        self.source = Attention(HIDDEN, mixer, 10_000.0, 1e-5)
        self.reader = Attention(HIDDEN, reader, 10_000.0, 1e-5, kv_source=0)

    def init_state(self, batch: int, device: torch.device, dtype: torch.dtype) -> dict:
        assert self.reader.init_state(batch, device, dtype) is None  # a reader keeps no cache
        return self.source.init_state(batch, device, dtype)

    def forward(self, x: Tensor, state: dict | None = None, ctx: Context | None = None) -> Tensor:
        ctx = ctx or Context()
        ctx.layer = 0
        y = self.source(x, state, ctx)
        ctx.layer = 1
        return y + self.reader(torch.tanh(3 * x), None, ctx)

    def step(self, x: Tensor, state: dict, ctx: Context) -> Tensor:
        ctx.layer = 0
        y = self.source.step(x, state, ctx)
        ctx.layer = 1
        return y + self.reader.step(torch.tanh(3 * x), None, ctx)


def _operator_cases() -> dict[str, tuple[nn.Module, int]]:
    config = _config(_stack(ShortConvMixer(), None, depth=1))
    cases = {}
    for name, (mixer, length) in OPERATOR_CASES.items():
        torch.manual_seed(0)
        cases[name] = (build_mixer(config, BlockConfig(mixer)), length)
    window = AttentionMixer(num_heads=4, num_kv_heads=2, head_dim=8, qk_norm=True, window=6)
    reader = AttentionMixer(num_heads=2, num_kv_heads=2, head_dim=8, qk_norm=True, window=6)
    torch.manual_seed(0)
    cases["shared_kv_pair"] = (SharedKVPair(window, reader), 30)
    for module, _ in cases.values():
        _randomise(module, std=0.2)  # outputs of order one
        module.eval()
    return cases


OPERATORS = _operator_cases()


def _operator_input(length: int) -> Tensor:
    return torch.randn(BATCH, length, HIDDEN, generator=torch.Generator().manual_seed(2))


def _steps(module: nn.Module, x: Tensor, state: dict, start: int) -> Tensor:
    return torch.stack([module.step(x[:, t], state, Context(position=start + t)) for t in range(x.shape[1])], 1)


@pytest.mark.parametrize("name", list(OPERATORS))
@torch.no_grad()
def test_operator_cached_paths_match_full_forward(name):
    module, length = OPERATORS[name]
    x = _operator_input(length)
    full = module(x, None, Context())
    assert full.abs().max() > 1e-3  # a real, non-trivial output

    def fresh() -> dict:
        return module.init_state(BATCH, x.device, x.dtype)

    # (a) token by token from an empty state
    _close(_steps(module, x, fresh(), 0), full)

    # (b) prefill a prefix with the state, then decode the rest token by token
    prefix = 2 * length // 3 + 1
    state = fresh()
    prefilled = module(x[:, :prefix], state, Context(position=0))
    decoded = _steps(module, x[:, prefix:], state, prefix)
    _close(torch.cat([prefilled, decoded], 1), full)

    # (c) chunked prefill: several forward calls that carry the state
    state, outs, pos = fresh(), [], 0
    for size in _chunk_sizes(length):
        outs.append(module(x[:, pos:pos + size], state, Context(position=pos)))
        pos += size
    _close(torch.cat(outs, 1), full)


@pytest.mark.parametrize("name", list(OPERATORS))
@torch.no_grad()
def test_operator_is_causal(name):
    module, length = OPERATORS[name]
    x = _operator_input(length)
    t = length // 2
    changed = x.clone()
    changed[:, t] = torch.randn(BATCH, HIDDEN)
    a, b = module(x), module(changed)
    torch.testing.assert_close(a[:, :t], b[:, :t], atol=1e-6, rtol=0)
    assert (a[:, t] - b[:, t]).abs().max() > 1e-4


@pytest.mark.parametrize(("name", "reach"), [("short_conv_k1", 1), ("short_conv_k2", 2), ("short_conv_k3", 3),
                                             ("short_conv_k5", 5), ("long_conv", 20), ("gqa_window", 5),
                                             ("mqa_window_no_qk_norm", 3)])
@torch.no_grad()
def test_operator_reach_is_exactly_its_kernel_or_window(name, reach):
    """Changing input t changes outputs t .. t+reach-1 and nothing else."""
    module, length = OPERATORS[name]
    x = _operator_input(length)
    t = 4
    changed = x.clone()
    changed[:, t] = torch.randn(BATCH, HIDDEN)
    diff = (module(x) - module(changed)).abs().amax(dim=(0, 2))
    assert torch.all(diff[:t] == 0)
    assert torch.all(diff[t:t + reach] > 1e-6)
    assert torch.all(diff[t + reach:] < 1e-6)


@torch.no_grad()
def test_shared_kv_reader_sees_the_sources_keys():
    """The reader's output depends on the source's input only through the published keys/values."""
    pair, length = OPERATORS["shared_kv_pair"]
    x = _operator_input(length)
    ctx = Context()
    ctx.layer = 0
    pair.source(x, None, ctx)
    ctx.layer = 1
    first = pair.reader(x, None, ctx)
    ctx.layer = 0
    pair.source(x.flip(1), None, ctx)
    ctx.layer = 1
    second = pair.reader(x, None, ctx)
    assert (first - second).abs().max() > 1e-4


# --------------------------------------------------------------------------------------------------
# Model level
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(MODEL_CASES))
@torch.no_grad()
def test_model_cached_paths_match_full_forward(name):
    config, length = MODEL_CASES[name]
    model = _model(config)
    ids = _ids(length)
    full = model(ids)
    assert full.shape == (BATCH, length, VOCAB)

    # (a) token by token from an empty state
    state = model.init_state(BATCH)
    _close(torch.stack([model.step(ids[:, t], state) for t in range(length)], 1), full)
    assert state.position == length

    # (b) prefill then decode
    prefix = length // 2 + 3
    state = model.init_state(BATCH)
    prefilled = model(ids[:, :prefix], state)
    assert state.position == prefix
    decoded = torch.stack([model.step(ids[:, t], state) for t in range(prefix, length)], 1)
    _close(torch.cat([prefilled, decoded], 1), full)
    if _mixes_tokens(config):  # the comparison can fail: decoding without the prefix's cache differs
        state = model.init_state(BATCH)
        state.position = prefix
        forgetful = torch.stack([model.step(ids[:, t], state) for t in range(prefix, length)], 1)
        assert (forgetful - full[:, prefix:]).abs().max() > 1e-3

    # (c) chunked prefill
    state, outs, pos = model.init_state(BATCH), [], 0
    for size in _chunk_sizes(length):
        outs.append(model(ids[:, pos:pos + size], state))
        pos += size
    _close(torch.cat(outs, 1), full)


@pytest.mark.parametrize("name", list(MODEL_CASES))
@torch.no_grad()
def test_model_is_causal(name):
    config, length = MODEL_CASES[name]
    model = _model(config)
    ids = _ids(length)
    t = length // 2
    changed = ids.clone()
    changed[:, t] = (ids[:, t] + 1) % VOCAB
    a, b = model(ids), model(changed)
    torch.testing.assert_close(a[:, :t], b[:, :t], atol=1e-6, rtol=0)
    assert (a[:, t] - b[:, t]).abs().max() > 1e-4
    if _mixes_tokens(config):
        assert (a[:, t + 1:] - b[:, t + 1:]).abs().max() > 1e-6  # the change does travel forward


@torch.no_grad()
def test_model_without_token_mixing_is_position_wise():
    config = _config([BlockConfig(IdentityMixer(), SWIGLU), BlockConfig(IdentityMixer(), MLP)])
    model = _model(config)
    ids = _ids(12)
    changed = ids.clone()
    changed[:, 5] = (ids[:, 5] + 1) % VOCAB
    diff = (model(ids) - model(changed)).abs().amax(dim=(0, 2))
    assert diff[5] > 1e-4
    assert torch.all(diff[:5] == 0) and torch.all(diff[6:] == 0)


@pytest.mark.parametrize("name", list(MODEL_CASES))
@torch.no_grad()
def test_bf16_autocast_gives_finite_logits(name):
    config, length = MODEL_CASES[name]
    model = _model(config)
    ids = _ids(length)
    reference = model(ids)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(ids)
        state = model.init_state(BATCH, torch.bfloat16)
        model(ids[:, :-2], state)
        stepped = torch.stack([model.step(ids[:, t], state) for t in (length - 2, length - 1)], 1)
    assert torch.isfinite(logits).all() and torch.isfinite(stepped).all()
    scale = reference.abs().mean()  # bf16-sized errors (a few percent), not garbage
    assert (logits.float() - reference).abs().mean() < 0.05 * scale
    assert (stepped.float() - reference[:, -2:]).abs().mean() < 0.05 * scale


@pytest.mark.parametrize("kind", list(MIXERS))
def test_every_mixer_kind_is_one_registry_entry(kind):
    """A mixer kind's config class says everything the rest of star asks of a kind: its layout letter,
    the operator class that runs it (built by the model from that name alone), the transformers
    layer it exports as, and the settings a latency profile times.  Each is checked here, so a new
    kind that forgets one fails this test and not a search hours later."""
    mixer = MIXERS[kind]
    assert mixer.kind == kind and LAYOUT_LETTERS[kind] == mixer.letter and len(mixer.letter) == 1
    assert mixer.hf_layer in (None, "conv", "full_attention")  # transformers' Lfm2 layer types
    settings = mixer.profiled(128) or [mixer()]
    for spec in settings:
        assert isinstance(spec, mixer)
        spec.validate(128)
        config = ArchConfig(hidden_size=128, vocab_size=64, blocks=(BlockConfig(spec, SwiGLUFFN(hidden=256)),))
        module = StarLM(config).layers[0].mixer
        if mixer.operator is None:
            assert module is None
        else:
            assert type(module) is getattr(operators, mixer.operator)
            assert sum(p.numel() for p in module.parameters()) == spec.params(128)
    assert (mixer.operator is None) == (mixer.profiled(128) == [])  # what runs is what a profile times
