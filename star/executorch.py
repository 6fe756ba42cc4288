"""Export to ExecuTorch, the runtime that phones and other edge devices run, and run its programs here.

`star export --format executorch` writes one `.pte` program with two methods that share the decode
state (ExecuTorch's shared mutable buffers):
- `prefill(tokens)`: a prompt of exactly `prompt` tokens (int64, shape (1, prompt)) from position 0;
  writes every block's cache and returns the logits of the last position, (1, vocab);
- `decode(token, position)`: one token (1, 1) at `position` (int64, shape (1,)); returns (1, vocab).
Every cache has a fixed size planned ahead, as ExecuTorch wants: attention keeps `context` slots (a
sliding window only `window`), convolutions and recurrences their usual fixed-size state.  Linear
layers and the other operators XNNPACK supports run in its delegate, fp32; attention (prefill, where
the prompt fits the cache, and decode) runs in ExecuTorch's LLM kernels (`llama::custom_sdpa`,
`llama::update_cache`, shipped in its wheel);
`quantize` adds a second program with 8-bit weights and 8-bit dynamically quantised activations in
the linear layers.

ExecuTorch is an optional extra (`pip install -e '.[deploy]'`): everything else works without it,
and these functions say in one line what to install.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from star.arch import ArchConfig
from star.errors import StarError
from star.model import StarLM
from star.operators import Attention, Context
from star.validate import check_memory, first_line

INSTALL_HINT = "pip install -c constraints.txt -e '.[deploy]'"
PROGRAM_FILE = "model.pte"
QUANTIZED_FILE = "model-8da8w.pte"  # 8-bit dynamic activations, 8-bit weights (XNNPACK's quantiser)
METADATA_FILE = "executorch.json"


def require_executorch(what: str) -> None:
    """Raise a one-line StarError naming the extra to install when ExecuTorch is missing."""
    try:
        import executorch.exir
        import executorch.runtime  # noqa: F401
    except ImportError:
        raise StarError(f"{what} needs ExecuTorch, which is not installed: {INSTALL_HINT}") from None


def load_llm_ops() -> None:
    """Register ExecuTorch's LLM operators (`llama::custom_sdpa`, `llama::update_cache`) with torch,
    for export, and their kernels with ExecuTorch's runtime, for running a program that uses them."""
    from executorch.extension.llm.custom_ops import custom_ops  # noqa: F401


