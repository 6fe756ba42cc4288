"""The operator profiler and the predictors built on it (measured profiles and roofline models)."""

import functools
import itertools
import json
import random
import statistics
import time
import warnings
from collections.abc import Callable
from itertools import pairwise

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from cli_helpers import assert_bad_input, star
from hypothesis import given, settings
from hypothesis import strategies as st

from star.arch import ArchConfig
from star.errors import StarError
from star.evaluators.calibration import cold_calibration_models
from star.evaluators.latency import DEVICES, predict
from star.evaluators.measure import (
    NEVER_QUIET_MOST,
    Grid,
    fastest_repeated,
    measure_peak_memory,
    prefill_timed_s,
    quantile_ms,
    quiet,
    time_calls,
    unit_timed_s,
)
from star.evaluators.predictor import PROFILES_DIR, Profile
from star.evaluators.profiler import profile
from star.machine import cpu_kind, fingerprint, fingerprint_key, kernel_differences
from star.objectives import device_measured_on
from star.presets import get_preset
from star.scaling import LATENCY_PROXY, to_proxy
from star.search_spaces import calibration_proxies, get_space

# Widths 128 and 512: the cold-scale calibration runs models 512 to 2048 wide, and fits made only at
# 64 and 128 extrapolated their decode 3-6x too slow (scales 0.15-0.4, flaky against the bound below).
TINY = Grid(widths=(128, 512), prefill=(16, 64), decode=(32, 256), reps=2, warmup=1)


def calibration_proxy(preset: str):
    """A proxy preset's layout in the calibration models' shape (width 128, heads of 32): the tiny
    profile below measures widths 128 and 512, so its fits are not extrapolated for these."""
    return to_proxy(get_preset(preset), **LATENCY_PROXY)


@pytest.fixture(scope="module")
def tiny_profile(tmp_path_factory):
    path = tmp_path_factory.mktemp("profile") / "tiny.parquet"
    # four calibration proxies per space (`star profile --quick` passes eight): the quick calibration
    # measures each in two or three passes, and the suite must stay short on a 2-core machine; for
    # the same reason the cold-cache models stop at width 1024 (the 2048-wide one, 273 M parameters,
    # takes the longest), and these three are cold on any CPU's last-level cache
    profile(str(path), calibration_proxies(per_space=4), threads=1, quick=True, grid=TINY,
            cold_configs=cold_calibration_models()[:3])
    return path


def test_a_low_quantile_over_a_window_finds_the_quiet_speed_a_median_misses(monkeypatch):
    """A whole-model prefill on a busy host: a slow stretch (40 ms calls) with a quiet fifth of a
    second (25 ms) inside it.  The median of the calls is the stretch's; their 10th percentile over
    the window is the model's own speed, and the window, not the count, decides how many are timed."""
    calls = iter([0.050] + [0.040] * 20 + [0.025] * 8 + [0.040] * 1000)
    assert quantile_ms(lambda: next(calls), reps=5, least_s=1.1, quantile=0.5) == pytest.approx(40.0)
    calls = iter([0.050] + [0.040] * 20 + [0.025] * 8 + [0.040] * 1000)
    assert quantile_ms(lambda: next(calls), reps=5, least_s=1.1, quantile=0.1) == pytest.approx(25.0)
    calls = iter([0.050] + [0.040] * 20 + [0.025] * 8 + [0.040] * 1000)  # 0.3 s ends before the quiet spell
    assert quantile_ms(lambda: next(calls), reps=5, least_s=0.3, quantile=0.1) == pytest.approx(40.0)
    even = iter([0.0, 0.001, 0.004, 0.002, 0.003])  # between two calls: interpolated, as statistics.median
    assert quantile_ms(lambda: next(even), reps=4, least_s=0.0) == pytest.approx(2.5)
    monkeypatch.setenv("STAR_PREFILL_TIMED_S", "2")
    assert prefill_timed_s() == 2.0
    monkeypatch.setenv("STAR_PREFILL_TIMED_S", "two")
    with pytest.raises(StarError, match="STAR_PREFILL_TIMED_S must be a number of seconds, got 'two'"):
        prefill_timed_s()


def test_a_unit_keeps_the_low_quantile_of_its_calls_over_a_window_of_wall_time(monkeypatch):
    """A unit's calls (`measure.time_calls`), each taking 1 ms of wall time on a clock the test keeps: a
    busy stretch (0.3 ms calls), then a quiet one (0.2 ms).  Over `reps` calls alone the figure is the
    stretch's; over 0.05 s of wall time (the L2 flushes between calls count, as in a profile) the 10th
    percentile is the quiet speed.  Without a window, the median of `reps` calls, as ExecuTorch units
    are timed."""
    clock = [0.0]
    monkeypatch.setattr(time, "perf_counter", lambda: clock[0])

    def calls() -> Callable[[], float]:
        values = iter([0.0003] * 6 + [0.0002] * 8 + [0.0003] * 1000)

        def once() -> float:
            clock[0] += 0.001
            return next(values)
        return once

    assert time_calls(calls(), reps=5, warmup=1, least_s=0.0, quantile=0.1) == pytest.approx((0.3, 0.3))
    start = clock[0]
    quantile, p95 = time_calls(calls(), reps=5, warmup=1, least_s=0.05, quantile=0.1)
    assert quantile == pytest.approx(0.2) and p95 == pytest.approx(0.3)
    assert clock[0] - start == pytest.approx(0.051)  # the warm-up call, then 50 timed in 0.05 s
    assert time_calls(calls(), reps=9, warmup=1)[0] == pytest.approx(0.3)  # 5 busy calls of 9
    monkeypatch.setenv("STAR_UNIT_TIMED_S", "0.1")
    assert unit_timed_s() == 0.1


