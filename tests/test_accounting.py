"""ArchConfig's analytic accounting against the real modules: parameter counts (model, per block,
and transformers' own classes for the presets), decode-cache bytes, and FLOPs (FlopCounterMode)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from star.arch import (
    MLPFFN,
    ArchConfig,
    AttentionMixer,
    BlockConfig,
    IdentityMixer,
    LongConvMixer,
    RecurrenceMixer,
    ShortConvMixer,
    SwiGLUFFN,
    _sum_attended,
)
from star.model import DecodeState, StarLM
from star.presets import get_preset

REFERENCE_PARAMS = {
    "lfm2-350m": 354_483_968,
    "lfm2-700m": 742_489_344,
    "lfm2-1.2b": 1_170_340_608,
    "qwen3-0.6b": 596_049_920,
    "qwen3-1.7b": 1_720_574_976,
}
LFM2_OFFICIAL_INTERMEDIATE = {"lfm2-350m": 6656, "lfm2-700m": 10240, "lfm2-1.2b": 12288}

# --------------------------------------------------------------------------------------------------
# Small random architectures
# --------------------------------------------------------------------------------------------------


@st.composite
def attention_mixers(draw: st.DrawFn) -> AttentionMixer:
    kv = draw(st.integers(1, 3))
    return AttentionMixer(num_heads=kv * draw(st.integers(1, 3)), num_kv_heads=kv,
                          head_dim=draw(st.sampled_from([2, 4, 6, 8])), qk_norm=draw(st.booleans()),
                          window=draw(st.sampled_from([0, 0, 1, 3, 7])))


MIXERS = st.one_of(
    st.builds(ShortConvMixer, kernel=st.integers(1, 6)),
    st.builds(LongConvMixer, kernel=st.integers(2, 12)),
    attention_mixers(),
    st.builds(RecurrenceMixer, num_heads=st.integers(1, 3), head_dim=st.integers(1, 8)),
    st.just(IdentityMixer()),
)
FFN_CHOICES = st.one_of(st.none(), st.builds(SwiGLUFFN, hidden=st.integers(1, 24)),
                        st.builds(MLPFFN, hidden=st.integers(1, 24)))


@st.composite
def arch_configs(draw: st.DrawFn, max_blocks: int = 5) -> ArchConfig:
    """Small valid architectures mixing every mixer and FFN, weight sharing, KV sharing, untied heads."""
    blocks: list[BlockConfig] = []
    for i in range(draw(st.integers(1, max_blocks))):
        ffn = draw(FFN_CHOICES)
        weight_sources = [j for j, b in enumerate(blocks) if b.share_weights_with is None and b.share_kv_with is None]
        kv_sources = [j for j, b in enumerate(blocks)
                      if isinstance(b.mixer, AttentionMixer) and b.share_kv_with is None]
        choice = draw(st.sampled_from(["own", "own", "share_weights", "share_kv"]))
        if choice == "share_weights" and weight_sources:
            j = draw(st.sampled_from(weight_sources))
            blocks.append(BlockConfig(blocks[j].mixer, ffn, share_weights_with=j))
        elif choice == "share_kv" and kv_sources:
            j = draw(st.sampled_from(kv_sources))
            src = blocks[j].mixer
            mixer = AttentionMixer(num_heads=src.num_kv_heads * draw(st.integers(1, 3)),
                                   num_kv_heads=src.num_kv_heads, head_dim=src.head_dim,
                                   qk_norm=src.qk_norm, window=src.window)
            blocks.append(BlockConfig(mixer, ffn, share_kv_with=j))
        else:
            blocks.append(BlockConfig(draw(MIXERS), ffn))
        assert len(blocks) == i + 1
    return ArchConfig(hidden_size=draw(st.sampled_from([4, 8, 12, 16])), vocab_size=draw(st.integers(2, 40)),
                      blocks=tuple(blocks), tie_embeddings=draw(st.booleans())).validate()


def _model(config: ArchConfig) -> StarLM:
    torch.manual_seed(0)
    return StarLM(config).eval()


# --------------------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(arch_configs())
def test_params_equal_the_models_parameters(config):
    model = _model(config)
    assert config.params() == model.num_params() == len(torch.nn.utils.parameters_to_vector(model.parameters()))

    embedding = model.embed_tokens.weight.numel() + (0 if model.lm_head is None else model.lm_head.weight.numel())
    assert config.embedding_params() == embedding
    assert config.non_embedding_params() == config.params() - config.embedding_params()
    assert config.non_embedding_params() == model.num_params() - embedding

    seen: set[int] = set()
    for i, (block, layer) in enumerate(zip(config.blocks, model.layers, strict=True)):
        own = {id(p): p.numel() for p in layer.parameters()}
        if block.share_weights_with is not None and layer.mixer is not None:
            source_mixer = model.layers[block.share_weights_with].mixer
            assert layer.mixer is source_mixer  # one module, not a copy
            for p in layer.mixer.parameters():
                del own[id(p)]
        assert config.block_params(i) == sum(own.values()), f"block {i}"
        assert not seen & set(own)  # no parameter counted for two blocks
        seen |= set(own)


def test_shared_blocks_add_only_their_norms_and_ffn():
    attn = AttentionMixer(num_heads=4, num_kv_heads=2, head_dim=8, qk_norm=True)
    reader = AttentionMixer(num_heads=2, num_kv_heads=2, head_dim=8, qk_norm=True)
    conv = ShortConvMixer(kernel=3)
    config = ArchConfig(hidden_size=16, vocab_size=10, blocks=(
        BlockConfig(attn), BlockConfig(conv), BlockConfig(conv, share_weights_with=1),
        BlockConfig(reader, share_kv_with=0), BlockConfig(IdentityMixer()),
    ))
    d = 16
    assert config.block_params(0) == d + 2 * d * 32 + 2 * d * 16 + 2 * 8
    assert config.block_params(1) == d + 4 * d * d + 3 * d
    assert config.block_params(2) == d  # only its own pre-mixer norm
    assert config.block_params(3) == d + 2 * d * 16 + 8  # q and out projections, q-norm only
    assert config.block_params(4) == 0
    model = _model(config)
    assert not hasattr(model.layers[3].mixer, "k_proj") and not hasattr(model.layers[3].mixer, "k_layernorm")
    assert config.params() == model.num_params()


@pytest.mark.parametrize("name", list(REFERENCE_PARAMS))
def test_preset_params_match_transformers_own_classes(name):
    """Our count == transformers' model built (on the meta device) from a config made from our fields."""
    from transformers import Lfm2Config, Lfm2ForCausalLM, Qwen3Config, Qwen3ForCausalLM

    from star.export import to_hf_config

    config = get_preset(name)
    assert config.params() == REFERENCE_PARAMS[name]
    assert config.non_embedding_params() == REFERENCE_PARAMS[name] - config.vocab_size * config.hidden_size
    attn = next(b.mixer for b in config.blocks if isinstance(b.mixer, AttentionMixer))
    common = {"vocab_size": config.vocab_size, "hidden_size": config.hidden_size,
              "num_hidden_layers": len(config.blocks), "num_attention_heads": attn.num_heads,
              "num_key_value_heads": attn.num_kv_heads, "tie_word_embeddings": True}
    if name.startswith("lfm2"):
        kernel = next(b.mixer.kernel for b in config.blocks if isinstance(b.mixer, ShortConvMixer))
        layer_types = ["full_attention" if isinstance(b.mixer, AttentionMixer) else "conv" for b in config.blocks]
        lfm2 = {**common, "conv_L_cache": kernel, "layer_types": layer_types}
        hf_configs = [
            Lfm2Config(**lfm2, intermediate_size=config.blocks[0].ffn.hidden, block_auto_adjust_ff_dim=False),
            Lfm2Config(**lfm2, intermediate_size=LFM2_OFFICIAL_INTERMEDIATE[name], block_auto_adjust_ff_dim=True),
            to_hf_config(config),
        ]
        cls = Lfm2ForCausalLM
    else:
        hf_configs = [
            Qwen3Config(**common, intermediate_size=config.blocks[0].ffn.hidden, head_dim=attn.head_dim),
            to_hf_config(config),
        ]
        cls = Qwen3ForCausalLM
    for hf_config in hf_configs:
        with torch.device("meta"):
            hf_model = cls(hf_config)
        assert sum(p.numel() for p in hf_model.parameters()) == REFERENCE_PARAMS[name]  # tied head counted once