class StaticCacheLM(nn.Module):
    """A StarLM whose decode state lives in fixed-size buffers that the two methods update in place.

    Attention's cache grows in eager PyTorch; here it has `context` slots (a sliding window only
    `window`, used as a ring: position p lives in slot p mod slots), laid out (1, slots, kv heads,
    head_dim) as ExecuTorch's LLM kernels want.  Decode writes its keys and values in place
    (`llama::update_cache`) and attends with `llama::custom_sdpa`, which reads only the written
    slots, as an ExecuTorch LLM deployment does: the generic attention ops materialise copies of
    the whole cache at every step (Qwen3-0.6B decoded 4.4x slower than eager PyTorch with them).
    Every other mixer's state already has a fixed size, so its own `forward`/`step` serve and the
    results are copied into the buffers.  Buffers are per block: blocks that share weights keep
    their own state; a block that reads another's KV cache reads that block's buffers."""

    def __init__(self, model: StarLM, context: int) -> None:
        super().__init__()
        self.model = model
        dtype = model.embed_tokens.weight.dtype
        self.state_keys: list[list[str]] = []
        for i, layer in enumerate(model.layers):
            mixer, state = layer.mixer, None
            if isinstance(mixer, Attention) and mixer.kv_source is None:
                cfg = mixer.config
                slots = min(context, cfg.window) if cfg.window else context
                shape = (1, slots, cfg.num_kv_heads, cfg.head_dim)
                state = {"k": torch.zeros(shape, dtype=dtype), "v": torch.zeros(shape, dtype=dtype)}
            elif mixer is not None and not isinstance(mixer, Attention):
                state = mixer.init_state(1, torch.device("cpu"), dtype)
            self.state_keys.append(sorted(state or {}))
            for key, tensor in (state or {}).items():
                self.register_buffer(f"state_{i}_{key}", tensor)

    def _state(self, i: int) -> dict[str, Tensor]:
        return {key: getattr(self, f"state_{i}_{key}") for key in self.state_keys[i]}

    def prefill(self, tokens: Tensor) -> Tensor:
        """Logits (1, vocab) of the prompt's last position; every block's state starts afresh."""
        return self.model.head(self.prefill_hidden(self.model.embed_tokens(tokens))[:, -1])

    def decode(self, token: Tensor, position: Tensor) -> Tensor:
        """Logits (1, vocab) of one token (1, 1) at `position` (1,), continuing from the state."""
        return self.model.head(self.decode_hidden(self.model.embed_tokens(token[:, 0]), position))

    def prefill_hidden(self, x: Tensor) -> Tensor:
        """The blocks alone on a prompt's hidden states (1, T, d) from position 0: what `prefill` runs
        between the embedding and the head, and what a profile times one unit by
        (evaluators/measure_executorch.py)."""
        ctx = Context(position=0)
        time = x.shape[1]
        caches: dict[int, dict[str, Tensor]] = {}
        for i, layer in enumerate(self.model.layers):
            ctx.layer = i
            mixer, buffers = layer.mixer, self._state(i)
            if isinstance(mixer, Attention):
                caches[i] = buffers or caches[mixer.kv_source]
            if isinstance(mixer, Attention) and time <= caches[i]["k"].shape[1]:
                x = x + self._attend_prompt(mixer, layer.operator_norm(x), caches[i])
            elif isinstance(mixer, Attention) and buffers:
                grown = mixer.init_state(1, x.device, x.dtype)
                x = x + mixer(layer.operator_norm(x), grown, ctx)
                kept, slots = grown["k"].shape[2], buffers["k"].shape[1]
                index = torch.tensor([p % slots for p in range(time - kept, time)])
                buffers["k"].index_copy_(1, index, grown["k"].transpose(1, 2))
                buffers["v"].index_copy_(1, index, grown["v"].transpose(1, 2))
            elif mixer is not None:
                fresh = {key: torch.zeros_like(buffer) for key, buffer in buffers.items()}
                x = x + mixer(layer.operator_norm(x), fresh or None, ctx)
                for key, buffer in buffers.items():
                    buffer.copy_(fresh[key])
            if layer.feed_forward is not None:
                x = x + layer.feed_forward(layer.ffn_norm(x))
        return x

    def decode_hidden(self, x: Tensor, position: Tensor) -> Tensor:
        """The blocks alone on one token's hidden state (1, d) at `position` (1,): `decode` between
        the embedding and the head."""
        ctx = Context()
        caches: dict[int, dict[str, Tensor]] = {}
        for i, layer in enumerate(self.model.layers):
            ctx.layer = i
            mixer, buffers = layer.mixer, self._state(i)
            if isinstance(mixer, Attention):
                caches[i] = buffers or caches[mixer.kv_source]
                x = x + self._attend(mixer, layer.operator_norm(x), caches[i], position)
            elif mixer is not None:
                current = dict(buffers)
                x = x + mixer.step(layer.operator_norm(x), current or None, ctx)
                for key, buffer in buffers.items():
                    buffer.copy_(current[key])
            if layer.feed_forward is not None:
                x = x + layer.feed_forward(layer.ffn_norm(x))
        return x

    @staticmethod
    def _attend_prompt(mixer: Attention, x: Tensor, cache: dict[str, Tensor]) -> Tensor:
        """A prompt's causal attention (x: (1, T, d) from position 0, T at most the cache's slots):
        its keys and values written into slots 0..T-1 (a block reading another's cache writes
        nothing), then `llama::custom_sdpa` over them, as ExecuTorch's own LLM exports prefill.
        PyTorch's attention op lowers to portable kernels that materialise every head's (T, T)
        scores: a 2,048-token prompt through one 1024-wide attention block (16 heads, 8 KV heads)
        took 879 ms that way, 229-258 ms this way, and the process that lowered and ran it peaked
        at 1.6 GB against 0.66 GB (Zen 4, 2 threads; 64 tokens: 0.3-1 ms slower this way).  A
        prompt longer than a sliding window's slots goes through the operator's own forward
        (`prefill_hidden`)."""
        cfg = mixer.config
        time = x.shape[1]
        q, k, v = mixer.project(x, *mixer.rotary_angles(torch.arange(time), x.dtype))
        if k is not None and v is not None:
            torch.ops.llama.update_cache(k.transpose(1, 2), cache["k"], 0)
            torch.ops.llama.update_cache(v.transpose(1, 2), cache["v"], 0)
        out = torch.ops.llama.custom_sdpa(q.transpose(1, 2), cache["k"], cache["v"], 0, None, 0.0, True)
        return mixer.out_proj(out.reshape(1, time, cfg.num_heads * cfg.head_dim))

    @staticmethod
    def _attend(mixer: Attention, x: Tensor, cache: dict[str, Tensor], position: Tensor) -> Tensor:
        """One token's attention over the fixed-size cache, after writing its own keys and values
        into slot position mod slots (a block reading another's cache writes nothing)."""
        cfg = mixer.config
        slots = cache["k"].shape[1]
        q, k, v = mixer.project(x.unsqueeze(1), *mixer.rotary_angles(position, x.dtype))
        if k is not None and v is not None:
            slot = (position % slots)[0].item()
            torch._check_is_size(slot)
            torch._check(slot < slots)
            torch.ops.llama.update_cache(k.transpose(1, 2), cache["k"], slot)
            torch.ops.llama.update_cache(v.transpose(1, 2), cache["v"], slot)
        # Every slot up to the newest written one: the position itself, or all of a full ring.
        last = torch.clamp(position, max=slots - 1)[0].item()
        torch._check_is_size(last)
        torch._check(last < slots)
        out = torch.ops.llama.custom_sdpa(q.transpose(1, 2), cache["k"], cache["v"], last, None, 0.0, True)
        return mixer.out_proj(out.reshape(x.shape[0], cfg.num_heads * cfg.head_dim))