def test_profile_measures_every_unit_and_phase_and_records_the_machine(tiny_profile):
    table = pq.read_table(tiny_profile)
    rows = table.to_pylist()
    units = {(r["unit"], r["phase"]) for r in rows}
    for unit in ("mixer:short_conv", "mixer:attention", "mixer:long_conv", "mixer:recurrence", "ffn:swiglu",
                 "ffn:mlp", "embedding", "head"):
        assert (unit, "prefill") in units and (unit, "decode") in units
    assert all(r["median_ms"] > 0 and r["p95_ms"] >= r["median_ms"] for r in rows)
    machine = json.loads(table.schema.metadata[b"star.profile"])
    assert machine["threads"] == "1" and machine["dtype"] == "fp32" and machine["grid"] == "custom"
    assert machine["fingerprint"] == fingerprint()  # the CPU kind, its kernel ISA, torch's kernels and version
    assert machine["prefill_timing"] == "0.1 quantile over 0.3 s"  # the suite's windows (conftest), recorded
    assert machine["unit_timing"] == "0.1 quantile over 0 s, fastest of 3 sweeps"
    assert machine["decode_timing"] == ("0.1 quantile over 0.3 s, against the canary's, for models in the last-level "
                                        "cache; others 0.5 quantile over 0.3 s")
    assert {r["cache"] for r in rows} == {"warm", "cold"}
    overhead = machine["block_overhead_ms"]  # measured on whole models: per mixer and FFN kind, both phases
    assert set(overhead) == {"prefill", "decode"}
    assert {"mixer:attention", "mixer:short_conv", "mixer:long_conv", "mixer:recurrence", "mixer:identity",
            "ffn:swiglu", "ffn:mlp", "ffn:none"} == set(overhead["decode"]) == set(overhead["prefill"])
    assert len(machine["calibration_runs"]) == 8  # the 4 random proxies per space it was given
    # every eager measurement with the canary's decode alongside; its quiet step recorded for the ratios
    assert all(len(r) == 4 for run in machine["calibration_runs"] for r in run["rounds"])
    # one step for the whole profile: the calibration proxies' quiet one, the cold models' decodes expressed at it
    proxies_step = fastest_repeated([r[3] for run in machine["calibration_runs"] for r in run["rounds"]])
    assert machine["canary_decode_ms"] == proxies_step > 0
    assert isinstance(machine["warm_decode_ms_per_weight_byte"], float)
    assert 0 <= machine["runtime_bytes"] < 64 * 2**20
    for phase in ("prefill", "decode"):  # per model width, each model bigger than this machine's LLC
        assert machine["cold_scale"][phase] and all(0.2 < v < 5 for v in machine["cold_scale"][phase].values())
    # each cold model measured like the proxies: 2 processes, up to 4 while its two fastest disagree,
    # up to 8 where none of its first 4 ran while the canary was quiet (under the final, lowest mark)
    assert set(machine["cold_runs"]) >= {config.name for config in cold_calibration_models()[1:3]}
    for runs in machine["cold_runs"].values():
        assert 2 <= len(runs) <= NEVER_QUIET_MOST * 4
        assert len(runs) <= 4 or not any(quiet(run, machine["canary_ms"]) for run in runs[:4])
    assert {r["spec"] for r in rows if r["unit"] == "mixer:attention" and r["width"] == 128} >= {
        "AttentionMixer(num_heads=4, num_kv_heads=1, head_dim=32, qk_norm=True, window=0)"}  # the proxies' shape


def test_predictions_are_deterministic(tiny_profile):
    config = calibration_proxy("lfm2-proxy")
    a, b = Profile(tiny_profile).predict(config, 64, 256), Profile(tiny_profile).predict(config, 64, 256)
    assert a == b
    assert a["decode_ms_p95"] >= a["decode_ms"] > 0 and a["ttft_ms"] > 0


# A quick profile's cold-cache scales: fits made only at narrow widths put whole cold models at
# 0.15-0.4 of their cold units (see TINY), so the cold rule undercuts the warm one by far.
QUICK_COLD_SCALES = {"prefill": {"128": 0.3, "2048": 0.4}, "decode": {"128": 0.2, "2048": 0.4}}


@functools.cache
def shipped_profile(quick_cold_scales: bool = False) -> Profile:
    """The shipped dev-cpu profile (a real calibrated profile, read, never re-measured), optionally
    with a quick profile's cold scales; cached, so callers must not change it."""
    model = Profile(PROFILES_DIR / "dev-cpu.parquet")
    if quick_cold_scales:
        model.machine["cold_scale"] = QUICK_COLD_SCALES
    return model


def cache_edge(model: Profile, config: ArchConfig, limit: int = 2**20) -> int | None:
    """The longest length at which `config` still fits the profile's last-level cache, checked to be
    the edge: one token more does not fit.  None where it fits at no length or at every length up to
    `limit`."""
    edge = model.longest_warm(config, limit)
    if edge is None or edge == limit:
        return None
    assert model.cache_state(config, edge) == "warm" and model.cache_state(config, edge + 1) == "cold"
    return edge


