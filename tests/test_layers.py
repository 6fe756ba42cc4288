"""Import direction between the project's layers, and no import cycles.

The layers, lowest first: core (the architecture, its operators and model, genomes, presets, export and small
helpers) → search spaces and evaluators (what a search explores and how a candidate is scored) → search (the
loop, its store and its objectives) → front ends (the command line and the report). A lower layer never
imports a higher one, not even inside a function: a lower layer that reaches up can no longer be used or
tested without everything above it, and the next change up there breaks it. A cycle between two modules
ties them together the same way. Every module under star/ has to be placed in LAYERS, so a new module is
placed on purpose rather than by accident.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

CORE, SCORING, SEARCH, FRONT = 0, 1, 2, 3
LAYER_NAMES = {CORE: "core", SCORING: "search spaces and evaluators", SEARCH: "search", FRONT: "front end"}

# The one table of layers. A key ending in ".*" places a whole package (the package and every module in
# it): a new search space or evaluator joins its layer by being put in its folder.
LAYERS: dict[str, int] = {
    "star": CORE,
    "star.arch": CORE,
    "star.operators": CORE,
    "star.model": CORE,
    "star.genome": CORE,
    "star.scaling": CORE,
    "star.presets": CORE,
    "star.export": CORE,
    "star.executorch": CORE,
    "star.errors": CORE,
    "star.validate": CORE,
    "star.machine": CORE,
    "star.stats": CORE,
    "star.search_spaces.*": SCORING,
    "star.evaluators.*": SCORING,
    "star.objectives": SEARCH,
    "star.evolution": SEARCH,
    "star.executor": SEARCH,
    "star.store": SEARCH,
    "star.search": SEARCH,
    "star.pareto": SEARCH,
    "star.queries": SEARCH,
    "star.cli": FRONT,
    "star.report": FRONT,
}

# Folders of the source tree and the package each is installed as (see pyproject.toml's package-dir).
PACKAGE_DIRS = {"star": "star", "evaluators": "star.evaluators", "search_spaces": "star.search_spaces"}


def layer_of(module: str, layers: Mapping[str, int] = LAYERS) -> int | None:
    """The layer `module` is placed in, or None when the table does not place it."""
    if module in layers:
        return layers[module]
    for key, layer in layers.items():
        if key.endswith(".*") and (module == key[:-2] or module.startswith(key[:-1])):
            return layer
    return None


def source_modules(root: Path = REPO) -> dict[str, tuple[str, bool]]:
    """Every module of the source tree by its installed name: (source text, whether it is a package)."""
    modules: dict[str, tuple[str, bool]] = {}
    for folder, package in PACKAGE_DIRS.items():
        for path in sorted((root / folder).rglob("*.py")):
            parts = [package, *path.relative_to(root / folder).with_suffix("").parts]
            is_package = parts[-1] == "__init__"
            if is_package:
                parts.pop()
            modules[".".join(parts)] = (path.read_text(), is_package)
    return modules


def _installed_name(name: str) -> str:
    """`evaluators.x` and `search_spaces.x` are the same modules as `star.evaluators.x` and
    `star.search_spaces.x` (the folders are installed under star)."""
    top, _, rest = name.partition(".")
    if top in PACKAGE_DIRS and top != "star":
        return PACKAGE_DIRS[top] + ("." + rest if rest else "")
    return name


def _known(name: str, known: Iterable[str]) -> str | None:
    """The module of ours an imported name lands in (the nearest enclosing one), or None for other code."""
    known = set(known)
    name = _installed_name(name)
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str, source: str, is_package: bool, known: Iterable[str]) -> set[str]:
    """The modules of ours that `module` imports anywhere in its source, inside functions too, with
    relative imports resolved."""
    known = set(known)
    found: set[str] = set()
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - (node.level - 1)])
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            # `from pkg import name` imports the module pkg.name when there is one, else a name from pkg.
            names = [
                f"{base}.{alias.name}" if _installed_name(f"{base}.{alias.name}") in known else base
                for alias in node.names
            ]
        for name in names:
            target = _known(name, known)
            if target is not None and target != module:
                found.add(target)
    return found


def import_graph(modules: Mapping[str, tuple[str, bool]]) -> dict[str, set[str]]:
    """Module → the modules of ours it imports."""
    return {name: imports_of(name, source, is_package, modules) for name, (source, is_package) in modules.items()}


def unplaced(modules: Iterable[str], layers: Mapping[str, int] = LAYERS) -> list[str]:
    """Modules the layer table does not place."""
    return sorted(module for module in modules if layer_of(module, layers) is None)


def stale_entries(modules: Iterable[str], layers: Mapping[str, int] = LAYERS) -> list[str]:
    """Table entries that place no module (a module renamed or removed), so the table stays true."""
    modules = set(modules)
    return sorted(
        key for key in layers if not any(layer_of(module, {key: layers[key]}) is not None for module in modules)
    )


def upward_imports(graph: Mapping[str, set[str]], layer: Callable[[str], int | None] = layer_of) -> list[str]:
    """One line for each import of a module in a higher layer than the importer's."""
    found = []
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            low, high = layer(module), layer(target)
            if low is not None and high is not None and high > low:
                found.append(
                    f"{module} ({LAYER_NAMES.get(low, low)}) imports {target} ({LAYER_NAMES.get(high, high)})"
                )
    return found


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """The groups of modules that import each other, directly or through others (Tarjan's strongly
    connected components with more than one module), each sorted."""
    index: dict[str, int] = {}
    lowlink: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = lowlink[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in sorted(graph.get(module, ())):
            if target not in index:
                visit(target)
                lowlink[module] = min(lowlink[module], lowlink[target])
            elif target in on_stack:
                lowlink[module] = min(lowlink[module], index[target])
        if lowlink[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return sorted(groups)


def describe_cycle(group: list[str], graph: Mapping[str, set[str]]) -> str:
    """A cycle as the imports that make it, so the message says which import to move."""
    members = set(group)
    edges = [f"{module} -> {target}" for module in group for target in sorted(graph.get(module, set()) & members)]
    return "; ".join(edges)


def test_every_module_is_placed_in_a_layer() -> None:
    modules = source_modules()
    missing = unplaced(modules)
    assert not missing, f"place these modules in LAYERS in {Path(__file__).name}: {', '.join(missing)}"
    stale = stale_entries(modules)
    assert not stale, f"LAYERS places modules that do not exist (remove or rename): {', '.join(stale)}"


def test_no_module_imports_a_higher_layer() -> None:
    upward = upward_imports(import_graph(source_modules()))
    assert not upward, "a lower layer imports a higher one:\n" + "\n".join(upward)


def test_no_import_cycles() -> None:
    graph = import_graph(source_modules())
    found = cycles(graph)
    assert not found, "modules import each other in a cycle:\n" + "\n".join(describe_cycle(g, graph) for g in found)


def test_the_checker_reports_an_upward_import_a_cycle_and_an_unplaced_module() -> None:
    """The checks above pass on today's tree; this shows they would fail: a synthetic tree with an upward
    import hidden in a function, a cycle made through a relative import and an `evaluators.` name, and a
    module the table does not place."""
    modules = {
        "star": ("", True),
        "star.arch": ("def f():\n    from star.search import run\n", False),
        "star.search": ("import numpy\nfrom star import arch\n", False),
        "star.evaluators": ("", True),
        "star.evaluators.a": ("from .b import thing\n", False),
        "star.evaluators.b": ("def g():\n    import evaluators.a\n", False),
        "star.newthing": ("", False),
    }
    layers = {"star": CORE, "star.arch": CORE, "star.search": SEARCH, "star.evaluators.*": SCORING}
    graph = import_graph(modules)
    assert graph["star.arch"] == {"star.search"}
    assert graph["star.search"] == {"star.arch"}
    assert graph["star.evaluators.a"] == {"star.evaluators.b"}
    assert graph["star.evaluators.b"] == {"star.evaluators.a"}

    upward = upward_imports(graph, lambda module: layer_of(module, layers))
    assert upward == ["star.arch (core) imports star.search (search)"]
    assert cycles(graph) == [["star.arch", "star.search"], ["star.evaluators.a", "star.evaluators.b"]]
    assert describe_cycle(["star.evaluators.a", "star.evaluators.b"], graph) == (
        "star.evaluators.a -> star.evaluators.b; star.evaluators.b -> star.evaluators.a"
    )
    assert unplaced(modules, layers) == ["star.newthing"]
    assert stale_entries(modules, {**layers, "star.gone": CORE}) == ["star.gone"]


def test_the_report_reads_a_run_without_the_search_loop() -> None:
    """The report reads a finished run through the run store's queries (star.queries), so it can be built
    and changed without the search loop and what the loop imports."""
    assert "star.search" not in import_graph(source_modules())["star.report"]