class Method(nn.Module):
    """One method of a module (StaticCacheLM's `prefill`, `decode`, ...) as a module's forward, which
    torch.export traces."""

    def __init__(self, lm: StaticCacheLM, name: str) -> None:
        super().__init__()
        self.lm, self.name = lm, name

    def forward(self, *inputs: Tensor) -> Tensor:
        return getattr(self.lm, self.name)(*inputs)


def example_inputs(config: ArchConfig, prompt: int) -> dict[str, tuple[Tensor, ...]]:
    """Inputs of each method: a prompt of `prompt` tokens; one token at position `prompt`."""
    tokens = torch.randint(0, config.vocab_size, (1, prompt), generator=torch.Generator().manual_seed(0))
    return {"prefill": (tokens,), "decode": (tokens[:, :1].clone(), torch.tensor([prompt]))}


def check_shape(config: ArchConfig, prompt: int, context: int) -> None:
    """One-line errors for lengths the program cannot hold."""
    if prompt < 1 or context < 2:
        raise StarError(f"--prompt must be at least 1 and --context at least 2 (got {prompt} and {context})")
    if prompt >= context:
        raise StarError(f"--prompt {prompt} must be shorter than --context {context}: the decode steps "
                        "after the prompt need room in the cache")
    if context > config.max_position_embeddings:
        raise StarError(f"--context {context} is longer than {config.name}'s max_position_embeddings "
                        f"({config.max_position_embeddings})")