# --------------------------------------------------------------------------------------------------
# Cache bytes
# --------------------------------------------------------------------------------------------------


def _state_bytes(state: DecodeState) -> int:
    return sum(t.numel() * t.element_size() for layer in state.layers if layer is not None for t in layer.values())


def _prefill(model: StarLM, context: int, batch: int, dtype: torch.dtype, chunks: int) -> DecodeState:
    ids = torch.randint(0, model.config.vocab_size, (batch, context), generator=torch.Generator().manual_seed(0))
    state = model.init_state(batch, dtype)
    with torch.no_grad():
        for part in ids.tensor_split(chunks, dim=1):
            if part.shape[1]:
                model(part, state)
    assert state.position == context
    return state


@settings(max_examples=40, deadline=None)
@given(arch_configs(), st.integers(0, 12), st.sampled_from(["fp32", "bf16", "bf16-state"]), st.integers(1, 3))
def test_cache_bytes_equal_the_decode_states_bytes(config, context, precision, chunks):
    """fp32: model and state fp32; bf16: the whole model in bf16; bf16-state: fp32 model, bf16 cache."""
    model = _model(config)
    if precision == "bf16":
        model = model.to(torch.bfloat16)
    dtype = torch.float32 if precision == "fp32" else torch.bfloat16
    state = _prefill(model, context, 1, dtype, chunks)
    dtype_bytes = 4 if precision == "fp32" else 2
    assert _state_bytes(state) == config.cache_bytes(context, dtype_bytes)