def test_predictions_grow_with_length_across_the_cache_boundary():
    """With the profile's real last-level cache: this test once forced an unlimited cache and let decode
    stay flat (`>=`), which hid that predictions fell where a model stopped fitting the cache.
    attention-proxy in the calibration shape fits the shipped profile's 32 MiB with a short context,
    not with 4,096 tokens; every step reads a longer cache, so its decode is strictly slower."""
    model, config = shipped_profile(), calibration_proxy("attention-proxy")
    edge = cache_edge(model, config)
    assert edge is not None and 512 < edge < 4096
    longer, shorter = model.predict(config, 512, 4096), model.predict(config, 64, 256)
    assert longer["ttft_ms"] > shorter["ttft_ms"] and longer["decode_ms"] > shorter["decode_ms"]
    # one token either side of the boundary: prefill falls back on the warm time, decode is slower
    inside, outside = model.predict(config, edge, edge), model.predict(config, edge + 1, edge + 1)
    assert outside["ttft_ms"] >= inside["ttft_ms"] and outside["decode_ms"] > inside["decode_ms"]


SHAPES = {"full size": lambda config: config, "proxy": to_proxy,
          "latency proxy": lambda config: to_proxy(config, **LATENCY_PROXY)}


@settings(max_examples=120, deadline=None, derandomize=True, database=None)
@given(space=st.sampled_from(["lfm2", "star"]), seed=st.integers(0, 2**32), shape=st.sampled_from(sorted(SHAPES)),
       quick=st.booleans(), lengths=st.lists(st.integers(1, 2**18), min_size=1, max_size=5))
def test_no_prediction_falls_as_the_prompt_or_the_context_grows(space, seed, shape, quick, lengths):
    """Random genomes of both spaces, full size and as proxies, at lengths either side of the point
    where each stops fitting the last-level cache (where the cold rule takes over), with the shipped
    calibration and with a quick profile's cold scales, and on the roofline models.  Prefill
    depends on the prompt alone and decode on the context alone, so both grow together here."""
    space_ = get_space(space)
    config = SHAPES[shape](space_.decode(space_.sample(random.Random(seed))))
    model = shipped_profile(quick_cold_scales=quick)
    edge = cache_edge(model, config)
    points = sorted({*lengths, *([max(1, edge - 1), edge, edge + 1, 2 * edge] if edge else [])})
    for predictor in (model.predict, functools.partial(predict, device="s24-ultra")):
        predictions = [predictor(config, prompt=t, context=t) for t in points]
        for (short, shorter), (long, longer) in pairwise(zip(points, predictions, strict=True)):
            for key in ("ttft_ms", "decode_ms", "decode_ms_p95", "peak_memory"):
                assert longer[key] >= shorter[key], (key, short, long, shorter[key], longer[key])


def test_negative_overheads_never_make_a_longer_context_faster():
    """Fitted fixed costs may be negative.  One that outweighs a model's units at a short context but
    not at a longer one (attention's units grow with the context) once switched the prediction from
    the units' sum to units plus overhead, far below it."""
    model = Profile(PROFILES_DIR / "dev-cpu.parquet")
    config = calibration_proxy("attention-proxy")  # 16 attention blocks
    model.machine["warm_decode_ms_per_weight_byte"] = 0.0
    model.machine["block_overhead_ms"]["decode"] = dict.fromkeys(model.machine["block_overhead_ms"]["decode"], 0.0)
    short, long = model.predict(config, 64, 256)["decode_ms"], model.predict(config, 64, 2048)["decode_ms"]
    assert model.cache_state(config, 2048) == "warm" and long > 1.2 * short
    model.machine["block_overhead_ms"]["decode"]["mixer:attention"] = -(short + long) / 2 / 16
    decode = [model.predict(config, 64, context)["decode_ms"] for context in (256, 1024, 2048)]
    assert decode == sorted(decode) and decode[0] > 0


@pytest.mark.parametrize("phase, key", [("decode", "decode_ms"), ("prefill", "ttft_ms")])
def test_block_overheads_are_charged_per_mixer_kind(tiny_profile, phase, key):
    """The calibrated fixed costs follow each block's kinds, in both phases: an extra millisecond per
    attention block moves attention-proxy by 16 ms, lfm2-proxy by 6 (its GQA blocks) and conv-proxy
    not at all.  A profile from before per-kind calibration charges its one constant to every block."""
    model = Profile(tiny_profile)
    # from zero overheads: a quick profile's fitted ones may be negative enough to reach the floor
    # that keeps a prediction from going below the units' own sum (next test)
    model.machine["block_overhead_ms"][phase] = dict.fromkeys(model.machine["block_overhead_ms"][phase], 0.0)
    before = {name: model.predict(calibration_proxy(name), 64, 256)[key]
              for name in ("attention-proxy", "lfm2-proxy", "conv-proxy")}
    model.machine["block_overhead_ms"][phase]["mixer:attention"] += 1.0
    after = {name: model.predict(calibration_proxy(name), 64, 256)[key] for name in before}
    assert [round(after[n] - before[n], 6) for n in before] == [16.0, 6.0, 0.0]
    old = Profile(tiny_profile)
    old.machine.pop("block_overhead_ms")
    old.machine["overhead_ms_per_block"] = {"prefill": 0.0, "decode": 0.5}
    plain = Profile(tiny_profile)
    plain.machine.pop("block_overhead_ms")
    config = calibration_proxy("lfm2-proxy")
    assert old.predict(config, 64, 256)["decode_ms"] - plain.predict(config, 64, 256)["decode_ms"] == pytest.approx(8.0)