def to_program(model: StarLM, prompt: int, context: int, quantize: bool = False) -> bytes:
    """The serialised ExecuTorch program (both methods, XNNPACK delegate) of `model`."""
    check_shape(model.config, prompt, context)
    lm = StaticCacheLM(model.eval(), context).eval()
    inputs = example_inputs(model.config, prompt)
    return lower({name: (Method(lm, name), args) for name, args in inputs.items()}, model.config.name, quantize)


def lower(methods: dict[str, tuple[nn.Module, tuple[Tensor, ...]]], name: str, quantize: bool = False) -> bytes:
    """One serialised ExecuTorch program with a method per entry of `methods` (a module whose forward
    is the method, and example inputs that fix its shapes); the methods share their mutable buffers
    (the decode state), the linear layers and what else XNNPACK supports run in its delegate.
    Any failure to export or lower is one line naming `name`."""
    require_executorch("exporting to ExecuTorch")
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import ExecutorchBackendConfig, to_edge_transform_and_lower
    from executorch.exir.passes import MemoryPlanningPass

    load_llm_ops()
    try:
        with torch.no_grad():
            programs = {method: torch.export.export(module, args, strict=False)
                        for method, (module, args) in methods.items()}
            if quantize:
                programs = {method: _quantized(program, methods[method][1]) for method, program in programs.items()}
            edge = to_edge_transform_and_lower(programs, partitioner=[XnnpackPartitioner()])
            program = edge.to_executorch(ExecutorchBackendConfig(
                memory_planning_pass=MemoryPlanningPass(share_mutable_buffers=True),
                emit_mutable_buffer_names=True, run_reinplace_pass=True))
    except StarError:
        raise
    except Exception as err:  # export and lowering raise many types; the first line names the operator
        raise StarError(f"cannot lower {name} to ExecuTorch: {first_line(err)[:300]}") from None
    return program.buffer