def test_cache_holds_window_tokens_and_recurrent_state_in_fp32():
    window = AttentionMixer(num_heads=2, num_kv_heads=1, head_dim=4, window=5)
    config = ArchConfig(hidden_size=8, vocab_size=16, blocks=(
        BlockConfig(window), BlockConfig(AttentionMixer(num_heads=2, num_kv_heads=2, head_dim=4)),
        BlockConfig(RecurrenceMixer(num_heads=2, head_dim=3)), BlockConfig(ShortConvMixer(kernel=4)),
        BlockConfig(window, share_kv_with=0),
    ))
    model = _model(config).to(torch.bfloat16)
    for context in (3, 5, 9):
        batch = 3
        state = _prefill(model, context, batch, torch.bfloat16, 2)
        windowed, full, recurrent, conv, reader = state.layers
        assert windowed["k"].shape == windowed["v"].shape == (batch, 1, min(context, 5), 4)
        assert full["k"].shape == (batch, 2, context, 4)
        assert recurrent["S"].dtype == torch.float32 and recurrent["S"].shape == (batch, 2, 3, 3)
        assert conv["window"].dtype == torch.bfloat16 and conv["window"].shape == (batch, 8, 3)
        assert reader is None
        expected = (2 * 4 * min(context, 5) + 2 * 2 * 4 * context + 8 * 3) * 2 + 2 * 3 * 3 * 4
        assert config.cache_bytes(context, 2) * batch == _state_bytes(state) == expected * batch


LFM2_CACHE_BYTES = {  # bf16, closed form 6·2·kv_heads·head_dim·C·2 + 10·(kernel−1)·hidden·2
    ("lfm2-350m", 4096): 50_372_608,
    ("lfm2-350m", 32768): 402_694_144,
    ("lfm2-700m", 4096): 50_393_088,
    ("lfm2-700m", 32768): 402_714_624,
    ("lfm2-1.2b", 4096): 50_413_568,
    ("lfm2-1.2b", 32768): 402_735_104,
}


@pytest.mark.parametrize(("name", "context"), list(LFM2_CACHE_BYTES))
def test_lfm2_cache_bytes_closed_form(name, context):
    config = get_preset(name)
    attn = [b.mixer for b in config.blocks if isinstance(b.mixer, AttentionMixer)]
    convs = [b.mixer for b in config.blocks if isinstance(b.mixer, ShortConvMixer)]
    assert len(attn) == 6 and len(convs) == 10
    kv, hd, kernel, hidden = attn[0].num_kv_heads, attn[0].head_dim, convs[0].kernel, config.hidden_size
    closed = 6 * 2 * kv * hd * context * 2 + 10 * (kernel - 1) * hidden * 2
    assert config.cache_bytes(context, 2) == closed == LFM2_CACHE_BYTES[(name, context)]


# --------------------------------------------------------------------------------------------------
# FLOPs
# --------------------------------------------------------------------------------------------------


def _counted(fn, *args) -> int:
    """FLOPs FlopCounterMode sees, with SDPA forced onto the math path (the fused CPU kernel is not
    counted): matrix products and convolutions only, 2 per multiply-accumulate."""
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        fn(*args)
    return counter.get_total_flops()