def test_a_program_call_is_charged_once_per_pass_not_once_per_unit(tiny_profile):
    """An ExecuTorch profile's `call_ms` (each unit timing holds one program call; a model's pass is one
    call): a model of n units is predicted (n - 1) calls faster in both phases, so lfm2-proxy (16
    mixers, 16 SwiGLUs, the embedding and the head) by 33 calls; a profile without it (eager) is unchanged."""
    config = calibration_proxy("lfm2-proxy")
    plain = Profile(tiny_profile)
    for phase in ("prefill", "decode"):
        plain.machine["block_overhead_ms"][phase] = dict.fromkeys(plain.machine["block_overhead_ms"][phase], 0.0)
    plain.machine["warm_decode_ms_per_weight_byte"] = 0.0  # nothing near the floor of _with_fixed
    before = plain.predict(config, 64, 256)
    assert "call_ms" not in plain.machine
    plain.machine["call_ms"] = 0.001
    after = plain.predict(config, 64, 256)
    assert before["ttft_ms"] - after["ttft_ms"] == pytest.approx(0.033)
    assert before["decode_ms"] - after["decode_ms"] == pytest.approx(0.033)


def test_overheads_that_outweigh_the_units_never_give_a_negative_time():
    """Fitted overheads are corrections and may be negative; far from the calibration models (a
    proxy narrower than any profiled width) one may outweigh the units.  The prediction then stops
    at a quarter of the units' own sum instead of a negative time: a floor that is a share of the
    units grows with them (test_negative_overheads_never_make_a_longer_context_faster).  The
    arithmetic, on the shipped profile."""
    config, model = get_preset("conv-proxy"), Profile(PROFILES_DIR / "dev-cpu.parquet")
    model.machine["warm_decode_ms_per_weight_byte"] = 0.0
    for kind in model.machine["block_overhead_ms"]["decode"]:
        model.machine["block_overhead_ms"]["decode"][kind] = 0.0
    units = model.predict(config, 64, 256)["decode_ms"]
    model.machine["block_overhead_ms"]["decode"]["mixer:short_conv"] = -units  # 16 blocks: -16x the units
    assert model.predict(config, 64, 256)["decode_ms"] == pytest.approx(units / 4)
    model.machine["block_overhead_ms"]["decode"]["mixer:short_conv"] = -units / 32  # half the units: applied
    assert model.predict(config, 64, 256)["decode_ms"] == pytest.approx(units / 2)


def test_warm_decode_charges_weight_bytes_and_leaves_prefill_and_cold_models_alone():
    """The calibrated per-byte decode cost applies to models inside the last-level cache only.  On the
    shipped profile: a quick profile's fitted overheads can outweigh a proxy's units and put its
    prediction on the floor (a quarter of the units), where a per-byte change does not show one for one."""
    proxy, big = calibration_proxy("lfm2-proxy"), get_preset("lfm2-350m")
    model = Profile(PROFILES_DIR / "dev-cpu.parquet")
    assert model.cache_state(proxy, 256) == "warm" and model.cache_state(big, 256) == "cold"
    before = {c.name: model.predict(c, 64, 256) for c in (proxy, big)}
    model.machine["warm_decode_ms_per_weight_byte"] += 1e-6  # 1 ms per MB more
    after = {c.name: model.predict(c, 64, 256) for c in (proxy, big)}
    extra = after[proxy.name]["decode_ms"] - before[proxy.name]["decode_ms"]
    assert extra == pytest.approx(proxy.params() * 4 * 1e-6)
    assert after[proxy.name]["ttft_ms"] == before[proxy.name]["ttft_ms"]
    assert after[big.name] == before[big.name]


def test_a_profiled_setting_is_predicted_by_its_own_rows(tiny_profile, tmp_path):
    """A unit's settings can run at different rates per FLOP (ExecuTorch runs a long convolution's
    filter outside its fast kernels, so the taps set the time): a setting the profile timed at two
    lengths or more is predicted from its own rows, others from the unit's line over all settings.
    Here the 256-tap long convolution's rows of a real profile are made 3x slower: its predictions
    follow them, and the 64-tap filter's stay at its own rows.

    The long convolutions' timings are replaced by exact lines, one rate per FLOP per kernel (4x apart
    from the shortest to the longest): a line through a busy host's medians need not pass within 5%
    of each (a 128-tap row of one tiny profile measured on a busy host missed by 22%), and what is
    under test is whose rows predict a setting, not the host."""
    from star.arch import LongConvMixer
    from star.evaluators.features import Case
    from star.search_spaces.star import LONG_KERNELS

    table = pq.read_table(tiny_profile)
    rows = table.to_pylist()
    slow = "LongConvMixer(kernel=256)"
    assert {r["spec"] for r in rows if r["unit"] == "mixer:long_conv"} == {
        f"LongConvMixer(kernel={kernel})" for kernel in LONG_KERNELS}  # every kernel the STAR space holds
    long_convs = [r for r in rows if r["unit"] == "mixer:long_conv"]
    per_flop = statistics.median(r["median_ms"] / r["flops"] for r in long_convs)

    def exact(row: dict) -> dict:
        kernel = int(row["spec"].split("=")[1].rstrip(")"))
        median = 0.01 + per_flop * kernel / max(LONG_KERNELS) * row["flops"]
        return {**row, "median_ms": median, "p95_ms": 1.2 * median}

    rows = [exact(r) if r["unit"] == "mixer:long_conv" else r for r in rows]
    altered = [{**r, "median_ms": 3 * r["median_ms"], "p95_ms": 3 * r["p95_ms"]} if r["spec"] == slow else r
               for r in rows]
    path = tmp_path / "altered.parquet"
    pq.write_table(pa.Table.from_pylist(altered).replace_schema_metadata(table.schema.metadata), path)
    model = Profile(path)
    for row in altered:
        if (row["unit"], row["width"], row["phase"], row["cache"]) == ("mixer:long_conv", 128, "prefill", "warm"):
            kernel = int(row["spec"].split("=")[1].rstrip(")"))
            case = Case("mixer:long_conv", 128, LongConvMixer(kernel=kernel), "prefill", row["tokens"])
            assert model._unit_ms(case, "warm")[0] == pytest.approx(row["median_ms"], rel=0.05), row["spec"]


