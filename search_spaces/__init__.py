"""Registry of search spaces.

Add a space by adding one module: any module in this package that defines a module-level `SPACE`
(a `star.genome.SearchSpace` instance) is found automatically and registered under `SPACE.name`.

Users can also name their own space without touching the package:
- "some.module:ATTR" imports `some.module` and takes its attribute ATTR;
- "path/to/file.py:ATTR" loads that file and takes ATTR.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import random
import sys
from pathlib import Path

from star.arch import ArchConfig
from star.errors import StarError
from star.genome import SearchSpace
from star.scaling import LATENCY_PROXY, to_proxy

_SPACES: dict[str, SearchSpace] = {}


def _discover() -> dict[str, SearchSpace]:
    """Import every module of this package once and keep those that define SPACE."""
    if not _SPACES:
        for info in pkgutil.iter_modules(__path__):
            module = importlib.import_module(f"{__name__}.{info.name}")
            space = getattr(module, "SPACE", None)
            if isinstance(space, SearchSpace):
                if space.name in _SPACES:
                    raise StarError(f"two search spaces are named {space.name!r} (second in {module.__name__})")
                _SPACES[space.name] = space
    return _SPACES


def list_spaces() -> list[str]:
    return sorted(_discover())


def is_code(name: str) -> bool:
    """Whether `get_space(name)` would import or execute code of the user's ('module:ATTR',
    'file.py:ATTR') rather than take one of the registered spaces."""
    return name not in _discover() and ":" in name


def get_space(name: str) -> SearchSpace:
    """A registered space by name, or a user's space given as 'module:ATTR' or 'file.py:ATTR'."""
    spaces = _discover()
    if name in spaces:
        return spaces[name]
    if ":" in name:
        return _load_user_space(name)
    raise StarError(f"unknown search space {name!r} (known: {', '.join(sorted(spaces))})")


def _load_user_space(spec: str) -> SearchSpace:
    where, _, attr = spec.rpartition(":")
    if not where or not attr:
        raise StarError(f"search space {spec!r} must look like 'module:ATTR' or 'file.py:ATTR'")
    try:
        module = _load_file(Path(where)) if where.endswith(".py") else importlib.import_module(where)
    except StarError:
        raise
    except Exception as err:  # the user's code may fail in any way; report it on one line
        raise StarError(f"cannot load search space {spec!r}: {type(err).__name__}: {err}") from None
    space = getattr(module, attr, None)
    if not isinstance(space, SearchSpace):
        raise StarError(f"{spec!r}: {attr} is {type(space).__name__}, not a SearchSpace instance")
    return space


def _load_file(path: Path):
    if not path.is_file():
        raise StarError(f"search space file {str(path)!r} does not exist")
    module_name = f"_star_user_space_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses in the user's file look their module up here
    spec.loader.exec_module(module)
    return module


def calibration_proxies(per_space: int) -> list[ArchConfig]:
    """Random genomes of the lfm2 and star spaces at the latency calibration's proxy shape
    (star.scaling.LATENCY_PROXY), `per_space` of each, from a fixed stream of their own: the whole
    models `star profile` calibrates fixed block costs on (evaluators.calibration.block_overheads,
    which takes them as given rather than reaching into the search spaces).

    Random rather than built to separate the kinds: a model that repeats one kind keeps one code
    path hot and runs cheaper per block than the mixed models a search predicts; with eight such
    models in the calibration, decode predictions of random proxies scattered 4.6% (sd) against
    1.7-1.9% with random ones alone."""
    rng = random.Random("star-profile-calibration")
    return [to_proxy(space.decode(space.sample(rng)), **LATENCY_PROXY)
            for space in (get_space("lfm2"), get_space("star")) for _ in range(per_space)]
