"""The `star` command line.

Only argparse is imported at start-up: torch, transformers and ray load inside the command that
needs them, so `star --help` stays instant.  Bad input ends in one line, `star: error: ...`, and
exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

EXIT_BAD_INPUT = 2


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
    p.add_argument("--context", type=int, default=4096, help="context length for cache and FLOPs (default 4096)")
    p.add_argument("--cache-dtype-bytes", type=int, default=2, choices=(1, 2, 4),
                   help="bytes per cached value (default 2: bf16/fp16)")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser("export", help="write a transformers (hf) or native model folder")
    _add_source(p)
    p.add_argument("--format", required=True, choices=("hf", "native"), help="hf: transformers config; native: ours")
    p.add_argument("-o", "--out", required=True, help="output folder")
    p.add_argument("--weights", action="store_true", help="also write model.safetensors (seeded random init)")
    p.add_argument("--weights-from", help="native safetensors file (or folder) whose weights to export")
    p.add_argument("--seed", type=int, default=0, help="seed of the random initialisation (default 0)")
    p.add_argument("--force", action="store_true", help="overwrite an existing config.json")

    p = sub.add_parser("sample", help="print random genomes of a search space")
    p.add_argument("--space", default="lfm2", help="search space (default: lfm2)")
    p.add_argument("-n", type=int, default=1, help="how many (default 1)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser("spaces", help="list the search spaces")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


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
    try:
        return handler(args) or 0
    except StarError as err:
        sys.stderr.write(f"star: error: {err}\n")
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        sys.stderr.write("star: interrupted\n")
        return 130


# --------------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------------


def _resolve_config(args: argparse.Namespace) -> Any:
    from star.errors import StarError

    if args.preset:
        from star.presets import get_preset

        return get_preset(args.preset)
    if args.config:
        from star.export import load_config

        return load_config(args.config)
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
    table.add_row("layout", " ".join(_short(k) for k in info["layer_types"]))
    Console().print(table)


def _short(kind: str) -> str:
    return {"short_conv": "C", "attention": "A", "long_conv": "L", "recurrence": "R", "identity": "-"}.get(kind, "?")


def cmd_export(args: argparse.Namespace) -> None:
    from star.export import export

    config = _resolve_config(args)
    written = export(config, args.out, args.format, weights=args.weights, seed=args.seed,
                     weights_from=args.weights_from, force=args.force)
    for path in written:
        print(path)


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
        layout = " ".join(_short(k) for k in row["layer_types"])
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


COMMANDS = {
    "presets": cmd_presets,
    "describe": cmd_describe,
    "export": cmd_export,
    "sample": cmd_sample,
    "spaces": cmd_spaces,
}

if __name__ == "__main__":
    raise SystemExit(main())
