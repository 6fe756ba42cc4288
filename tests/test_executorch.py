"""Export to ExecuTorch: a real .pte program run in ExecuTorch's runtime against our eager model.

Skipped only where the deploy extra is not installed (`.ci/run` installs it); the one-line message
for a missing ExecuTorch is tested everywhere.
"""

import importlib.metadata
import importlib.util
import json
import subprocess
import sys

import pytest
import torch

from star.arch import (
    MLPFFN,
    ArchConfig,
    AttentionMixer,
    BlockConfig,
    RecurrenceMixer,
    ShortConvMixer,
    SwiGLUFFN,
)
from star.evaluators.measure import Grid
from star.evaluators.predictor import Profile
from star.export import build_model


def star(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "star.cli", *args], capture_output=True, text=True)


def every_state_kind() -> ArchConfig:
    """One block of each kind of decode state: a convolution window, an attention cache, a block
    reading another's KV cache, a sliding-window attention ring and a recurrent state; and weights
    shared between blocks.  (A long convolution keeps a short one's state; a block without a token
    mixer keeps none.)"""
    blocks = (BlockConfig(mixer=ShortConvMixer(kernel=3), ffn=SwiGLUFFN(hidden=128)),
              BlockConfig(mixer=AttentionMixer(num_heads=4, num_kv_heads=1, head_dim=16), ffn=MLPFFN(hidden=96)),
              BlockConfig(mixer=AttentionMixer(num_heads=4, num_kv_heads=1, head_dim=16), ffn=None, share_kv_with=1),
              BlockConfig(mixer=AttentionMixer(num_heads=4, num_kv_heads=2, head_dim=16, qk_norm=True, window=8),
                          ffn=None),
              BlockConfig(mixer=RecurrenceMixer(num_heads=2, head_dim=16), ffn=None),
              BlockConfig(mixer=ShortConvMixer(kernel=3), ffn=None, share_weights_with=0))
    return ArchConfig(hidden_size=64, vocab_size=256, blocks=blocks, name="every-state",
                      max_position_embeddings=64).validate()


def test_missing_executorch_is_one_line_naming_the_extra(tmp_path):
    """Without the extra, the command says what to install and writes nothing."""
    argv = ["export", "--preset", "lfm2-proxy", "--format", "executorch", "-o", str(tmp_path / "x")]
    code = f"import sys; sys.modules['executorch'] = None; from star.cli import main; sys.exit(main({argv!r}))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "Traceback" not in done.stderr
    assert "ExecuTorch" in done.stderr and ".[deploy]" in done.stderr
    assert not (tmp_path / "x").exists()


def test_executorch_options_belong_to_its_format(tmp_path):
    done = star("export", "--preset", "lfm2-proxy", "--format", "native", "--quantize", "-o", str(tmp_path / "n"))
    assert done.returncode == 2 and "--format executorch" in done.stderr
    assert not (tmp_path / "n").exists()