def _gates(config: ArchConfig, tokens: int) -> int:
    """The elementwise gate multiplies in ArchConfig.flops, which FlopCounterMode does not see."""
    d, total = config.hidden_size, 0
    for block in config.blocks:
        if isinstance(block.mixer, ShortConvMixer | LongConvMixer):
            total += 2 * d * tokens  # B ⊙ x and C ⊙ y
        if isinstance(block.mixer, RecurrenceMixer):
            total += block.mixer.num_heads * block.mixer.head_dim**2 * tokens  # decay ⊙ state
        if isinstance(block.ffn, SwiGLUFFN):
            total += block.ffn.hidden * tokens  # silu(w1 x) ⊙ w3 x
    return total


def _ids(config: ArchConfig, length: int) -> Tensor:
    return torch.randint(0, config.vocab_size, (1, length), generator=torch.Generator().manual_seed(0))


def _config(blocks: list[BlockConfig], hidden: int = 16, vocab: int = 24, tie: bool = True) -> ArchConfig:
    return ArchConfig(hidden_size=hidden, vocab_size=vocab, blocks=tuple(blocks), tie_embeddings=tie).validate()


def test_prefill_flops_of_convolutions_and_ffns_match_the_counter():
    config = _config([
        BlockConfig(ShortConvMixer(kernel=3), SwiGLUFFN(hidden=40)),
        BlockConfig(ShortConvMixer(kernel=1), None),
        BlockConfig(LongConvMixer(kernel=9), MLPFFN(hidden=24)),
        BlockConfig(IdentityMixer(), MLPFFN(hidden=20)),
        BlockConfig(IdentityMixer(), None),
        BlockConfig(ShortConvMixer(kernel=3), SwiGLUFFN(hidden=8), share_weights_with=0),
    ], tie=False)
    model = _model(config)
    for tokens in (1, 7, 20):
        assert _counted(model, _ids(config, tokens)) == config.flops(tokens, 0) - _gates(config, tokens)


def test_matmul_only_model_matches_the_counter_exactly():
    config = _config([BlockConfig(IdentityMixer(), MLPFFN(hidden=40)), BlockConfig(IdentityMixer(), None)])
    model = _model(config)
    assert _gates(config, 11) == 0
    assert _counted(model, _ids(config, 11)) == config.flops(11, 0) == 11 * (4 * 16 * 40 + 2 * 16 * 24)


ATTENTION_CONFIGS = {
    "mha": [BlockConfig(AttentionMixer(num_heads=4, num_kv_heads=4, head_dim=8), SwiGLUFFN(hidden=24))],
    "gqa_no_qk_norm": [BlockConfig(AttentionMixer(num_heads=4, num_kv_heads=2, head_dim=6, qk_norm=False))],
    "mqa": [BlockConfig(AttentionMixer(num_heads=3, num_kv_heads=1, head_dim=4), MLPFFN(hidden=12))],
    "window": [BlockConfig(AttentionMixer(num_heads=2, num_kv_heads=1, head_dim=8, window=5))],
    "kv_sharing": [BlockConfig(AttentionMixer(num_heads=4, num_kv_heads=2, head_dim=4, window=6)),
                   BlockConfig(AttentionMixer(num_heads=2, num_kv_heads=2, head_dim=4, window=6), share_kv_with=0)],
}


def _masked_keys(config: ArchConfig, tokens: int, context: int) -> int:
    """Σ over attention blocks of 4·heads·head_dim × (keys SDPA multiplies but the mask hides): the
    full (tokens × cached+new) score matrix minus the keys ArchConfig counts as attended."""
    total = 0
    for block in config.blocks:
        if isinstance(block.mixer, AttentionMixer):
            m = block.mixer
            cached = context if m.window == 0 else min(context, m.window)
            computed = tokens * (cached + tokens)
            total += 4 * m.num_heads * m.head_dim * (computed - _sum_attended(context, tokens, m.window))
    return total


@pytest.mark.parametrize("name", list(ATTENTION_CONFIGS))
def test_attention_flops_match_the_counter(name):
    config = _config(ATTENTION_CONFIGS[name])
    model = _model(config)
    ids = _ids(config, 14)
    # prefill: SDPA multiplies the whole square score matrix, masked half included
    for tokens in (1, 9):
        expected = config.flops(tokens, 0) + _masked_keys(config, tokens, 0) - _gates(config, tokens)
        assert _counted(model, ids[:, :tokens]) == expected
    # decode steps: with full attention the counter sees exactly context+1 keys, as ArchConfig counts;
    # a sliding window keeps `window` cached keys and the new one, and the mask hides the oldest
    for context in (0, 3, 5, 9, 13):
        state = model.init_state(1)
        if context:
            model(ids[:, :context], state)
        counted = _counted(model.step, ids[:, context], state)
        assert counted == config.flops(1, context) + _masked_keys(config, 1, context) - _gates(config, 1)
        windowed = any(b.mixer.window for b in config.blocks)
        assert _masked_keys(config, 1, context) == 0 or (windowed and context >= 5)


