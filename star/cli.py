"""The `star` command line.

Only argparse is imported at start-up: torch, transformers and ray load inside the command that
needs them, so `star --help` stays instant.  Bad input ends in one line, `star: error: ...`, and
exit status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator
from typing import Any

from star.arch import layout_letter
from star.validate import one_line, show

EXIT_BAD_INPUT = 2
MAX_SEED = 2**32 - 1
MAX_TOKENS = 2**24  # prompt and context lengths (16 M tokens)
MAX_THREADS = 1_024


def _int_in(low: int, high: int) -> Any:
    """An argparse type: an integer in low..high, refused in one line otherwise (no huge or negative
    values reaching torch, numpy or Ray, where they overflow deep inside)."""

    def parse(text: str) -> int:
        digits = text.strip().lstrip("+-")
        if not digits.isdigit() or len(digits) > 30:
            raise argparse.ArgumentTypeError(f"expected an integer in {low}..{high}, got {show(text)}")
        value = int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is out of range ({low}..{high})")
        return value

    parse.__name__ = "integer"
    return parse


def _float_in(low: float, high: float, low_open: bool = False) -> Any:
    """An argparse type: a finite number in [low, high] (or (low, high] with low_open)."""
    import math

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {show(text)}") from None
        if not math.isfinite(value) or value > high or value < low or (low_open and value == low):
            raise argparse.ArgumentTypeError(f"must be a finite number in {'(' if low_open else '['}{low:g}, "
                                             f"{high:g}], got {show(text)}")
        return value

    parse.__name__ = "number"
    return parse


SEED = _int_in(0, MAX_SEED)
TOKENS = _int_in(1, MAX_TOKENS)
THREADS = _int_in(1, MAX_THREADS)


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line like every other bad-input error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"star: error: {message} (see '{self.prog} --help')\n")
        raise SystemExit(EXIT_BAD_INPUT)


def _add_source(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--preset", help="a preset name (see `star presets`)")
    source.add_argument("--config", help="an ArchConfig JSON file (or a folder holding config.json)")
    source.add_argument("--genome", help="comma-separated genome integers; needs --space")
    parser.add_argument("--space", default="lfm2", help="search space of --genome (default: lfm2)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="star", description="STAR-style architecture search for small hybrid language models.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("presets", help="list the named reference architectures")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser("describe", help="parameters, cache bytes and FLOPs of an architecture (exact)")
    _add_source(p)
    p.add_argument("--context", type=_int_in(0, MAX_TOKENS), default=4096,
                   help="context length for cache and FLOPs (default 4096)")
    p.add_argument("--cache-dtype-bytes", type=int, default=2, choices=(1, 2, 4),
                   help="bytes per cached value (default 2: bf16/fp16)")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser("export", help="write a transformers (hf) or native model folder",
                       description="Export a preset, config or genome, or a genome from a search run "
                                   "(star export RUN --rank 1 ...).")
    p.add_argument("run", nargs="?", help="a run folder of star search (then --rank or --id picks the genome)")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--preset", help="a preset name (see `star presets`)")
    source.add_argument("--config", help="an ArchConfig JSON file (or a folder holding config.json)")
    source.add_argument("--genome", help="comma-separated genome integers; needs --space")
    source.add_argument("--rank", type=_int_in(1, 10**6),
                   help="with RUN: the K-th member of the run's Pareto set, as star pareto "
                                                 "lists it (1 = first)")
    source.add_argument("--id", dest="genome_id", help="with RUN: a genome id of the run")
    p.add_argument("--space", default="lfm2", help="search space of --genome (default: lfm2)")
    p.add_argument("--format", required=True, choices=("hf", "native", "executorch"),
                   help="hf: transformers config; native: ours; executorch: a .pte program with prefill and "
                        "cached decode methods (needs the deploy extra)")
    p.add_argument("-o", "--out", required=True, help="output folder")
    p.add_argument("--prompt", type=_int_in(1, 10**6), default=256,
                   help="executorch: the prefill method's prompt length in tokens (default 256)")
    p.add_argument("--context", type=_int_in(2, 10**7),
                   help="executorch: positions the decode cache holds (default 4096, or the model's maximum "
                        "if shorter)")
    p.add_argument("--quantize", action="store_true",
                   help="executorch: also write model-8da8w.pte (8-bit weights and dynamic activations)")
    p.add_argument("--weights", action="store_true", help="also write model.safetensors (seeded random init)")
    p.add_argument("--weights-from", help="native safetensors file (or folder) whose weights to export")
    p.add_argument("--seed", type=SEED, default=0, help="seed of the random initialisation (default 0)")
    p.add_argument("--force", action="store_true", help="overwrite an existing config.json")

    p = sub.add_parser("sample", help="print random genomes of a search space")
    p.add_argument("--space", default="lfm2", help="search space (default: lfm2)")
    p.add_argument("-n", type=_int_in(1, 100_000), default=1, help="how many (default 1, at most 100,000)")
    p.add_argument("--seed", type=SEED, default=0, help="random seed (default 0)")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser("spaces", help="list the search spaces")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser("tasks", help="list the 50 tasks of the evaluation suite")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser("eval", help="score an architecture's proxy: the recall probe, then training and scoring "
                                    "the fidelity's tasks")
    _add_source(p)
    p.add_argument("--fidelity", default="2",
                   help="training budget: real text at 0 screen (96K tokens), 1 low (192K), 2 default (256K), "
                        "3 high (1.5M) or a token count such as 64K; 4 gpu: the 50-task mixture, 32M tokens")
    p.add_argument("--seed", type=SEED, default=0, help="seed of initialisation and training data (default 0)")
    p.add_argument("--corpus", help="your own text for the real-text tasks: a file, a folder, or Parquet with 'text'")
    p.add_argument("--tasks", help="comma-separated tasks or categories to score (default: those trained on; "
                                   "training is unchanged)")
    p.add_argument("--train-on", help="comma-separated tasks or categories to train on alone, e.g. in_context_recall "
                                      "(default: the fidelity's: real text, or at the gpu fidelity all 50 tasks)")
    p.add_argument("--probe-steps", type=_int_in(0, 100_000),
                   help="most steps of the in-context recall probe, which stops once "
                                                   "recall is learned (default 800: 20-80 s; 0 skips it: no "
                                                   "in_context_recall score)")
    p.add_argument("--threads", type=THREADS,
                   help="cores to use (default: all this process may use); with 2 or more, the recall probe and "
                        "the text run go side by side on one thread each")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="default: cuda if available")
    p.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp32"),
                   help="auto: bf16 autocast where bf16 is native (AVX-512 BF16, AMX, CUDA), else fp32")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the proxy: ~1.3x faster steps, but a cold compile costs tens of seconds")
    p.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    p.add_argument("--out", help="also write per-task scores to this Parquet file")

    _add_search_parser(sub)

    p = sub.add_parser("report", help="write a self-contained HTML report of a run (works offline)")
    p.add_argument("run", help="run folder (written by star search)")
    p.add_argument("-o", "--out", required=True, help="HTML file to write")

    p = sub.add_parser("dashboard", help="serve the run's Optuna study with optuna-dashboard on this machine")
    p.add_argument("run", help="run folder (written by star search)")
    p.add_argument("--port", type=_int_in(1, 65_535), default=8080, help="port (default 8080)")
    p.add_argument("--host", help="address to bind; default 127.0.0.1 (only this machine). Give another "
                                  "explicitly, e.g. 0.0.0.0, to let other machines in")
    _add_trust_flags(p, storage=True)

    p = sub.add_parser("profile", help="measure operator latencies on this machine (prefill and decode)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where to measure (default cpu)")
    p.add_argument("--threads", type=THREADS, help="torch threads (default: all this process may use)")
    p.add_argument("--dtype", default="fp32", choices=("fp32", "bf16"), help="weights and activations (default fp32)")
    p.add_argument("--quick", action="store_true",
                   help="a coarse grid and a lighter calibration (7.5-11 min on 2 busy cores: a Zen 4 "
                        "with AVX2 kernels, a Zen 5 with AVX-512; 15 min on that Zen 5 since units are timed over "
                        "windows in three sweeps) instead of the full one (22-25 min there before decode was timed "
                        "against a canary, 37 min since on a busy Zen 5, before the unit windows); good enough for "
                        "search objectives")
    p.add_argument("--runtime", default="eager", choices=("eager", "executorch"),
                   help="what to time: eager PyTorch (default), or ExecuTorch programs as `star export --format "
                        "executorch` writes them (needs the deploy extra; lowering the programs takes about 15 min "
                        "on 2 cores the first time with --quick, and they are kept for the next profile)")
    p.add_argument("-o", "--out", help="Parquet file to write (default: this machine's profile in the user cache "
                                       "folder, which `star predict` and `--device-profile here` use; an "
                                       "ExecuTorch profile goes beside it, named with --profile FILE)")

    p = sub.add_parser("predict", help="predicted latency and memory of an architecture on a profiled device")
    _add_source(p)
    p.add_argument("--profile", default="here",
                   help="here (default: the profile made on this machine by star profile, or a shipped one measured "
                        "on this CPU kind; refused if there is none), a profile file, a shipped one by name "
                        "(dev-cpu), or a roofline model: ryzen-hx370, s24-ultra")
    p.add_argument("--prompt", type=TOKENS, default=1024, help="prompt tokens for time to first token (default 1024)")
    p.add_argument("--context", type=TOKENS, default=4096, help="context for decode and memory (default 4096)")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser("pareto", help="list the non-dominated evaluations of a run")
    p.add_argument("run", help="run folder (written by star search)")
    p.add_argument("--format", default="table", choices=("table", "json", "csv"), help="output format (default table)")
    p.add_argument("--rung", type=_int_in(0, 1_000),
                   help="the front among evaluations at this rung (default: the top rung "
                                            "reached; scores from different rungs are never compared)")
    return parser


def _add_trust_flags(p: argparse.ArgumentParser, storage: bool) -> None:
    """A run folder may come from anyone: what it names is loaded or opened only on the user's word."""
    p.add_argument("--trust-space", action="store_true",
                   help="load the run's search space even if it is code ('module:ATTR' or 'file.py:ATTR'); "
                        "without it a run folder's space loads only if it is one of star's")
    if storage:
        p.add_argument("--storage", metavar="URL",
                       help="the run's Optuna storage URL, if it is not the run folder's study.db: a run folder's "
                            "other storage opens only when named here")