def test_a_fit_ignores_one_far_outlier():
    from star.evaluators.predictor import _fit

    rows = [{"flops": f, "bytes": 0.0, "median_ms": 1.0 + f / 1e9, "p95_ms": 1.1 + f / 1e9}
            for f in (1e8, 3e8, 1e9, 3e9, 1e10)]
    clean = _fit(rows)
    rows[-1] = {**rows[-1], "median_ms": 3 * rows[-1]["median_ms"]}  # a slow mode, 3x the trend
    robust = _fit(rows)
    for f in (1e8, 1e9, 3e9):
        assert robust(f, 0.0) == pytest.approx(clean(f, 0.0), rel=0.01)


def test_passes_repeat_only_the_models_whose_measurements_disagree():
    """Real measurements in forked processes: with no tolerance every model is measured up to the
    limit; with a tolerance no timing can exceed, the first passes are all."""
    from star.evaluators.measure import measure_in_passes

    models = [get_preset("conv-proxy"), get_preset("attention-proxy")]
    strict = measure_in_passes(models, 16, 64, passes=2, most=3, spread=0.0, reps=2, threads=1, canary=False).runs
    assert [len(strict[m.name]) for m in models] == [3, 3]
    loose = measure_in_passes(models, 16, 64, passes=2, most=3, spread=100.0, reps=2, threads=1, canary=False).runs
    assert [len(loose[m.name]) for m in models] == [2, 2]
    assert all(p > 0 and d > 0 for runs in (*strict.values(), *loose.values()) for p, d in runs)


def test_only_passes_made_while_the_canary_ran_quiet_settle_a_model():
    """With the canary, each measurement carries the slower of the canary's prefills right before and
    right after it; a measurement counts towards settling only where that is within 10% of the
    canary's quiet speed (its fastest reading that another repeats, or one given).  Given a fastest
    no real canary comes near, no measurement is quiet, so even a tolerance no timing can exceed
    settles nothing and every model is measured up to the limit, which for a model never measured
    quiet is NEVER_QUIET_MOST times `most`; given none, the canary's own repeated fastest is the mark
    and the first passes can settle."""
    from star.evaluators.measure import CANARY_SLOW, Passes, measure_in_passes, settled

    lone = Passes({}, [21.8, 31.2, 33.9, 31.5, 32.0])  # one fast reading that none repeats: not the host's state
    assert lone.canary_fastest() == 31.2 and lone.canary_fastest(known=25.0) == 25.0
    assert Passes({}, [21.8]).canary_fastest() is None and Passes({}, [21.8]).canary_fastest(30.0) == 30.0

    models = [get_preset("conv-proxy"), get_preset("attention-proxy")]
    busy = measure_in_passes(models, 16, 64, passes=2, most=3, spread=100.0, reps=2, threads=1, canary_ms=1e-3)
    assert NEVER_QUIET_MOST == 2 and [len(busy.runs[m.name]) for m in models] == [6, 6]
    assert busy.canary_fastest(1e-3) == 1e-3 and len(busy.canary) == 12 + 1  # one before the first, one after each
    order = [run for pass_ in range(6) for runs in busy.runs.values() for run in runs[pass_:pass_ + 1]]
    for i, run in enumerate(order):  # measured in passes: each model once per pass; the canary's decode alongside
        assert len(run) == 4 and run[2] == max(busy.canary[i], busy.canary[i + 1]) and run[3] > 0
    quiet = measure_in_passes(models[:1], 16, 64, passes=2, most=3, spread=100.0, reps=2, threads=1)
    fastest = quiet.canary_fastest()
    ordered = sorted(quiet.canary)  # the fastest reading that another one repeats within 6%
    assert fastest == next((a for a, b in itertools.pairwise(ordered) if b <= 1.06 * a), None)
    runs = quiet.runs[models[0].name]  # a third pass only where one of the first two was in a slow stretch,
    decided = Passes({}, quiet.canary[:3]).canary_fastest()  # by the canary readings made up to then
    first_two_calm = [run for run in runs[:2] if decided is None or run[2] <= (1 + CANARY_SLOW) * decided]
    assert (len(runs) == 2) == (len(first_two_calm) >= 2), (runs, quiet.canary)
    calm = [run for run in runs if fastest is None or run[2] <= (1 + CANARY_SLOW) * fastest]
    assert settled(runs, 0, fastest, spread=100.0) == (len(calm) >= 2)
    # decode settles on its ratios to the canary's steps, quiet or not: even in the busy call
    assert all(settled(runs, 1, 1e-3, spread=100.0) for runs in busy.runs.values())