def test_recurrence_decode_step_flops_match_the_counter():
    config = _config([BlockConfig(RecurrenceMixer(num_heads=3, head_dim=5), SwiGLUFFN(hidden=20)),
                      BlockConfig(RecurrenceMixer(num_heads=2, head_dim=8), None)])
    model = _model(config)
    ids = _ids(config, 10)
    state = model.init_state(1)
    model(ids[:, :9], state)
    assert _counted(model.step, ids[:, 9], state) == config.flops(1, 9) - _gates(config, 1)


def test_operator_flop_formulas_by_hand():
    """Operators whose arithmetic the counter cannot see (elementwise gates, the step-path convolution,
    the recurrence's decay) or sees differently (the chunked recurrence): their formulas, by hand."""
    d = 4
    # short conv k=3, 2 tokens: in_proj 2·4·12, gates 4 + 4, conv 2·4·3, out_proj 2·4·4 per token
    assert ShortConvMixer(kernel=3).flops(d, 2, 0) == 2 * (96 + 4 + 24 + 4 + 32) == 320
    assert ShortConvMixer(kernel=3).flops(d, 2, 1000) == 320  # context-free
    assert LongConvMixer(kernel=10).flops(d, 1, 0) == 96 + 4 + 80 + 4 + 32 == 216
    # recurrence, 2 heads of 3: q,k,v 2·4·18, gate 2·4·2, out 2·6·4, state 3·2·9, readout 2·2·9
    assert RecurrenceMixer(num_heads=2, head_dim=3).flops(d, 1, 0) == 144 + 16 + 48 + 54 + 36 == 298
    # attention 2 heads, 1 KV head, head_dim 2, window 3; 3 new tokens after 2 cached: keys 3 + 3 + 3
    attn = AttentionMixer(num_heads=2, num_kv_heads=1, head_dim=2, window=3)
    projections = 3 * (2 * 4 * (2 + 2) * 2 + 2 * 2 * 2 * 4)
    assert attn.flops(d, 3, 2) == projections + 4 * 2 * 2 * 9 == 432
    assert attn.flops(d, 3, 2, owns_kv=False) == 3 * (2 * 4 * 2 * 2 + 2 * 2 * 2 * 4) + 144 == 336
    assert IdentityMixer().flops(d, 5, 5) == 0
    assert SwiGLUFFN(hidden=6).flops(d, 2) == 2 * (6 * 4 * 6 + 6) == 300
    assert MLPFFN(hidden=6).flops(d, 2) == 2 * 4 * 4 * 6 == 192
    config = _config([BlockConfig(ShortConvMixer(kernel=3), MLPFFN(hidden=6))], hidden=d, vocab=10)
    assert config.flops(2, 0) == 320 + 192 + 2 * 2 * 4 * 10


def test_short_conv_step_is_invisible_to_the_counter_but_its_projections_are_not():
    """The decode step's convolution is an elementwise multiply-and-sum: the counter sees only the
    projections, which is why prefill (a real conv1d) carries the conv-tap check above."""
    config = _config([BlockConfig(ShortConvMixer(kernel=4), None)])
    model = _model(config)
    state = model.init_state(1)
    d = config.hidden_size
    taps_and_gates = 2 * d * 4 + 2 * d
    assert _counted(model.step, _ids(config, 1)[:, 0], state) == config.flops(1, 0) - taps_and_gates


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 200), st.integers(0, 200), st.integers(0, 60))
def test_sum_attended_matches_brute_force(context, tokens, window):
    brute = sum(context + j + 1 if window == 0 else min(context + j + 1, window) for j in range(tokens))
    assert _sum_attended(context, tokens, window) == brute


@settings(max_examples=60, deadline=None)
@given(arch_configs(), st.integers(0, 40), st.integers(1, 30))
def test_prefill_flops_split_into_decode_steps(config, context, tokens):
    """Processing tokens at once costs the same as one at a time (the formulas count attended keys)."""
    assert config.flops(tokens, context) == sum(config.flops(1, context + i) for i in range(tokens))
    assert config.flops(tokens, context) > 0