@pytest.mark.slow
def test_exported_program_matches_our_model_and_decodes_from_its_cache(tmp_path):
    pytest.importorskip("executorch")
    from star.errors import StarError
    from star.executorch import ExecuTorchLM

    config = every_state_kind()
    (tmp_path / "arch.json").write_text(config.to_json())
    out = tmp_path / "pte"
    prompt, context = 12, 24  # decoding past position 24 wraps nothing: the window ring wraps at 8
    done = star("export", "--config", str(tmp_path / "arch.json"), "--format", "executorch",
                "--prompt", str(prompt), "--context", str(context), "--seed", "3", "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "Failed to load" not in done.stderr
    meta = json.loads((out / "executorch.json").read_text())
    assert (meta["prompt"], meta["context"]) == (prompt, context)
    assert ArchConfig.from_dict(meta["architecture"]) == config
    assert meta["machine"]["kernels"] and meta["executorch"]

    ours = build_model(config, seed=3)
    program = ExecuTorchLM(out / "model.pte")
    tokens = torch.randint(0, config.vocab_size, (1, prompt), generator=torch.Generator().manual_seed(1))
    steps = torch.randint(0, config.vocab_size, (context - prompt, 1), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        for _ in range(2):  # a second prompt starts afresh, whatever the first left in the buffers
            state = ours.init_state(1)
            expected = ours(tokens, state)[:, -1]
            assert expected.abs().max().item() > 0.1  # a real, non-trivial output
            assert (program.prefill(tokens) - expected).abs().max().item() < 1e-4
            for offset, token in enumerate(steps):  # through the window ring's wrap and the full cache
                expected = ours.step(token, state)
                got = program.decode(token[None], prompt + offset)
                assert (got - expected).abs().max().item() < 1e-4, f"decode at {prompt + offset}"
    with pytest.raises(StarError, match="outside the program's cache"):
        program.decode(steps[0][None], context)


@pytest.mark.slow
def test_quantized_program_is_near_fp32(tmp_path):
    """8-bit weights and dynamically quantised 8-bit activations (XNNPACK's quantiser): the logits'
    relative L2 error against fp32 eager is a few percent, and not zero (it did quantise)."""
    pytest.importorskip("executorch")
    from star.executorch import ExecuTorchLM, to_program

    config = ArchConfig(hidden_size=64, vocab_size=256, name="two-blocks", max_position_embeddings=64,
                        blocks=every_state_kind().blocks[:2]).validate()
    ours = build_model(config, seed=3)
    (tmp_path / "q.pte").write_bytes(to_program(ours, 12, 24, quantize=True))
    quantized = ExecuTorchLM(tmp_path / "q.pte")
    tokens = torch.randint(0, config.vocab_size, (1, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        state = ours.init_state(1)
        errors = [relative_error(quantized.prefill(tokens), ours(tokens, state)[:, -1])]
        for position, token in enumerate(tokens[0, :4], start=12):
            errors.append(relative_error(quantized.decode(token.view(1, 1), position), ours.step(token[None], state)))
    print("8-bit relative errors", [round(e, 4) for e in errors])
    assert all(0 < e < 0.1 for e in errors), errors


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    return ((got - expected).norm() / expected.norm()).item()


def test_bad_lengths_and_existing_programs_are_one_line(tmp_path, capsys):
    """Checked before a model is built (in-process: each check would otherwise pay ExecuTorch's import)."""
    pytest.importorskip("executorch")
    from star.cli import main
    from star.errors import StarError
    from star.executorch import ExecuTorchLM

    def export(*args: str) -> tuple[int, str]:
        code = main(["export", "--preset", "lfm2-proxy", "--format", "executorch", *args])
        return code, capsys.readouterr().err

    code, err = export("--prompt", "64", "--context", "64", "-o", str(tmp_path / "a"))
    assert code == 2 and "shorter than --context" in err and err.count("\n") == 1
    code, err = export("--context", "100000", "-o", str(tmp_path / "a"))
    assert code == 2 and "max_position_embeddings" in err and err.count("\n") == 1
    assert not (tmp_path / "a").exists()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "model.pte").write_bytes(b"someone's program")
    code, err = export("-o", str(tmp_path / "b"))
    assert code == 2 and "--force" in err and err.count("\n") == 1
    assert (tmp_path / "b" / "model.pte").read_bytes() == b"someone's program"
    with pytest.raises(StarError, match="cannot load ExecuTorch program"):
        ExecuTorchLM(tmp_path / "b" / "model.pte")


def test_profile_runtime_options_are_one_line(tmp_path):
    """`star profile --runtime executorch` without the extra, or with a dtype its programs lack: one
    line, exit 2, no file."""
    out = str(tmp_path / "p.parquet")
    argv = ["profile", "--runtime", "executorch", "--quick", "-o", out]
    code = f"import sys; sys.modules['executorch'] = None; from star.cli import main; sys.exit(main({argv!r}))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0 and ".[deploy]" in done.stderr
    if importlib.util.find_spec("executorch") is not None:
        done = star("profile", "--runtime", "executorch", "--dtype", "bf16", "--quick", "-o", out)
        assert done.returncode == 2 and done.stderr.strip().count("\n") == 0 and "fp32" in done.stderr
    assert not (tmp_path / "p.parquet").exists()


@pytest.mark.slow
def test_profile_in_executorch_times_unit_programs_and_predicts(tmp_path):
    """A profile timed in ExecuTorch (one width, one length per phase, the units of two 2-block
    calibration models): each unit and phase measured from its own program, the cost of a program
    call recorded, the runtime recorded and named by `star predict`; a unit's program computes what
    the eager unit does; programs are lowered once and kept."""
    pytest.importorskip("executorch")
    from star.evaluators.measure_executorch import export_programs, program_path, unit_jobs
    from star.evaluators.profiler import profile
    from star.executorch import load_program
    from star.model import StarLM

    units = ("mixer:short_conv", "ffn:mlp", "embedding", "head")
    grid = Grid(widths=(128,), prefill=(16,), decode=(32,), reps=2, warmup=1, units=units)
    block = BlockConfig(mixer=ShortConvMixer(kernel=3), ffn=MLPFFN(hidden=512))
    proxies = [ArchConfig(hidden_size=128, vocab_size=512, blocks=(block,) * blocks, name=f"conv-{blocks}")
               for blocks in (1, 2)]
    path = tmp_path / "et.parquet"
    profile(str(path), proxies, threads=1, quick=True, grid=grid, runtime="executorch", cold_configs=[])
    made = Profile(path)
    assert made.runtime == "executorch" and made.machine["executorch"] == importlib.metadata.version("executorch")
    assert "in ExecuTorch" in made.measured_on()
    assert {(r["unit"], r["phase"]) for r in made.rows} == {(u, p) for u in units for p in ("prefill", "decode")}
    assert all(r["median_ms"] > 0 for r in made.rows)
    runs = made.machine["calibration_runs"]
    assert [json.loads(r["model"])["name"] for r in runs] == ["conv-1", "conv-2"]
    assert all(r["prefill_ms"] > 0 and r["decode_ms"] > 0 for r in runs)
    # one program call, measured: more than nothing, less than a whole one-block model's decode step
    assert 0 < made.machine["call_ms"] < min(r["decode_ms"] for r in runs)

    jobs = unit_jobs(grid)
    job = jobs[("ffn:mlp", 128, repr(MLPFFN(hidden=512)))]
    x = torch.randn(1, 16, 128)
    got = load_program(program_path(job)).load_method("prefill_16").execute([x])[0]
    torch.manual_seed(0)
    layer = StarLM(ArchConfig.from_json(job.model)).eval().layers[0]
    with torch.no_grad():
        assert torch.allclose(got, x + layer.feed_forward(layer.ffn_norm(x)), atol=1e-4)

    kept = {p: p.stat().st_mtime_ns for p in program_path(job).parent.iterdir()}
    export_programs(list(jobs.values()))  # all kept: nothing lowered again
    assert {p: p.stat().st_mtime_ns for p in program_path(job).parent.iterdir()} == kept

    (tmp_path / "arch.json").write_text(proxies[1].to_json())
    done = star("predict", "--config", str(tmp_path / "arch.json"), "--profile", str(path), "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["machine"]["runtime"] == "executorch" and out["prefill_ms"] > 0 and out["decode_ms_per_token"] > 0
    done = star("predict", "--config", str(tmp_path / "arch.json"), "--profile", str(path))
    assert "in ExecuTorch" in done.stdout