def _quantized(program: Any, inputs: tuple[Tensor, ...]) -> Any:
    """The exported method with XNNPACK's symmetric 8-bit quantisation (per-channel weights, dynamic
    per-token activations) applied to its linear layers, re-exported."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True,
                                                                                is_dynamic=True))
    prepared = prepare_pt2e(program.module(), quantizer)
    prepared(*inputs)
    return torch.export.export(convert_pt2e(prepared), inputs, strict=False)


def export_executorch(config: ArchConfig, out_dir: str | Path, prompt: int, context: int, quantize: bool = False,
                      force: bool = False, seed: int = 0, weights_from: str | Path | None = None,
                      checked: Callable[[], None] | None = None) -> list[Path]:
    """Write model.pte (and model-8da8w.pte with `quantize`) of `config` with seeded random weights or
    those of `weights_from` (star.export.build_model), and executorch.json (what the program expects
    and what made it) to `out_dir`; return the files.  Everything is checked before the model is
    built (then `checked` is called: the command line announces the minutes ahead), and the files
    are written under temporary names and renamed at the end, as star.export.export does."""
    require_executorch("--format executorch")
    from importlib import metadata

    from star.export import build_model, check_targets, write_all_or_nothing
    from star.machine import fingerprint

    check_shape(config, prompt, context)
    out = Path(out_dir)
    targets = [out / PROGRAM_FILE, *([out / QUANTIZED_FILE] if quantize else []), out / METADATA_FILE]
    check_targets(out, targets, force)
    # weights, their exported copy and the serialised program
    check_memory(config.params() * 4 * 3, f"exporting {config.name} to ExecuTorch")
    if checked:
        checked()
    started = time.perf_counter()
    model = build_model(config, seed, weights_from)
    programs = [to_program(model, prompt, context)]
    if quantize:
        programs.append(to_program(model, prompt, context, quantize=True))
    meta = {
        "name": config.name, "architecture": config.to_dict(), "prompt": prompt, "context": context,
        "methods": {"prefill": f"tokens int64 (1, {prompt}) -> logits of the last position (1, vocab)",
                    "decode": "token int64 (1, 1), position int64 (1,) -> logits (1, vocab)"},
        "programs": {PROGRAM_FILE: "fp32, XNNPACK",
                     **({QUANTIZED_FILE: "8-bit weights, 8-bit dynamic activations, XNNPACK"} if quantize else {})},
        "executorch": metadata.version("executorch"), "torch": torch.__version__,
        "star": metadata.version("star-nas"), "machine": fingerprint(),
        "export_s": round(time.perf_counter() - started, 1),
    }

    def write(temporary: list[Path]) -> None:
        for tmp, data in zip(temporary, programs, strict=False):
            tmp.write_bytes(data)
        temporary[-1].write_text(json.dumps(meta, indent=2) + "\n")

    write_all_or_nothing(out, targets, write)
    return targets


class ExecuTorchLM:
    """A `.pte` program of `export_executorch`, loaded into ExecuTorch's runtime in this process."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        """Load the program at `path`; `threads` resizes ExecuTorch's thread pool (XNNPACK's work is
        split over it; by default one thread per core)."""
        self.threads = set_threads(threads)
        path = Path(path)
        # The cache length from the export's record beside the program, where there is one: past it,
        # a full cache would wrap around like a sliding window's ring and answer wrongly.
        meta = path.with_name(METADATA_FILE)
        self.context: int | None = None
        if meta.is_file():
            from star.validate import MAX_JSON_BYTES, read_regular_file

            try:
                self.context = int(json.loads(read_regular_file(meta, "ExecuTorch record", MAX_JSON_BYTES))["context"])
            except (ValueError, KeyError, TypeError):
                raise StarError(f"{str(meta)!r} is not an export record of star (no integer 'context')") from None
        program = load_program(path)
        self._prefill = program.load_method("prefill")
        self._decode = program.load_method("decode")

    def prefill(self, tokens: Tensor) -> Tensor:
        return self._prefill.execute([tokens])[0]

    def decode(self, token: Tensor, position: int) -> Tensor:
        if self.context is not None and not 0 <= position < self.context:
            raise StarError(f"decode position {position} is outside the program's cache (0..{self.context - 1})")
        return self._decode.execute([token, torch.tensor([position])])[0]


def set_threads(threads: int | None) -> int:
    """Resize ExecuTorch's thread pool, over which XNNPACK splits its work (by default one thread per
    core), to `threads`; return the thread count now."""
    require_executorch("running an ExecuTorch program")
    from executorch.extension.pybindings import portable_lib

    if threads:
        with _stderr_silenced():  # its C++ log reports reading CPU files that x86 machines lack
            portable_lib._unsafe_reset_threadpool(threads)
    return int(portable_lib._threadpool_get_thread_count())


@contextlib.contextmanager
def _stderr_silenced() -> Iterator[None]:
    """Point file descriptor 2 at /dev/null for the duration (C++ code writes there directly)."""
    import os
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def load_program(path: str | Path) -> Any:
    """The `.pte` program at `path`, loaded into ExecuTorch's runtime in this process with every
    method loadable (its kernels registered, star.executorch.load_llm_ops); one line if it cannot be."""
    require_executorch("running an ExecuTorch program")
    from executorch.runtime import Runtime

    load_llm_ops()
    if not Path(path).is_file():
        raise StarError(f"ExecuTorch program {str(path)!r} does not exist")
    try:
        program = Runtime.get().load_program(str(path))
        for name in program.method_names:
            program.load_method(name)
    except Exception as err:  # the runtime raises RuntimeError and ValueError for bad programs
        raise StarError(f"cannot load ExecuTorch program {str(path)!r}: {first_line(err)}") from None
    return program
