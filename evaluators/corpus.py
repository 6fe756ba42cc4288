"""Real text for the suite's language-modelling tasks, from files every Python install carries.

Prose is the English of the interpreter's own help topics (`pydoc_data.topics`, the text behind
`help('if')`); code is a fixed list of pure-Python standard-library modules.  Nothing is downloaded.
Documents are split into training and held-out sets by a stable hash of their name, so a held-out
document's text never reaches the trainer.  `--corpus PATH` swaps in the user's own text: a UTF-8
file, a folder of `.txt`/`.md`/`.py` files, or a Parquet file with a `text` column.
"""

from __future__ import annotations

import hashlib
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from star.errors import StarError
from star.validate import check_regular_file, read_regular_file

CODE_MODULES = (
    "argparse.py", "textwrap.py", "fractions.py", "difflib.py", "heapq.py", "bisect.py", "calendar.py",
    "shlex.py", "string.py", "statistics.py", "dataclasses.py", "functools.py", "json/decoder.py",
    "json/encoder.py", "csv.py", "configparser.py", "pprint.py", "random.py", "contextlib.py", "copy.py",
    "fnmatch.py", "glob.py", "gettext.py", "operator.py", "queue.py", "sched.py", "tokenize.py", "uuid.py",
)
TEXT_SUFFIXES = (".txt", ".md", ".rst", ".py")
HELD_OUT_PERCENT = 12
MIN_DOCUMENT_BYTES = 300
# The most text a corpus may hold: the largest fidelity trains on 32 M tokens (bytes), so more is never
# read; the limit keeps a wrong path (a disk image, /dev/zero) from filling memory before an error.
MAX_CORPUS_BYTES = 2**30


@dataclass(frozen=True)
class TextSource:
    """Training and held-out documents (as bytes) of one kind of text."""

    name: str
    train: tuple[bytes, ...]
    held_out: tuple[bytes, ...]

    def digest(self) -> str:
        h = hashlib.sha256()
        for doc in self.train + self.held_out:
            h.update(hashlib.sha256(doc).digest())
        return h.hexdigest()[:12]


@dataclass(frozen=True)
class Corpus:
    prose: TextSource
    code: TextSource

    def digest(self) -> str:
        return f"{self.prose.name}:{self.prose.digest()}+{self.code.name}:{self.code.digest()}"


def _split(name: str, documents: dict[str, bytes]) -> TextSource:
    """Held-out documents are chosen by name hash; at least one document lands on each side."""
    docs = {k: v for k, v in sorted(documents.items()) if len(v) >= MIN_DOCUMENT_BYTES}
    if not docs:
        raise StarError(f"corpus {name}: no document has at least {MIN_DOCUMENT_BYTES} bytes of text")
    held = {k for k in docs if int(hashlib.sha256(k.encode()).hexdigest(), 16) % 100 < HELD_OUT_PERCENT}
    if not held or len(held) == len(docs):
        if len(docs) == 1:  # one document: hold out its tail
            (text,) = docs.values()
            cut = len(text) * (100 - HELD_OUT_PERCENT) // 100
            return TextSource(name, (text[:cut],), (text[cut:],))
        held = {sorted(docs)[-1]} if not held else set(sorted(held)[1:])
    return TextSource(name, tuple(v for k, v in docs.items() if k not in held),
                      tuple(v for k, v in docs.items() if k in held))


def bundled_corpus() -> Corpus:
    from pydoc_data.topics import topics

    prose = _split("pydoc-topics", {k: v.encode("utf-8") for k, v in topics.items()})
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    code_docs = {}
    for module in CODE_MODULES:
        path = stdlib / module
        if path.is_file():
            code_docs[module] = path.read_bytes()
    code = _split("stdlib-source", code_docs)
    return Corpus(prose, code)


def user_corpus(path: str) -> Corpus:
    """The user's text for every real-text task (prose and code tasks then read the same text)."""
    p = Path(path)
    if not p.exists():
        raise StarError(f"corpus {path}: no such file or folder")
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in TEXT_SUFFIXES)
        if not files:
            raise StarError(f"corpus {path}: the folder has no {'/'.join(TEXT_SUFFIXES)} files")
        documents, total = {}, 0
        for f in files:
            documents[str(f.relative_to(p))] = read_regular_file(f, "corpus file", MAX_CORPUS_BYTES - total)
            total += len(documents[str(f.relative_to(p))])
    elif p.suffix.lower() == ".parquet":
        check_regular_file(p, "corpus", MAX_CORPUS_BYTES)
        documents = _parquet_documents(p)
    else:
        documents = _chunks(p.name, read_regular_file(p, "corpus", MAX_CORPUS_BYTES))
    if sum(len(d) for d in documents.values()) < MIN_DOCUMENT_BYTES:
        raise StarError(f"corpus {path}: empty or too short (needs at least {MIN_DOCUMENT_BYTES} bytes of text)")
    source = _split(f"user:{p.name}", documents)
    return Corpus(source, source)


def _chunks(name: str, text: bytes, size: int = 16384) -> dict[str, bytes]:
    """A single file becomes 16 KB documents so that held-out text comes from throughout it."""
    return {f"{name}#{i:06d}": text[i:i + size] for i in range(0, len(text), size)}


def _parquet_documents(path: Path) -> dict[str, bytes]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise StarError(f"corpus {path}: not a readable Parquet file ({exc.__class__.__name__})") from None
    if "text" not in table.column_names:
        raise StarError(f"corpus {path}: Parquet file has no 'text' column (columns: {', '.join(table.column_names)})")
    rows = [str(t).encode("utf-8") for t in table.column("text").to_pylist() if t is not None]
    return _chunks(path.name, b"\n\n".join(rows))