def _add_search_parser(sub: Any) -> None:
    from star.objectives import CONSTRAINT_FLAGS, OBJECTIVES

    p = sub.add_parser("search", help="multi-objective evolutionary architecture search (Ray, resumable)",
                       description="Evolve genomes of a search space towards the Pareto front of the objectives. "
                                   "Settings are stored in the run folder; --resume continues a stopped run.")
    # Defaults are None here and filled in by cmd_search, so that --resume can tell what was given.
    p.add_argument("--space", help="search space: lfm2 or star, or 'module:ATTR' (default lfm2)")
    p.add_argument("--budget", type=_int_in(1, 10**6), help="evaluations in total, failures included (default 64)")
    p.add_argument("--out", help="run folder to create (default results/<space>-<time>)")
    p.add_argument("--resume", nargs="?", const=True, metavar="DIR",
                   help="continue the run in DIR (or in --out); only --budget, --workers, --threads-per-worker, "
                        "--gpus-per-worker and --ray-address may change")
    p.add_argument("--objectives", help=f"comma-separated, from {', '.join(OBJECTIVES)} "
                                        "(default quality,decode_ms,cache_bytes)")
    p.add_argument("--seed", type=SEED, help="search seed; the same seed and one worker give the same run (default 0)")
    p.add_argument("--seed-preset", action="append", metavar="NAME",
                   help="start the population from this preset (repeatable), e.g. lfm2-1.2b")
    p.add_argument("--selection", choices=("nsga2", "hvi"),
                   help="nsga2: STAR's rank + crowding; hvi: LFM2's budget filter + hypervolume improvement")
    p.add_argument("--population", type=_int_in(2, 100_000), help="survivors kept for selection (default 32)")
    p.add_argument("--fidelities", help="training budgets, low to high, e.g. 0,2 or 64K,256K: children train at "
                                        "the first, the top 1/eta are promoted (default 0,2)")
    p.add_argument("--eta", type=_int_in(2, 1_000), help="successive-halving ratio (default 3)")
    for flag, metric in CONSTRAINT_FLAGS.items():
        p.add_argument("--" + flag.replace("_", "-"), metavar="LIMIT",
                       help=f"constraint: {metric} at most LIMIT (e.g. 400M, 2GiB, 20)")
    p.add_argument("--device-profile", help="device for ttft_ms/decode_ms/peak_memory: ryzen-hx370 (default) or "
                                            "s24-ultra (roofline models); here (this machine's profile, from star "
                                            "profile), dev-cpu or a star profile file (measured)")
    p.add_argument("--prompt", type=TOKENS, help="prompt tokens for ttft_ms (default 1024)")
    p.add_argument("--context", type=TOKENS, help="context for decode_ms, cache_bytes, peak_memory (default 4096)")
    p.add_argument("--evaluator", choices=("suite", "synthetic"),
                   help="suite: train each proxy on the 50 tasks (default); synthetic: a fast formula for "
                        "testing the search machinery (not a quality measure)")
    p.add_argument("--synthetic-cost", type=_float_in(0, 86_400),
                   help="synthetic evaluator: seconds each evaluation sleeps")
    p.add_argument("--probe-steps", type=_int_in(0, 100_000),
                   help="suite evaluator: most steps of the in-context recall probe "
                                                   "(default 800; 0: none, and quality cannot see recall)")
    p.add_argument("--corpus", help="your own text for the real-text tasks (file, folder, or Parquet)")
    p.add_argument("--precision", choices=("auto", "bf16", "fp32"), help="proxy training precision (default auto)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), help="where workers train (default auto)")
    p.add_argument("--eval-timeout", type=_float_in(0, 7 * 86_400, low_open=True), metavar="S",
                   help="seconds before an evaluation counts as hung "
                                                                    "(default 1800)")
    p.add_argument("--inject-faults", metavar="SPEC",
                   help="rig genomes to fail, e.g. raise=0.1,nan=0.1,hang=0.05,crash=0.05 (tests the machinery)")
    p.add_argument("--storage", help="Optuna storage URL (default: sqlite in the run folder); with --resume, "
                                     "the run's own URL again, which lets star open a storage the run names")
    _add_trust_flags(p, storage=False)
    p.add_argument("--keep-weights", action="store_true", default=None,
                   help="keep every trained proxy in RUN/weights/ (about 4 bytes per parameter each) so that "
                        "star export --weights can export it")
    p.add_argument("--workers", type=_int_in(1, MAX_THREADS),
                   help="evaluations in parallel (default 1; on a cluster, its CPUs / --threads-per-worker)")
    p.add_argument("--threads-per-worker", type=THREADS,
                   help="CPUs each worker declares (default cores / workers; on a cluster, 1)")
    p.add_argument("--gpus-per-worker", type=_float_in(0, 64), metavar="G",
                   help="GPUs each worker declares; a fraction (0.25) lets several proxies share one GPU "
                        "(default 0; 1 with --device cuda)")
    p.add_argument("--ray-address", help="join this Ray cluster (e.g. auto or HOST:6379) instead of a local one; "
                                         "every node must run this version of star (docs/cluster.md)")
    p.add_argument("--json", action="store_true", help="print the Pareto set as JSON at the end, no decoration")


def main(argv: list[str] | None = None) -> int:
    from star.errors import StarError

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from star import __version__

        print(__version__)
        return 0
    if args.command is None:
        parser.print_help()
        return 0
    handler = COMMANDS[args.command]
    previous_sigterm = _terminate_as_interrupt()
    try:
        status = handler(args) or 0
        sys.stdout.flush()  # a full disk or closed pipe shows here, not in the interpreter's last flush
        return status
    except StarError as err:
        sys.stderr.write(f"star: error: {one_line(err)}\n")
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        sys.stderr.write("star: interrupted\n")
        return 130
    except BrokenPipeError:
        # Whoever read our output stopped early (`star tasks --json | head`): not an error to report.
        _silence_stdout()
        return 1
    except OSError as err:  # a full disk, a closed terminal, a file that vanished: said in one line
        if err.filename is None:  # a write to an open stream (stdout, most often)
            _silence_stdout()
            sys.stderr.write(f"star: error: cannot write the output: {one_line(err.strerror or err)}\n")
        else:
            sys.stderr.write(f"star: error: {err.filename}: {one_line(err.strerror or err)}\n")
        return EXIT_BAD_INPUT
    except Exception as err:
        import os

        if os.environ.get("STAR_DEBUG"):
            raise
        sys.stderr.write(f"star: error: internal error ({type(err).__name__}: {one_line(err)[:300]}); this is a "
                         "bug in star, please report it with the command line (STAR_DEBUG=1 shows the traceback)\n")
        return 1
    finally:
        if previous_sigterm is not None:
            import signal

            signal.signal(signal.SIGTERM, previous_sigterm)


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's final flush does not raise again."""
    import os

    if sys.stdout is not sys.__stdout__:  # an in-process caller's capture: theirs to handle
        return
    with contextlib.suppress(OSError, ValueError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _terminate_as_interrupt() -> Any:
    """SIGTERM ends a command the way Ctrl-C does: cleanup runs, and the exit is prompt, even while
    a library waits on a network connection.  Returns the handler it replaced (None off the main
    thread, where signals cannot be handled)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, handler)


# --------------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------------


def _resolve_config(args: argparse.Namespace) -> Any:
    from star.errors import StarError

    if args.preset is not None:
        from star.presets import get_preset

        return get_preset(args.preset)
    if args.config is not None:
        from star.export import load_config

        if not args.config.strip():
            raise StarError("--config needs a file name")
        return load_config(args.config)
    if not args.genome.strip():
        raise StarError("--genome needs comma-separated integers")
    from star.search_spaces import get_space

    space = get_space(args.space)
    try:
        genome = tuple(int(part) for part in args.genome.replace(" ", "").split(",") if part != "")
    except ValueError:
        raise StarError(f"genome {args.genome!r} must be comma-separated integers") from None
    return space.decode(genome)


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2))


def cmd_presets(args: argparse.Namespace) -> None:
    from star.presets import PRESETS

    if args.json:
        _print_json([{"name": name, "description": desc} for name, (desc, _) in PRESETS.items()])
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Presets")
    table.add_column("name", style="bold")
    table.add_column("description")
    for name, (desc, _) in PRESETS.items():
        table.add_row(name, desc)
    Console().print(table)


def cmd_describe(args: argparse.Namespace) -> None:
    from star.evaluators.static import static_metrics

    info = static_metrics(_resolve_config(args), args.context, args.cache_dtype_bytes)
    if args.json:
        _print_json(info)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{info['name']}", show_header=False)
    table.add_column("", style="bold")
    table.add_column("", justify="right")
    table.add_row("parameters", f"{info['params']:,}")
    table.add_row("non-embedding parameters", f"{info['non_embedding_params']:,}")
    table.add_row(f"cache bytes @ {info['context']:,} tokens ({info['cache_dtype_bytes']} B/value)",
                  f"{info['cache_bytes']:,}  ({info['cache_bytes'] / 2**20:,.1f} MiB)")
    table.add_row(f"prefill FLOPs ({info['context']:,} tokens)", f"{info['prefill_flops']:.4g}")
    table.add_row(f"decode FLOPs / token @ {info['context']:,}", f"{info['decode_flops_per_token']:.4g}")
    table.add_row("width / vocab", f"{info['hidden_size']} / {info['vocab_size']}")
    table.add_row("blocks", ", ".join(f"{n} {k}" for k, n in info["block_counts"].items()))
    table.add_row("layout", " ".join(layout_letter(k) for k in info["layer_types"]))
    Console().print(table)


def cmd_export(args: argparse.Namespace) -> None:
    from star.errors import StarError
    from star.export import export

    from_run = args.rank is not None or args.genome_id is not None
    if args.run and not from_run:
        raise StarError("with a run folder, pick the genome with --rank K or --id GENOME_ID")
    if from_run and not args.run:
        raise StarError("--rank and --id pick a genome from a run: star export RUN --rank K ...")
    if not args.run and not (args.preset or args.config or args.genome):
        raise StarError("name what to export: --preset, --config, --genome, or a run folder with --rank/--id")
    weights_from = args.weights_from
    if args.run:
        config, weights_from = _config_from_run(args)
    else:
        config = _resolve_config(args)
    if args.format == "executorch":
        from star.executorch import export_executorch, require_executorch

        context = args.context or min(4096, config.max_position_embeddings)
        with _quiet_exporters():
            require_executorch("--format executorch")

            def announce() -> None:
                programs = "fp32 and 8-bit programs" if args.quantize else "an fp32 program"
                print(f"exporting {config.name} to ExecuTorch (XNNPACK, {programs}, prompt {args.prompt}, context "
                      f"{context}): 7-15 s per block and program on 2 cores", file=sys.stderr)

            written = export_executorch(config, args.out, args.prompt, context, args.quantize, args.force,
                                        args.seed, weights_from, checked=announce)
    else:
        if args.prompt != 256 or args.context or args.quantize:
            raise StarError("--prompt, --context and --quantize belong to --format executorch")
        written = export(config, args.out, args.format, weights=args.weights and not weights_from, seed=args.seed,
                         weights_from=weights_from, force=args.force)
    for path in written:
        print(path)


@contextlib.contextmanager
def _quiet_exporters() -> Iterator[None]:
    """A context in which torch.export, torchao and ExecuTorch keep their warnings and log lines about
    their own internals (deprecations, optional CUDA kernels) to themselves: the user sees ours."""
    import logging
    import warnings

    names = ("torchao", "executorch", "torch._export", "torch.export", "torch.utils._pytree")
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)


def _config_from_run(args: argparse.Namespace) -> tuple[Any, str | None]:
    """The architecture of the chosen evaluation; with --weights, its trained proxy and weight file."""
    from star.arch import ArchConfig
    from star.errors import StarError
    from star.queries import pick_row
    from star.search import open_run
    from star.store import EVALUATIONS

    store = open_run(args.run)
    if not store.rows:
        raise StarError(f"run {args.run} has no evaluations yet")
    row = pick_row(store, args.run, args.rank, args.genome_id)
    config = ArchConfig.from_json(row["config_json"], source=f"{store.path / EVALUATIONS}: row with eval_index "
                                                            f"{row['eval_index']}, column 'config_json'")
    if not args.weights:
        return config, None
    if not row.get("weights_file"):
        raise StarError(f"{args.run} kept no weights for genome {row['genome_id']} (start a search with "
                        "--keep-weights to keep trained proxies)")
    weights = (store.path / row["weights_file"]).resolve()
    if not weights.is_relative_to(store.path.resolve()):  # a damaged row must not point outside the run
        raise StarError(f"{store.path / EVALUATIONS}: row with eval_index {row['eval_index']}, column "
                        f"'weights_file': {row['weights_file']!r} is outside the run folder")
    from star.scaling import to_proxy

    return to_proxy(config), str(store.path / row["weights_file"])


def cmd_sample(args: argparse.Namespace) -> None:
    import random

    from star.errors import StarError
    from star.genome import genome_id
    from star.search_spaces import get_space

    if args.n < 1:
        raise StarError(f"-n must be >= 1, got {args.n}")
    space = get_space(args.space)
    rng = random.Random(args.seed)
    rows = []
    for _ in range(args.n):
        genome = space.sample(rng)
        config = space.decode(genome)
        rows.append({"genome_id": genome_id(space.name, genome), "genome": list(genome),
                     "params": config.params(), "layer_types": config.layer_types})
    if args.json:
        _print_json(rows)
        return
    for row in rows:
        layout = " ".join(layout_letter(k) for k in row["layer_types"])
        print(f"{row['genome_id']}  {','.join(map(str, row['genome']))}  params={row['params']:,}  {layout}")


def cmd_spaces(args: argparse.Namespace) -> None:
    from star.search_spaces import get_space, list_spaces

    rows = []
    for name in list_spaces():
        space = get_space(name)
        doc = (space.__doc__ or "").strip().splitlines()
        rows.append({"name": name, "genes": len(space.gene_sizes()), "doc": doc[0] if doc else ""})
    if args.json:
        _print_json(rows)
        return
    for row in rows:
        print(f"{row['name']:<8} {row['genes']:>4} genes  {row['doc']}")


def cmd_tasks(args: argparse.Namespace) -> None:
    from star.evaluators.tasks import task_list

    rows = task_list()
    if args.json:
        _print_json(rows)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"The evaluation suite ({len(rows)} tasks)")
    for column in ("name", "category", "metric", "description"):
        table.add_column(column, style="bold" if column == "name" else None)
    for row in rows:
        table.add_row(row["name"], row["category"], row["metric"], row["description"])
    Console().print(table)


def cmd_eval(args: argparse.Namespace) -> None:
    from star.errors import StarError
    from star.evaluators.suite import evaluate, get_fidelity, load_corpus, write_parquet
    from star.evaluators.tasks import VOCAB_SIZE, select_tasks
    from star.validate import check_output_file

    fidelity = get_fidelity(args.fidelity)
    train_on = select_tasks(args.train_on) if args.train_on else None
    if args.train_on is not None and not train_on:
        raise StarError("--train-on names no task")
    names = select_tasks(args.tasks) if args.tasks else train_on
    if args.threads is not None and args.threads < 1:
        raise StarError(f"--threads must be >= 1, got {args.threads}")
    if args.out and not args.out.endswith(".parquet"):
        raise StarError(f"--out {args.out}: expected a .parquet file name")
    if args.out:
        check_output_file(args.out, "--out")
    if args.probe_steps is not None and args.probe_steps < 0:
        raise StarError(f"--probe-steps must be >= 0, got {args.probe_steps}")
    from star.evaluators.probe import ProbeSettings

    probe_settings = ProbeSettings(steps=args.probe_steps) if args.probe_steps else None
    corpus = load_corpus(args.corpus)
    config = _resolve_config(args)
    if config.vocab_size != VOCAB_SIZE:
        from star.scaling import to_proxy

        config = to_proxy(config)
        sys.stderr.write(f"star: {config.name.removesuffix('-proxy')} is full size; evaluating its proxy "
                         f"(width {config.hidden_size}, vocab {VOCAB_SIZE})\n")
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    err = Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} steps"),
               TextColumn("loss {task.fields[loss]:.3f}"), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err, transient=True) as bar:
        jobs: dict[str, Any] = {}

        def progress(phase: str, done: int, total: int, loss: float) -> None:
            if phase not in jobs:
                what = "recall probe" if phase == "probe" else f"training ({fidelity.name})"
                jobs[phase] = bar.add_task(f"{config.name}: {what}", total=total, loss=float("nan"))
            bar.update(jobs[phase], completed=done, loss=loss)
            if phase == "train" and done == total:
                bar.update(jobs[phase], description="scoring")

        result = evaluate(config, fidelity, seed=args.seed, corpus=corpus, threads=args.threads, device=args.device,
                          precision=args.precision, tasks=names or None, progress=progress, compile=args.compile,
                          train_on=train_on, probe=args.probe_steps != 0, probe_settings=probe_settings)
    if args.out:
        write_parquet(result, config, args.out)
    if args.json:
        _print_json(result.to_dict())
        return
    _print_eval(result)
    if args.out:
        print(f"wrote {args.out}")


def _print_eval(result: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    tasks = Table(title=f"{result.architecture}: per-task scores (fidelity {result.fidelity.name}, seed {result.seed})")
    for column in ("task", "category", "score", "bits/byte"):
        tasks.add_column(column, justify="right" if column in ("score", "bits/byte") else "left")
    for t in result.tasks:
        tasks.add_row(t.name, t.category, f"{t.score:.3f}", "" if t.bits_per_byte is None else f"{t.bits_per_byte:.3f}")
    console.print(tasks)
    cats = Table(title="per category (aggregate: weighted mean, recall and real text count double)")
    cats.add_column("category")
    cats.add_column("score", justify="right")
    for name, score in result.categories.items():
        cats.add_row(name, f"{score:.3f}")
    cats.add_row("[bold]aggregate[/bold]", f"[bold]{result.aggregate:.3f}[/bold]")
    console.print(cats)
    t = result.timing
    console.print(f"{result.training['tokens']:,} training tokens at {result.training['tokens_per_s']:,.0f} tokens/s "
                  f"({result.training['precision']}, {result.training['threads']} thread(s)); "
                  f"wall {t['total_s']:.1f} s: "
                  f"setup {t['setup_s']:.1f}, recall probe {t['probe_s']:.1f}"
                  f"{' (beside the text run)' if result.training['beside_probe'] else ''}, build {t['build_s']:.1f}, "
                  f"data {t['data_s']:.1f}, train {t['train_s']:.1f}, scoring {t['eval_s']:.1f}")
    if result.probe is not None:
        runs = ", ".join(f"lr {r['learning_rate']:g}: " + ("stopped before its first scoring" if r["score"] is None else
                                                         f"{r['score']:.3f} after {r['steps']} steps" +
                                                         (" (learned)" if r["learned"] else ""))
                         for r in result.probe.runs)
        console.print(f"in_context_recall is the recall probe's score: the best of {runs}")
    if result.training.get("trained_on", "all") != "all":
        console.print(f"trained on these tasks only: {result.training['trained_on']}")


# ---- search ---------------------------------------------------------------------------------------

def cmd_search(args: argparse.Namespace) -> int:
    from star.errors import StarError
    from star.search import MANIFEST, Search, SearchSettings, check_resume, create_run, open_run

    if args.workers is not None and args.workers < 1:
        raise StarError(f"--workers must be >= 1, got {args.workers}")
    if args.threads_per_worker is not None and args.threads_per_worker < 1:
        raise StarError(f"--threads-per-worker must be >= 1, got {args.threads_per_worker}")
    new_budget = False
    # The user's word for what the run names (a new run names only what they gave; see run_space):
    # --space or --storage again on --resume names the same (check_same_flags), so it is theirs.
    trust = {"trust_space": args.trust_space or args.space is not None, "trust_storage": args.storage is not None}
    if args.resume:
        # Everything is checked before the first write: the run (open_run), the flags against it,
        # and what the resume will need (check_resume).  The new budget is written only once the
        # study is open, so a resume that cannot start leaves the run folder as it was.
        folder = args.resume if isinstance(args.resume, str) else args.out
        if not folder:
            raise StarError("--resume needs a run folder: --resume DIR")
        store = open_run(folder)
        stored = SearchSettings.from_manifest(store.manifest["settings"], str(store.path / MANIFEST))
        stored.check_same_flags(vars(args))
        settings = check_resume(store, args.budget, **trust)
        if settings.evaluator["corpus"]:
            from star.evaluators.corpus import user_corpus

            user_corpus(settings.evaluator["corpus"])  # fail now, in the driver, not in every worker
        new_budget = settings.budget != store.manifest["settings"]["budget"]
        store.manifest["settings"]["budget"] = settings.budget
    else:
        settings = SearchSettings.from_flags(vars(args))
    workers, threads = args.workers or 1, args.threads_per_worker
    if args.ray_address and settings.trains and settings.budget > (len(store.rows) if args.resume else 0):
        # Join and check the cluster before the run folder is made or changed: a cluster that cannot
        # run this search is one line, and leaves the run as it was.
        from star.executor import join_cluster

        threads = threads or 1
        cluster = join_cluster(args.ray_address, threads, settings.worker_gpus(args.gpus_per_worker))
        workers = args.workers or max(1, cluster.cpus // threads)
    if not args.resume:
        store = create_run(args.out or _default_folder(settings.space), settings)
    try:
        search = Search(store, workers=workers, threads_per_worker=threads, ray_address=args.ray_address,
                        progress=None, gpus_per_worker=args.gpus_per_worker, **trust)
        if new_budget:
            store.write_manifest()
        _run_with_progress(search, quiet=args.json)
    except KeyboardInterrupt:
        if store.discard():
            sys.stderr.write(f"star: interrupted before any evaluation finished; removed {store.path}\n")
        else:
            sys.stderr.write(f"star: interrupted; {len(store.rows)} evaluations are saved in {store.path}; "
                             f"continue with: star search --resume {store.path}\n")
        return 130
    except BaseException:
        store.discard()  # a new run that failed to start leaves no half-made folder (a resumed one is kept)
        raise
    return 0


def _default_folder(space: str) -> str:
    import datetime

    return f"results/{space}-{datetime.datetime.now():%Y%m%d-%H%M%S}"


def _run_with_progress(search: Any, quiet: bool) -> None:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    settings = search.settings
    err = Console(stderr=True)
    columns = (TextColumn("search"), BarColumn(), MofNCompleteColumn(), TextColumn("evaluations"),
               TextColumn("failed {task.fields[failures]}"), TextColumn("HV {task.fields[hv]:.4f}"),
               TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
    with Progress(*columns, console=err, transient=True, disable=quiet) as bar:
        task = bar.add_task("search", total=settings.budget, completed=len(search.store.rows),
                            failures=search.failures, hv=search.evolution.hypervolume())

        def progress(state: dict[str, Any]) -> None:
            bar.update(task, completed=state["done"], failures=state["failures"], hv=state["hypervolume"])

        search.progress = progress
        report = search.run()
    from star.report import write_report

    page = search.store.path / "report.html"
    if search.store.rows:
        write_report(search.store, str(page))
    if quiet:
        _print_json(_front_records(search.store, report.front))
        return
    rung = report.front[0]["rung"] if report.front else 0
    _print_front(search.store, report.front, f"Pareto set of {report.folder} at rung {rung} ({len(report.front)} "
                                             f"genomes; {report.evaluations} evaluations, {report.failures} failed; "
                                             f"first-rung hypervolume {report.hypervolume:.4f})")
    print(f"results: {report.folder}/evaluations.parquet\nreport:  {page}  (open it in a browser)\n"
          f"more:    star pareto {report.folder}; star dashboard {report.folder}; "
          f"star export {report.folder} --rank 1 --format hf -o winner")


def _front_records(store: Any, front: list[dict[str, Any]]) -> list[dict[str, Any]]:
    objectives = store.manifest["settings"]["objectives"]
    records = []
    for row in front:
        record = {"genome_id": row["genome_id"], "layer_types": row["layer_types"].split(","),
                  **{name: row[name] for name in objectives},
                  "genome": [int(g) for g in row["genome"].split(",")], "rung": row["rung"],
                  "fidelity": row["fidelity"],
                  "origin": row["origin"], "params": row["params"], "eval_index": row["eval_index"]}
        records.append(record)
    return records


def _print_front(store: Any, front: list[dict[str, Any]], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    from star.objectives import format_value

    objectives = store.manifest["settings"]["objectives"]
    table = Table(title=title)
    for column in ("genome_id", "layout", *objectives, "fidelity", "origin"):
        table.add_column(column, justify="right" if column in objectives else "left")
    for row in front:
        layout = "".join(layout_letter(k) for k in row["layer_types"].split(","))
        table.add_row(row["genome_id"], layout, *(format_value(o, row[o]) for o in objectives),
                      row["fidelity"] or "static", row["origin"])
    Console(width=None if sys.stdout.isatty() else 160).print(table)


def cmd_pareto(args: argparse.Namespace) -> None:
    from star.errors import StarError
    from star.queries import front_rows, rung_rows
    from star.search import open_run

    store = open_run(args.run)
    if not store.rows:
        raise StarError(f"run {args.run} has no evaluations yet")
    if args.rung is not None and not rung_rows(store.rows, args.rung):
        rungs = sorted({r["rung"] for r in store.rows if r["status"] == "ok"})
        raise StarError(f"--rung {args.rung}: {args.run} has no successful evaluation at that rung "
                        f"(rungs with evaluations: {', '.join(map(str, rungs)) or 'none'})")
    front = front_rows(store, args.rung)
    records = _front_records(store, front)
    if args.format == "json":
        _print_json(records)
    elif args.format == "csv":
        import csv

        writer = csv.DictWriter(sys.stdout, fieldnames=list(records[0]) if records else ["genome_id"])
        writer.writeheader()
        for record in records:
            writer.writerow({k: (",".join(map(str, v)) if isinstance(v, list) else v) for k, v in record.items()})
    else:
        rung = front[0]["rung"] if front else args.rung
        _print_front(store, front, f"Pareto set of {args.run} at rung {rung} ({len(front)} of "
                                   f"{sum(r['rung'] == rung for r in store.rows)} evaluations at that rung, "
                                   f"{len(store.rows)} in all)")


def cmd_profile(args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from star.errors import StarError
    from star.evaluators.predictor import Profile, machine_profile_path, per_phase
    from star.evaluators.profiler import check_options, profile
    from star.search_spaces import calibration_proxies
    from star.validate import check_output_file

    if args.threads is not None and args.threads < 1:
        raise StarError(f"--threads must be >= 1, got {args.threads}")
    check_options(args.device, args.dtype, args.runtime)
    if args.runtime == "executorch":
        from star.executorch import require_executorch

        with _quiet_exporters():
            require_executorch("--runtime executorch")
    if args.out is None:
        target = machine_profile_path(quick=args.quick, runtime=args.runtime)
        target.parent.mkdir(parents=True, exist_ok=True)
        args.out = str(target)
    check_output_file(args.out, "-o")
    columns = (TextColumn("profiling"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
               TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("", total=None)

        def progress(done: int, total: int, what: str) -> None:
            bar.update(task, completed=done, total=total, description=what)

        # ExecuTorch: fewer calibration proxies, as each is lowered first (about 100 s each on 2 cores)
        per_space = (8 if args.quick else 16) if args.runtime == "eager" else (4 if args.quick else 8)
        with _quiet_exporters() if args.runtime == "executorch" else contextlib.nullcontext():
            rows = profile(args.out, calibration_proxies(per_space), args.device, args.threads, args.dtype,
                           args.quick, progress, runtime=args.runtime)
    made = Profile(args.out)
    noise, unsettled = made.machine.get("timing_noise", {}), made.machine.get("unsettled", {})
    print(f"wrote {args.out} ({rows} measurements; {made.measured_on()}; timing noise, median spread of repeated "
          f"whole-model measurements: {per_phase(noise) or 'not measured'}; calibration models never settled (prefill: "
          f"fastest time repeated while the host ran quiet; decode: ratio to the canary repeated): "
          f"{per_phase(unsettled) or 'none measured'})")
    warning = made.noise_warning()
    if warning:
        sys.stderr.write(f"star: warning: {warning}\n")


def cmd_predict(args: argparse.Namespace) -> None:
    import warnings

    from star.evaluators.latency import DEVICES
    from star.objectives import predictor_for

    config = _resolve_config(args)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        predictor = predictor_for(args.profile)
    for warning in caught:
        sys.stderr.write(f"star: warning: {warning.message}\n")
    result = predictor(config, prompt=args.prompt, context=args.context)
    if args.profile in DEVICES:
        device = DEVICES[args.profile]
        source, machine = args.profile, device.to_dict()
        where = f"{device.description}, {machine['kind']}"
        # nothing in a roofline model says how decode times spread: its p95 is a fixed ratio, said so
        p95_basis = f"an assumption: p50 x {device.p95_over_p50:g} (a roofline model cannot know jitter)"
    else:
        profile = predictor.__self__  # predictor_for gives a loaded profile's bound `predict`
        # the calibration's raw measurements (every model's JSON) stay in the profile file
        source = str(profile.path)
        machine = {key: value for key, value in profile.machine.items() if key != "calibration_runs"}
        where = f"{profile.measured_on()}, {machine.get('threads')} threads, {machine.get('dtype')}"
        p95_basis = "measured: each unit's p95/median ratio in the profile"
    out = {"architecture": config.name, "profile": source, "prompt": args.prompt, "context": args.context,
           "prefill_ms": result["ttft_ms"], "prefill_tok_s": result["prefill_tok_s"],
           "decode_ms_per_token": result["decode_ms"], "decode_ms_p95": result["decode_ms_p95"],
           "decode_ms_p95_basis": p95_basis, "peak_memory_bytes": result["peak_memory"], "machine": machine}
    if args.json:
        _print_json(out)
        return
    print(f"{config.name} on {where}:")
    print(f"  time to first token ({args.prompt} tokens): {out['prefill_ms']:,.1f} ms "
          f"({out['prefill_tok_s']:,.0f} tokens/s)")
    print(f"  decode at {args.context} tokens: p50 {out['decode_ms_per_token']:,.2f} ms/token, "
          f"p95 {out['decode_ms_p95']:,.2f} ms ({p95_basis})")
    print(f"  peak memory decoding at {args.context} tokens (weights + cache + working memory): "
          f"{out['peak_memory_bytes'] / 2**20:,.1f} MiB")


def cmd_report(args: argparse.Namespace) -> None:
    from star.errors import StarError
    from star.report import write_report
    from star.search import open_run
    from star.validate import check_output_file

    if not args.out.endswith((".html", ".htm")):
        raise StarError(f"-o {args.out}: expected an .html file name")
    check_output_file(args.out, "-o")
    store = open_run(args.run)
    if not store.rows:
        raise StarError(f"run {args.run} has no evaluations yet; nothing to report")
    size = write_report(store, args.out)
    print(f"wrote {args.out} ({size / 2**20:.1f} MiB; opens offline in any browser)")


def cmd_dashboard(args: argparse.Namespace) -> None:
    import socket

    from star.errors import StarError
    from star.search import open_run, open_study

    store = open_run(args.run)
    if not store.rows:
        raise StarError(f"run {args.run} has no evaluations yet")
    stored = store.manifest["settings"]["storage"]
    if args.storage is not None and args.storage != stored:
        raise StarError(f"--storage {args.storage!r} differs from this run's {stored!r}")
    host = args.host or "127.0.0.1"
    if not 0 < args.port < 65536:
        raise StarError(f"--port must be in 1..65535, got {args.port}")
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host, args.port))
        except (OSError, ValueError, TypeError) as err:  # a host name with a NUL, or an unencodable label
            from star.validate import one_line

            raise StarError(one_line(f"cannot listen on {host}:{args.port}: "
                                     f"{getattr(err, 'strerror', None) or err}")) from None
    # only now: opening it may create or bring study.db up to date
    storage = open_study(store, trust_space=args.trust_space, trust_storage=args.storage is not None).storage_url
    if args.host and host not in ("127.0.0.1", "localhost", "::1"):
        sys.stderr.write(f"star: warning: serving on {host}: other machines can reach this dashboard\n")
    from optuna_dashboard import run_server

    print(f"optuna-dashboard for {args.run}: http://{host}:{args.port}/dashboard/  (Ctrl-C stops it)", flush=True)
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a server stops on SIGTERM at once, whatever it is doing
    run_server(storage, host=host, port=args.port)


COMMANDS = {
    "presets": cmd_presets,
    "describe": cmd_describe,
    "export": cmd_export,
    "sample": cmd_sample,
    "spaces": cmd_spaces,
    "tasks": cmd_tasks,
    "eval": cmd_eval,
    "search": cmd_search,
    "pareto": cmd_pareto,
    "report": cmd_report,
    "profile": cmd_profile,
    "predict": cmd_predict,
    "dashboard": cmd_dashboard,
}

if __name__ == "__main__":
    raise SystemExit(main())