def test_decode_is_timed_against_the_canary_and_settles_on_the_ratio(monkeypatch):
    """Each eager measurement times the canary's decode steps in bursts alternating with the model's;
    the canary measured as the model decodes at its own speed, and a model's decode is the median
    ratio to the canary times the canary's quiet step, settled when two ratios agree however slow the
    host made the steps themselves."""
    from star.evaluators.measure import Passes, canary_model, measure_model, settled, speed_of

    monkeypatch.setenv("STAR_DECODE_TIMED_S", "1")  # the real window: the suite's 0.3 s is for other tests
    runs = [measure_model(canary_model(), 256, 256, reps=5, threads=1) for _ in range(5)]
    assert all(prefill > decode > 0 for prefill, decode, _ in runs)
    # the same model twice, interleaved: measured (busy Zen 5) 17 of 18 processes within 5%, one at 0.74
    assert statistics.median(decode / canary for _, decode, canary in runs) == pytest.approx(1.0, abs=0.1)
    slowed = [(20.0, 4.0, 30.0, 2.0), (21.0, 6.4, 31.0, 3.2), (25.0, 9.0, 40.0, 4.0)]  # ratios 2, 2, 2.25
    assert settled(slowed, 1) and not settled([slowed[0], slowed[2]], 1)
    assert speed_of(slowed, 1.5) == (20.0, 3.0)  # the median ratio, 2, times the canary's quiet 1.5 ms
    assert speed_of(slowed) == (20.0, 4.0)  # no quiet step known: the fastest
    assert speed_of([run[:3] for run in slowed], 1.5) == (20.0, 4.0)  # no canary decode (ExecuTorch): the fastest
    assert Passes({"a": slowed, "b": [(1.0, 1.0, 1.0, 2.1)]}, []).canary_decode() == 2.0  # repeated within 6%
    assert Passes({"a": slowed[:1]}, []).canary_decode() is None and Passes({}, []).canary_decode(1.9) == 1.9


def test_a_failed_measurement_is_one_error_and_the_next_one_works():
    from star.evaluators.measure import _in_fresh_process, measure_model

    config = get_preset("conv-proxy")
    with pytest.raises(StarError, match="measuring conv-proxy failed: TypeError"):
        _in_fresh_process(measure_model, config, 1)  # measure_model's arguments are missing
    # a 256-token prompt: at the proxies' width 64 one forward pass is mostly fixed overhead, so a
    # 16-token prefill can take no longer than one decode step
    prefill, decode, canary_decode = measure_model(config, 256, 64, reps=2, threads=1)
    assert prefill > decode > 0 and canary_decode > 0


def test_cold_scale_is_interpolated_in_log_width(tiny_profile):
    model = Profile(tiny_profile)
    model.machine["cold_scale"] = {"prefill": {"512": 1.0, "2048": 0.5}, "decode": {}}
    assert [model._cold_scale("prefill", w) for w in (256, 512, 1024, 2048, 4096)] == [1.0, 1.0, 0.75, 0.5, 0.5]
    assert model._cold_scale("decode", 1024) == 1.0  # nothing calibrated: no scale


@pytest.mark.parametrize("preset", ["attention-proxy", "conv-proxy"])
def test_predicted_peak_memory_matches_the_measured_peak_rss(tiny_profile, preset):
    """Measured in a fresh process (VmHWM above the baseline): attention's cache grows with the
    context, a convolution's does not, and the prediction follows both within 10%."""
    config, model = calibration_proxy(preset), Profile(tiny_profile)
    measured = {context: measure_peak_memory(config, context, threads=1) for context in (1024, 16384)}
    for context, rss in measured.items():
        predicted = model.predict(config, 64, context)["peak_memory"]
        assert abs(predicted / rss - 1) <= 0.10, (context, predicted, rss)
    growth = measured[16384] - measured[1024]
    cache_growth = config.cache_bytes(16384, 4) - config.cache_bytes(1024, 4)
    if preset == "conv-proxy":
        assert cache_growth == 0 and abs(growth) < 2**20
    else:
        assert 0.9 * cache_growth < growth < 1.3 * cache_growth


def _with_fingerprint(source, target, unsettled: float | None = 0.0, noise: float = 0.05, **changes) -> None:
    """A copy of the profile at `source`, its recorded CPU fingerprint changed, written to `target`,
    with an idle machine's figures: every calibration model settled (`unsettled`; None: a profile from
    before that figure, judged by its timing `noise`).  The tiny profile's own depend on how busy the
    test machine was, and its warning is the next test's subject, not these."""
    table = pq.read_table(source)
    machine = json.loads(table.schema.metadata[b"star.profile"])
    machine["fingerprint"] = {**machine["fingerprint"], **changes}
    machine["timing_noise"] = {"prefill": noise, "decode": noise}
    machine.pop("unsettled")
    if unsettled is not None:
        machine["unsettled"] = {"prefill": unsettled, "decode": unsettled}
    target.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table.replace_schema_metadata({"star.profile": json.dumps(machine)}), target)


