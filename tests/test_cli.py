"""The CLI contract: command names, JSON keys, one-line errors with exit status 2."""

import json

import pytest
from cli_helpers import assert_bad_input, star

from star.presets import PRESETS


def test_presets_json_lists_every_preset():
    result = star("presets", "--json")
    assert result.returncode == 0
    assert [row["name"] for row in json.loads(result.stdout)] == list(PRESETS)


def test_describe_json_keys_and_lfm2_numbers():
    result = star("describe", "--preset", "lfm2-350m", "--json", "--context", "4096")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["params"] == 354_483_968
    assert info["non_embedding_params"] == 354_483_968 - 65536 * 1024
    # 6 GQA blocks keep K and V (8 heads × 64) per token; 10 conv blocks keep 2 past inputs per channel.
    assert info["cache_bytes"] == (6 * 2 * 8 * 64 * 4096 + 10 * 2 * 1024) * 2
    assert info["layer_types"].count("attention") == 6 and len(info["layer_types"]) == 16
    assert info["decode_flops_per_token"] > 0 and info["prefill_flops"] > info["decode_flops_per_token"]


def test_describe_human_output_mentions_parameters():
    result = star("describe", "--preset", "qwen3-0.6b")
    assert result.returncode == 0
    assert "596,049,920" in result.stdout


def test_describe_config_file_round_trip(tmp_path):
    from star.presets import get_preset

    path = tmp_path / "arch.json"
    path.write_text(get_preset("lfm2-700m").to_json())
    info = json.loads(star("describe", "--config", str(path), "--json").stdout)
    assert info["params"] == 742_489_344


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["describe", "--preset", "lfm2-9b"], ["unknown preset", "lfm2-9b"]),
        (["describe", "--config", "/no/such/file.json"], ["does not exist"]),
        (["describe", "--space", "lfm2", "--genome", "1,2,x"], ["genome"]),
        (["describe", "--space", "lfm2", "--genome", "0,0"], ["genome"]),
        (["describe", "--space", "nope", "--genome", "0"], ["unknown search space", "nope"]),
        (["describe", "--preset", "lfm2-350m", "--context", "-5"], ["context"]),
        (["describe"], ["required"]),
        (["frobnicate"], ["invalid choice"]),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, needles):
    assert_bad_input(star(*args), *needles)


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("{not json", "not valid JSON"),
        ('{"hidden_size": 64, "vocab_size": 10, "blocks": [{"mixer": {"kind": "warp_drive"}}]}', "warp_drive"),
        ('{"hidden_size": 64, "vocab_size": 10, "blocks": []}', "at least one block"),
        ('{"hidden_size": 64, "vocab_size": 10, "blocks": [{"mixer": {"kind": "attention", "num_heads": 4, '
         '"num_kv_heads": 3}}]}', "must divide"),
        ('{"hidden_size": 64, "vocab_size": 10, "colour": 1, "blocks": []}', "colour"),
        ('{"hidden_size": "wide", "vocab_size": 10, "blocks": [{"mixer": {"kind": "identity"}}]}', "hidden_size"),
        ('[1, 2]', "JSON object"),
    ],
)
def test_malformed_config_is_one_line_and_exit_2(tmp_path, content, needle):
    path = tmp_path / "bad.json"
    path.write_text(content)
    assert_bad_input(star("describe", "--config", str(path)), needle)


def test_sample_then_describe_the_genome():
    sampled = json.loads(star("sample", "--space", "lfm2", "-n", "2", "--seed", "3", "--json").stdout)
    assert len(sampled) == 2
    genome = ",".join(map(str, sampled[0]["genome"]))
    info = json.loads(star("describe", "--space", "lfm2", "--genome", genome, "--json").stdout)
    assert info["params"] == sampled[0]["params"]
    assert len(info["layer_types"]) == 16


def test_every_mixer_kind_has_its_own_layout_letter():
    """Layouts (star describe, star sample, star pareto, the report) are written with one letter per mixer
    kind: a new kind without its letter would print as '?', and two kinds sharing one could not be told apart."""
    from star.arch import LAYOUT_LETTERS, MIXERS, layout_letter

    assert set(LAYOUT_LETTERS) == set(MIXERS)
    assert len(set(LAYOUT_LETTERS.values())) == len(LAYOUT_LETTERS)
    assert layout_letter("no_such_kind") == "?"


def test_describe_writes_the_layout_in_letters():
    result = star("describe", "--preset", "lfm2-350m")
    assert result.returncode == 0, result.stderr
    assert "C C A C C A" in result.stdout