def test_a_profile_from_another_cpu_kind_is_refused_unless_named(tiny_profile, tmp_path):
    """`star predict` uses this machine's own profile (the user cache) by default.  One whose recorded
    CPU differs in kernel instruction sets (a cache copied from, or shared with, another machine) is
    refused with one line that says what differs and what to run; named with --profile, it is the
    user's choice and only warned about.  The same profile, unaltered, is used without a word."""
    cache = tmp_path / "cache"
    own = cache / "profiles" / f"{fingerprint_key(fingerprint())}.parquet"
    isa = fingerprint()["isa"]
    other_isa = [flag for flag in isa if flag != "avx2"] + (["amx_tile"] if "amx_tile" not in isa else [])
    _with_fingerprint(tiny_profile, own, isa=other_isa)
    args = ("predict", "--preset", "lfm2-proxy", "--prompt", "64", "--context", "256")
    env = {"STAR_CACHE_DIR": str(cache)}
    assert_bad_input(star(*args, env=env), "measured on", "ISA", "star profile --quick")
    named = star(*args, "--profile", str(own), env=env)
    assert named.returncode == 0, named.stderr
    warning = named.stderr.strip().splitlines()
    assert len(warning) == 1 and warning[0].startswith("star: warning: ") and "ISA" in warning[0], named.stderr
    _with_fingerprint(tiny_profile, own)  # this machine's fingerprint, as star profile writes it
    plain = star(*args, "--json", env=env)
    assert plain.returncode == 0 and plain.stderr == "", plain.stderr
    assert json.loads(plain.stdout)["profile"] == str(own)


def test_a_profile_made_on_a_busy_machine_says_so(tiny_profile, tmp_path):
    """The profile records, per phase, the share of its calibration models that never settled (prefill:
    the fastest time repeated while a canary model ran at its quiet speed; decode: the ratio to the
    canary's decode timed alongside repeated) (a quick profile times each proxy in two
    passes, a third where they disagree, and keeps the fastest; each cold model in two to four; twice
    the most for a model never measured while the canary was quiet; the canary between every two);
    over 10%, every use of the profile warns in one line, and `star profile` says it at the end.  A
    profile made before that figure is judged by its timing noise (the median spread of the passes)
    over 15%."""
    machine = json.loads(pq.read_table(tiny_profile).schema.metadata[b"star.profile"])
    for run in machine["calibration_runs"]:  # a proxy none of whose first 3 passes was quiet: up to 6
        assert 2 <= len(run["rounds"]) <= NEVER_QUIET_MOST * 3
        assert len(run["rounds"]) <= 3 or not any(quiet(r, machine["canary_ms"]) for r in run["rounds"][:3])
    # prefill: the fastest pass; decode: the median ratio to the canary's decode times its quiet step
    floor = fastest_repeated([r[3] for run in machine["calibration_runs"] for r in run["rounds"]])
    for run in machine["calibration_runs"]:
        ratios = [r[1] / r[3] for r in run["rounds"]]
        assert run["prefill_ms"] == min(r[0] for r in run["rounds"])
        assert run["decode_ms"] == pytest.approx(statistics.median(ratios) * floor)
    assert set(machine["timing_noise"]) == {"prefill", "decode"}
    assert all(value >= 0 for value in machine["timing_noise"].values())
    proxies = [run["rounds"] for run in machine["calibration_runs"]]
    cold = list(machine["cold_runs"].values())  # larger than the last-level cache: decode without the canary's
    rounds, canary = proxies + cold, machine["canary_ms"]
    assert canary > 0 and all(r[2] >= canary for runs in rounds for r in runs)
    assert all(len(r) == 4 for runs in proxies for r in runs) and all(len(r) == 3 for runs in cold for r in runs)

    def apart(values: list[float]) -> bool:  # the two fastest more than 6% apart (or fewer than two)
        return len(values) < 2 or sorted(values)[1] > 1.06 * min(values)

    calm = [[r[0] for r in runs if r[2] <= 1.10 * canary] for runs in rounds]  # prefill: the two fastest quiet ones
    assert machine["unsettled"]["prefill"] == pytest.approx(sum(map(apart, calm)) / len(rounds))
    ratios = [sorted(r[1] / r[3] for r in runs) for runs in proxies]  # decode: no two ratios within 6%,
    far = [not any(b <= 1.06 * a for a, b in itertools.pairwise(values)) for values in ratios]
    far += [apart([r[1] for r in runs if r[2] <= 1.10 * canary]) for runs in cold]  # or as prefill without them
    assert machine["unsettled"]["decode"] == pytest.approx(sum(far) / len(rounds))
    args = ("predict", "--preset", "lfm2-proxy", "--prompt", "64", "--context", "256", "--profile")
    for name, figures, shown in (("busy", {"unsettled": 0.4}, "decode 40%"),
                                 ("older-busy", {"unsettled": None, "noise": 0.4}, "decode 40%"),
                                 ("idle", {"unsettled": 0.08, "noise": 0.4}, None),
                                 ("older-idle", {"unsettled": None, "noise": 0.08}, None)):
        path = tmp_path / f"{name}.parquet"
        _with_fingerprint(tiny_profile, path, **figures)
        result = star(*args, str(path))
        assert result.returncode == 0, result.stderr
        with warnings.catch_warnings(record=True):  # a search's manifest records the warning too
            recorded = device_measured_on(str(path))
        if shown is None:
            assert result.stderr == "", (name, result.stderr)
            assert recorded == f"{name}.parquet: measured on {cpu_kind(fingerprint())}", recorded
        else:
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1 and "busy machine" in lines[0] and shown in lines[0], (name, result.stderr)
            assert "busy machine" in recorded and shown in recorded, recorded


def test_lowered_kernels_find_no_profile_for_this_machine(tiny_profile, tmp_path):
    """Torch told to dispatch to its generic kernels (ATEN_CPU_CAPABILITY=default) is, for timing,
    another machine: the profile made with the CPU's own kernels no longer applies, and nothing
    falls back silently to a profile measured elsewhere."""
    cache = tmp_path / "cache"
    _with_fingerprint(tiny_profile, cache / "profiles" / f"{fingerprint_key(fingerprint())}.parquet")
    result = star("predict", "--preset", "lfm2-proxy", env={"STAR_CACHE_DIR": str(cache),
                                                            "ATEN_CPU_CAPABILITY": "default"})
    assert_bad_input(result, "no latency profile for this CPU", "torch kernels DEFAULT", "star profile --quick")


def test_the_shipped_profile_is_used_only_on_the_cpu_kind_it_was_measured_on(tmp_path):
    """With no profile of its own, `star predict` falls back to a shipped profile only where that one
    was measured on this CPU kind; elsewhere it refuses, naming the shipped one as the explicit way."""
    result = star("predict", "--preset", "lfm2-proxy", "--json", env={"STAR_CACHE_DIR": str(tmp_path)})
    shipped = Profile(PROFILES_DIR / "dev-cpu.parquet")
    if shipped.differences_here():
        assert_bad_input(result, "no latency profile for this CPU", "--profile dev-cpu", shipped.measured_on())
    else:
        assert result.returncode == 0 and result.stderr == "", result.stderr
        assert json.loads(result.stdout)["profile"].endswith("dev-cpu.parquet")


def test_machine_identity_names_the_cpu_kind():
    """Two CPUs that both call themselves 'AMD EPYC' are told apart by family and model, and the
    kernel fields say what differs."""
    zen3 = {"arch": "x86_64", "vendor": "AuthenticAMD", "family": "25", "model": "1", "model_name": "AMD EPYC",
            "isa": ["avx2", "fma"], "kernels": "AVX2", "torch": "2.13.0+cpu", "cpus": 2}
    zen4 = {**zen3, "model": "17", "isa": ["avx2", "fma", "avx512f", "avx512_bf16"], "kernels": "AVX512"}
    assert "Zen 3" in cpu_kind(zen3) and "AVX2" in cpu_kind(zen3)
    assert "Zen 4" in cpu_kind(zen4) and "AVX-512 bf16" in cpu_kind(zen4)
    differences = kernel_differences(zen4, zen3)
    assert differences == ["model '17' there, '1' here", "ISA avx512f, avx512_bf16 there, not here",
                           "kernels 'AVX512' there, 'AVX2' here"]
    assert fingerprint_key(zen3) != fingerprint_key(zen4)
    assert fingerprint_key(zen3) == fingerprint_key({**zen3, "cpus": 64, "model_name": "renamed"})
    assert kernel_differences(None, zen3) and kernel_differences(zen3, dict(zen3)) == []


def test_star_predict_json_keys_and_bad_profiles(tiny_profile, tmp_path):
    result = star("predict", "--preset", "lfm2-proxy", "--profile", str(tiny_profile), "--prompt", "64",
                  "--context", "256", "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    for key in ("prefill_ms", "decode_ms_per_token", "decode_ms_p95", "peak_memory_bytes"):
        assert out[key] > 0
    # the machine and the fitted constants, not the calibration's raw measurements (kilobytes of JSON)
    assert out["machine"]["fingerprint"]["isa"] and "block_overhead_ms" in out["machine"]
    assert "calibration_runs" not in out["machine"]
    assert_bad_input(star("predict", "--preset", "lfm2-proxy", "--profile", str(tmp_path / "none.parquet")),
                     "does not exist")
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"not parquet")
    assert_bad_input(star("predict", "--preset", "lfm2-proxy", "--profile", str(junk)), "not a star profile")
    with pytest.raises(StarError):
        Profile(junk)


def test_roofline_models_rank_decode_by_bytes_and_are_labelled_models():
    for device in DEVICES.values():
        assert "not a measurement" in device.kind
    lfm2, qwen = predict(get_preset("lfm2-350m"), "s24-ultra"), predict(get_preset("qwen3-0.6b"), "s24-ultra")
    assert lfm2["decode_ms"] < qwen["decode_ms"]  # fewer weights and a smaller cache to stream per token
    with pytest.raises(StarError):
        predict(get_preset("lfm2-350m"), "pixel-99")


def test_star_predict_labels_a_roofline_p95_as_an_assumption():
    """A roofline model's p95 is its p50 x 1.15, a ratio nobody measured: the output says so, in JSON
    and on screen.  A measured profile's p95 comes from the profile's own p95 timings."""
    result = star("predict", "--preset", "lfm2-350m", "--profile", "s24-ultra", "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["decode_ms_p95"] == pytest.approx(1.15 * out["decode_ms_per_token"])
    assert out["decode_ms_p95_basis"].startswith("an assumption: p50 x 1.15")
    screen = star("predict", "--preset", "lfm2-350m", "--profile", "s24-ultra").stdout
    assert "an assumption: p50 x 1.15" in next(line for line in screen.splitlines() if "p95" in line)
    measured = star("predict", "--preset", "lfm2-350m", "--profile", "dev-cpu", "--json")
    assert json.loads(measured.stdout)["decode_ms_p95_basis"].startswith("measured"), measured.stderr
