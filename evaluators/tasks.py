"""The 50 tasks of the suite: synthetic generators plus real-text language modelling.

Every task writes token sequences in one shared 512-token vocabulary (the proxies' vocabulary):

    0..31    specials (padding, separators, operation and bracket tokens)
    32..81   one task token per task; it opens every row, so a mixture of tasks stays unambiguous
    82..255  174 abstract symbols that the generators give meaning to (keys, values, words, ...)
    256..511 the 256 byte values, for real text

A generator returns an `Example`: the tokens after the task token and the answer spans, i.e. the
positions whose token the model must predict from everything before it.  Only answers are
supervised, and every answer is fully determined by the row and by the fixed "world" (fact tables,
synthetic languages, tool signatures) built from `WORLD_SEED`; a row's other tokens are random.

Scores are in [0, 1]: for `exact` tasks, the share of answer spans whose every token is the argmax
prediction (teacher-forced, which equals greedy decoding for the span); for `bpb` tasks,
1 − bits-per-byte / 8, the share of an 8-bit-per-byte code that the model saves.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from star.errors import StarError

from .corpus import Corpus, TextSource

SUITE_VERSION = "1"
WORLD_SEED = f"star-suite-v{SUITE_VERSION}-world"

PAD, SEP, QUERY, EQ, LPAREN, RPAREN, COMMA, END, PLURAL, MARK, ARROW, COLON, BLANK = range(13)
OP_COPY, OP_REVERSE, OP_SORT, OP_NTH, OP_MAP, OP_FILTER = range(13, 19)
OPEN_A, CLOSE_A, OPEN_B, CLOSE_B = range(19, 23)
TASK_BASE, SYMBOL_BASE, BYTE_BASE, VOCAB_SIZE = 32, 82, 256, 512
NUM_SYMBOLS = BYTE_BASE - SYMBOL_BASE

CATEGORIES = (
    "knowledge_recall", "in_context_recall", "multi_hop", "low_resource_language",
    "instruction_following", "tool_use", "structure", "real_text",
)


def sym(i: int) -> int:
    if not 0 <= i < NUM_SYMBOLS:
        raise ValueError(f"symbol {i} out of range")
    return SYMBOL_BASE + i


def syms(start: int, stop: int) -> list[int]:
    return [sym(i) for i in range(start, stop)]


@dataclass(frozen=True)
class Example:
    tokens: tuple[int, ...]
    spans: tuple[tuple[int, int], ...]  # [start, end) positions in `tokens` that are answers


class Row:
    """Builds an Example: `add` context tokens, `answer` supervised ones (one span per call)."""

    def __init__(self) -> None:
        self.tokens: list[int] = []
        self.spans: list[tuple[int, int]] = []

    def add(self, *tokens: int) -> Row:
        self.tokens.extend(tokens)
        return self

    def answer(self, *tokens: int) -> Row:
        start = len(self.tokens)
        self.tokens.extend(tokens)
        self.spans.append((start, len(self.tokens)))
        return self

    def done(self) -> Example:
        return Example(tuple(self.tokens), tuple(self.spans))


Generator = Callable[[random.Random, "Sources"], Example]


@dataclass(frozen=True)
class Task:
    name: str
    category: str
    description: str
    seq_len: int  # rows are padded to this length (task token included)
    make: Generator
    metric: str = "exact"  # or "bpb"
    weight: float = 1.0  # share of training rows in the mixture; 0 = scored only


# --------------------------------------------------------------------------------------------------
# The fixed world: fact tables, languages, tool signatures (same for every run of this suite version)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Language:
    nouns: tuple[int, ...]
    noun_class: tuple[int, ...]  # 0 or 1 per noun
    verbs: tuple[int, ...]
    determiners: tuple[int, ...]  # index 2·class + plural
    agreement: tuple[int, ...]  # index 2·class + plural
    verb_final: bool  # SOV if True, else SVO


@dataclass(frozen=True)
class World:
    facts_64: dict[int, int]
    facts_256: dict[tuple[int, int], int]
    facts_1024: dict[tuple[int, int], int]
    attributes: dict[tuple[int, int], int]
    facts_wide: dict[int, tuple[int, int]]
    languages: tuple[Language, ...]
    symbol_map: dict[int, int]
    intents: tuple[int, ...]
    functions: tuple[int, ...]
    function_of_intent: dict[int, int]
    swapped_arguments: frozenset[int]


def build_world() -> World:
    rng = random.Random(WORLD_SEED)
    values = syms(64, 128)
    facts_64 = {k: rng.choice(values) for k in syms(0, 64)}
    facts_256 = {(a, b): rng.choice(values) for a in syms(0, 16) for b in syms(16, 32)}
    facts_1024 = {(a, b): rng.choice(values) for a in syms(0, 32) for b in syms(32, 64)}
    attributes = {(e, a): rng.choice(values) for e in syms(0, 48) for a in syms(160, 163)}
    facts_wide = {k: (rng.choice(syms(96, 128)), rng.choice(syms(128, 160))) for k in syms(0, 96)}
    languages = []
    for i in range(5):  # each language owns 32 symbols: 16 nouns, 8 verbs, 4 determiners, 4 agreements
        words = syms(i * 32, i * 32 + 32)
        languages.append(Language(
            nouns=tuple(words[:16]), noun_class=tuple(rng.randrange(2) for _ in range(16)),
            verbs=tuple(words[16:24]), determiners=tuple(words[24:28]), agreement=tuple(words[28:32]),
            verb_final=i in (2, 4),
        ))
    mapped = syms(0, 32)
    shuffled = mapped[:]
    rng.shuffle(shuffled)
    intents, functions = syms(140, 148), syms(148, 156)
    targets = functions[:]
    rng.shuffle(targets)
    return World(
        facts_64=facts_64, facts_256=facts_256, facts_1024=facts_1024, attributes=attributes,
        facts_wide=facts_wide, languages=tuple(languages), symbol_map=dict(zip(mapped, shuffled, strict=True)),
        intents=tuple(intents), functions=tuple(functions),
        function_of_intent=dict(zip(intents, targets, strict=True)),
        swapped_arguments=frozenset(f for f in functions if rng.random() < 0.5),
    )


@dataclass(frozen=True)
class Sources:
    """What generators draw on besides their random stream: the world and the text corpus, with the
    split (train or held-out) that the current stream must read."""

    world: World
    corpus: Corpus
    held_out: bool = False

    def text(self, kind: str) -> TextSource:
        return self.corpus.prose if kind == "prose" else self.corpus.code


# --------------------------------------------------------------------------------------------------
# knowledge recall: facts that only training can teach
# --------------------------------------------------------------------------------------------------


def facts(table: str, pairs: int) -> Generator:
    """A row lists distinct keys of a fixed table, each followed by its value (MAD's memorisation)."""

    def make(rng: random.Random, src: Sources) -> Example:
        facts = getattr(src.world, table)
        row = Row()
        for key in rng.sample(sorted(facts), pairs):
            row.add(*(key if isinstance(key, tuple) else (key,)))
            value = facts[key]
            row.answer(*(value if isinstance(value, tuple) else (value,)))
        return row.done()

    return make


# --------------------------------------------------------------------------------------------------
# in-context recall
# --------------------------------------------------------------------------------------------------


def recall_stream(keys: int, length: int, noise: bool = False) -> Generator:
    """MAD's in-context recall: a row-specific key→value map, pairs drawn from it in random order;
    a value is an answer once its key has appeared before.  With `noise`, runs of noise symbols
    (never keys or values) fall between pairs."""

    def make(rng: random.Random, src: Sources) -> Example:
        ks = rng.sample(syms(0, 16), keys)
        table = {k: rng.choice(syms(16, 32)) for k in ks}
        seen: set[int] = set()
        row = Row()
        while len(row.tokens) + 2 <= length:
            if noise and rng.random() < 0.5:
                run = rng.randint(1, 3)
                if len(row.tokens) + run + 2 > length:
                    break
                row.add(*(rng.choice(syms(32, 48)) for _ in range(run)))
            k = rng.choice(ks)
            row.add(k)
            if k in seen:
                row.answer(table[k])
            else:
                row.add(table[k])
            seen.add(k)
        return row.done()

    return make


def fuzzy_recall(rng: random.Random, src: Sources) -> Example:
    """MAD's fuzzy recall: keys of 1–2 tokens and values of 1–3 tokens, so lookups span tokens."""
    alphabet = rng.sample(syms(0, 48), 14)
    ks = [tuple(alphabet[i:i + n]) for i, n in zip((0, 2, 4, 5, 7), (2, 2, 1, 2, 1), strict=True)]
    table = {k: tuple(rng.choice(syms(48, 80)) for _ in range(rng.randint(1, 3))) for k in ks}
    row, seen = Row(), set()
    while len(row.tokens) + 5 <= 62:
        k = rng.choice(ks)
        row.add(*k)
        if k in seen:
            row.answer(*table[k])
        else:
            row.add(*table[k])
        seen.add(k)
    return row.done()


def mqar(pairs: int, gap: int = 0) -> Generator:
    """Zoology's multi-query associative recall: key–value pairs, `gap` distractor tokens, then every
    key again as a query.  With a long gap and one or two pairs these are the easiest levels of
    recall, but at a distance beyond any short convolution's reach."""

    def make(rng: random.Random, src: Sources) -> Example:
        keys = rng.sample(syms(0, 96), pairs)
        values = [rng.choice(syms(96, 174)) for _ in keys]
        row = Row()
        for k, v in zip(keys, values, strict=True):
            row.add(k, v)
        row.add(*rng.choices(syms(96, 174), k=gap), SEP)
        for i in rng.sample(range(pairs), pairs):
            row.add(keys[i]).answer(values[i])
        return row.done()

    return make


def long_gap_recall(rng: random.Random, src: Sources) -> Example:
    """Eight pairs, 200 tokens of distractors, then the eight queries: recall across a long gap."""
    keys = rng.sample(syms(0, 96), 8)
    values = [rng.choice(syms(96, 174)) for _ in keys]
    row = Row()
    for k, v in zip(keys, values, strict=True):
        row.add(k, v)
    row.add(*rng.choices(syms(96, 174), k=200), SEP)
    for i in rng.sample(range(8), 8):
        row.add(keys[i]).answer(values[i])
    return row.done()


# --------------------------------------------------------------------------------------------------
# multi-hop reasoning
# --------------------------------------------------------------------------------------------------


def hops(k: int, chains: int) -> Generator:
    """Edges of `chains` disjoint chains with k hops, shuffled; each query names a chain's start and
    the answer is the node k edges further."""

    def make(rng: random.Random, src: Sources) -> Example:
        nodes = rng.sample(syms(0, 120), chains * (k + 1))
        paths = [nodes[i * (k + 1):(i + 1) * (k + 1)] for i in range(chains)]
        edges = [(p[j], p[j + 1]) for p in paths for j in range(k)]
        rng.shuffle(edges)
        row = Row()
        for a, b in edges:
            row.add(a, b)
        for p in rng.sample(paths, chains):
            row.add(QUERY, p[0]).answer(p[-1])
        return row.done()

    return make


def variable_chasing(depth: int, chains: int) -> Generator:
    """Straight-line programs `x = 7; y = x; z = y`: what value does the last variable hold?"""

    def make(rng: random.Random, src: Sources) -> Example:
        names = rng.sample(syms(0, 40), chains * depth)
        programs = [names[i * depth:(i + 1) * depth] for i in range(chains)]
        constants = [rng.choice(syms(100, 140)) for _ in programs]
        cursors = [0] * chains
        row = Row()
        while any(c < depth for c in cursors):  # interleave chains, each in order
            i = rng.choice([j for j in range(chains) if cursors[j] < depth])
            c = cursors[i]
            row.add(programs[i][c], EQ, constants[i] if c == 0 else programs[i][c - 1])
            cursors[i] += 1
        for i in rng.sample(range(chains), chains):
            row.add(QUERY, programs[i][-1], EQ).answer(constants[i])
        return row.done()

    return make


def context_then_fact(rng: random.Random, src: Sources) -> Example:
    """One hop in context, one in memory: aliases point to keys of the memorised 64-fact table."""
    aliases = rng.sample(syms(100, 174), 6)
    keys = rng.sample(sorted(src.world.facts_64), 6)
    row = Row()
    for a, k in zip(aliases, keys, strict=True):
        row.add(a, k)
    for i in rng.sample(range(6), 6):
        row.add(QUERY, aliases[i]).answer(src.world.facts_64[keys[i]])
    return row.done()


# --------------------------------------------------------------------------------------------------
# low-resource languages: five synthetic languages with Zipfian nouns, noun classes and agreement
# --------------------------------------------------------------------------------------------------

ZIPF = tuple(1.0 / (rank + 1) for rank in range(16))


def _noun_phrase(lang: Language, rng: random.Random, row: Row, noun: int | None = None,
                 plural: bool | None = None) -> tuple[int, bool]:
    """noun [PLURAL] determiner; the determiner is the answer (class and number decide it)."""
    i = noun if noun is not None else rng.choices(range(16), weights=ZIPF)[0]
    pl = plural if plural is not None else rng.random() < 0.4
    row.add(lang.nouns[i])
    if pl:
        row.add(PLURAL)
    row.answer(lang.determiners[2 * lang.noun_class[i] + pl])
    return i, pl


def _sentence(lang: Language, rng: random.Random, row: Row) -> None:
    subject, plural = _noun_phrase(lang, rng, row)
    verb = rng.randrange(8)
    agreement = lang.agreement[2 * lang.noun_class[subject] + plural]
    if lang.verb_final:
        _noun_phrase(lang, rng, row)
        row.add(lang.verbs[verb]).answer(agreement)
    else:
        row.add(lang.verbs[verb]).answer(agreement)
        _noun_phrase(lang, rng, row)
    row.answer(END)


def language(index: int, length: int = 120) -> Generator:
    """Sentences of one language; answers are determiners, verb agreement and sentence ends."""

    def make(rng: random.Random, src: Sources) -> Example:
        lang, row = src.world.languages[index], Row()
        while len(row.tokens) < length - 12:
            _sentence(lang, rng, row)
        return row.done()

    return make


def _phrase(lang: Language, noun: int, plural: bool) -> list[int]:
    return [lang.nouns[noun], *([PLURAL] if plural else []), lang.determiners[2 * lang.noun_class[noun] + plural]]


def translation(rng: random.Random, src: Sources) -> Example:
    """A language-0 sentence, then its word-for-word translation into rare language 1 (same lemmas by
    index, the target's own classes, agreement and word order): every target token is an answer."""
    source, target = src.world.languages[0], src.world.languages[1]
    row = Row()
    for _ in range(3):
        s, o = rng.choices(range(16), weights=ZIPF, k=2)
        s_pl, o_pl, verb = rng.random() < 0.4, rng.random() < 0.4, rng.randrange(8)
        for lang in (source, target):
            vp = [lang.verbs[verb], lang.agreement[2 * lang.noun_class[s] + s_pl]]
            obj = _phrase(lang, o, o_pl)
            words = _phrase(lang, s, s_pl) + (obj + vp if lang.verb_final else vp + obj)
            if lang is source:
                row.add(*words, SEP)
            else:
                for w in [*words, END]:
                    row.answer(w)
    return row.done()


# --------------------------------------------------------------------------------------------------
# instruction following
# --------------------------------------------------------------------------------------------------


def _apply(op: int, items: list[int], world: World) -> list[int]:
    if op == OP_COPY:
        return items
    if op == OP_REVERSE:
        return items[::-1]
    if op == OP_SORT:
        return sorted(items)
    if op == OP_MAP:
        return [world.symbol_map[t] for t in items]
    raise ValueError(op)


def instruction(op: int | None, n: int) -> Generator:
    """An operation token, a list, ARROW, then the list transformed by the operation (one answer).
    With op None the operation is drawn per row, so only the instruction token says what to do."""

    def make(rng: random.Random, src: Sources) -> Example:
        chosen = op if op is not None else rng.choice((OP_COPY, OP_REVERSE, OP_SORT, OP_NTH, OP_MAP))
        items = [rng.choice(syms(0, 32)) for _ in range(n)]
        row = Row().add(chosen)
        if chosen == OP_NTH:
            k = rng.randrange(n)
            row.add(sym(100 + k), *items, ARROW).answer(items[k])
        else:
            row.add(*items, ARROW).answer(*_apply(chosen, items, src.world))
        return row.done()

    return make


def filter_below(rng: random.Random, src: Sources) -> Example:
    """Keep, in order, the items below a threshold symbol; END closes the (variable-length) answer."""
    threshold = rng.randrange(8, 24)
    items = [rng.randrange(32) for _ in range(10)]
    kept = [sym(i) for i in items if i < threshold]
    return Row().add(OP_FILTER, sym(threshold), *(sym(i) for i in items), ARROW).answer(*kept, END).done()


def selective_copy(rng: random.Random, src: Sources) -> Example:
    """MAD's selective copying: eight data tokens scattered among blanks; copy them in order."""
    data = [rng.choice(syms(0, 32)) for _ in range(8)]
    where = sorted(rng.sample(range(40), 8))
    body = [BLANK] * 40
    for pos, token in zip(where, data, strict=True):
        body[pos] = token
    return Row().add(*body, ARROW).answer(*data).done()


# --------------------------------------------------------------------------------------------------
# tool use: emit an exact call `fn ( a , b )`
# --------------------------------------------------------------------------------------------------


def _call(world: World, fn: int, a: int, b: int) -> list[int]:
    first, second = (b, a) if fn in world.swapped_arguments else (a, b)
    return [fn, LPAREN, first, COMMA, second, RPAREN]


def tool_call(variant: str) -> Generator:
    """`single`: intent + two arguments → the intent's function called on them (in its signature's
    argument order: `reorder` only uses functions whose signature swaps them).  `lookup`: arguments
    are named and must be looked up in the row.  `select`: the row lists which function serves
    which intent.  `nested`: one call inside another."""

    def make(rng: random.Random, src: Sources) -> Example:
        w = src.world
        a, b = rng.sample(syms(0, 64), 2)
        row = Row()
        if variant in ("single", "reorder"):
            pool = [i for i in w.intents if (w.function_of_intent[i] in w.swapped_arguments) == (variant == "reorder")]
            intent = rng.choice(pool)
            row.add(intent, a, b, ARROW).answer(*_call(w, w.function_of_intent[intent], a, b))
        elif variant == "lookup":
            names = rng.sample(syms(64, 80), 4)
            bound = rng.sample(syms(0, 64), 4)
            for n, v in zip(names, bound, strict=True):
                row.add(n, COLON, v)
            i, j = rng.sample(range(4), 2)
            intent = rng.choice(w.intents)
            row.add(SEP, intent, names[i], names[j], ARROW).answer(
                *_call(w, w.function_of_intent[intent], bound[i], bound[j]))
        elif variant == "select":
            intents = rng.sample(w.intents, 4)
            functions = rng.sample(w.functions, 4)
            for f, i in zip(functions, intents, strict=True):
                row.add(f, COLON, i)
            k = rng.randrange(4)
            row.add(SEP, intents[k], a, b, ARROW).answer(functions[k], LPAREN, a, COMMA, b, RPAREN)
        else:  # nested: outer(a, inner(b))
            outer, inner = rng.sample(w.intents, 2)
            f, g = w.function_of_intent[outer], w.function_of_intent[inner]
            row.add(outer, inner, a, b, ARROW).answer(f, LPAREN, a, COMMA, g, LPAREN, b, RPAREN, RPAREN)
        return row.done()

    return make


# --------------------------------------------------------------------------------------------------
# structure: counting, majority, brackets, long-range copy, de-duplication
# --------------------------------------------------------------------------------------------------


def counting(rng: random.Random, src: Sources) -> Example:
    items = [rng.choice(syms(0, 8)) for _ in range(40)]
    target = rng.choice(syms(0, 8))
    return Row().add(*items, QUERY, target).answer(sym(100 + items.count(target))).done()


def majority(rng: random.Random, src: Sources) -> Example:
    """48 draws from four candidates with one clear winner: which was most frequent?"""
    candidates = rng.sample(syms(0, 32), 4)
    while True:
        items = [rng.choice(candidates) for _ in range(48)]
        counts = sorted((items.count(c), c) for c in candidates)
        if counts[-1][0] > counts[-2][0]:
            return Row().add(*items, QUERY).answer(counts[-1][1]).done()


def brackets(rng: random.Random, src: Sources) -> Example:
    """An unfinished sequence over two bracket types (with filler symbols); answer: the closing
    brackets that balance it, then END."""
    stack: list[int] = []
    row = Row()
    for _ in range(36):
        r = rng.random()
        if stack and r < 0.35:
            row.add(CLOSE_A if stack.pop() == OPEN_A else CLOSE_B)
        elif r < 0.75 and len(stack) < 8:
            stack.append(rng.choice((OPEN_A, OPEN_B)))
            row.add(stack[-1])
        else:
            row.add(rng.choice(syms(0, 16)))
    if not stack:
        stack.append(OPEN_A)
        row.add(OPEN_A)
    closing = [CLOSE_A if t == OPEN_A else CLOSE_B for t in reversed(stack)]
    return row.add(ARROW).answer(*closing, END).done()


def long_copy(rng: random.Random, src: Sources) -> Example:
    """A marked 8-token segment, 200 tokens of other text, the mark again: repeat the segment."""
    segment = rng.choices(syms(0, 32), k=8)
    filler = rng.choices(syms(32, 174), k=200)
    return Row().add(MARK, *segment, *filler, MARK).answer(*segment).done()


def dedupe(rng: random.Random, src: Sources) -> Example:
    """16 tokens from a small alphabet: list the distinct ones in order of first appearance, then END."""
    items = [rng.choice(syms(0, 10)) for _ in range(16)]
    unique = list(dict.fromkeys(items))
    return Row().add(*items, ARROW).answer(*unique, END).done()


# --------------------------------------------------------------------------------------------------
# real text, byte level
# --------------------------------------------------------------------------------------------------


def _window(rng: random.Random, source: TextSource, held_out: bool, size: int) -> bytes:
    docs = source.held_out if held_out else source.train
    weights = [len(d) for d in docs]
    doc = rng.choices(docs, weights=weights)[0]
    if len(doc) <= size:
        return doc
    start = rng.randrange(len(doc) - size)
    return doc[start:start + size]


def text_lm(kind: str, first_scored: int = 1) -> Generator:
    """A 255-byte window of held-out text; every byte from `first_scored` on is an answer."""

    def make(rng: random.Random, src: Sources) -> Example:
        window = _window(rng, src.text(kind), src.held_out, 255)
        row = Row()
        for i, byte in enumerate(window):
            if i >= first_scored:
                row.answer(BYTE_BASE + byte)
            else:
                row.add(BYTE_BASE + byte)
        return row.done()

    return make


def text_repeat(rng: random.Random, src: Sources) -> Example:
    """120 bytes of prose, then the same bytes again: each repeated byte is an answer."""
    window = [BYTE_BASE + b for b in _window(rng, src.text("prose"), src.held_out, 120)]
    row = Row().add(*window, SEP)
    for t in window:
        row.answer(t)
    return row.done()


# --------------------------------------------------------------------------------------------------
# The suite
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Suite:
    tasks: tuple[Task, ...]
    sources: Sources
    index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "index", {t.name: i for i, t in enumerate(self.tasks)})

    def task_token(self, name: str) -> int:
        return TASK_BASE + self.index[name]

    def get(self, name: str) -> Task:
        if name not in self.index:
            raise StarError(f"unknown task {name!r}; `star tasks` lists the {len(self.tasks)} tasks")
        return self.tasks[self.index[name]]


def _task_table() -> list[Task]:
    k, i, m, lo, ins, tool, st, txt = CATEGORIES
    return [
        Task("facts-64", k, "recall the values of a fixed 64-entry key→value table", 64, facts("facts_64", 24)),
        Task("facts-256", k, "recall a fixed 256-entry table with two-token keys", 64, facts("facts_256", 16)),
        Task("facts-1024", k, "recall a fixed 1024-entry table with two-token keys", 64, facts("facts_1024", 16)),
        Task("entity-attributes", k, "recall one of three attributes of 48 fixed entities", 64,
             facts("attributes", 16)),
        Task("facts-two-token-values", k, "recall two-token values of a fixed 96-entry table", 64,
             facts("facts_wide", 16)),
        Task("mqar-4", i, "multi-query associative recall, 4 key–value pairs", 32, mqar(4)),
        Task("mqar-8", i, "multi-query associative recall, 8 pairs", 64, mqar(8)),
        Task("mqar-16", i, "multi-query associative recall, 16 pairs", 128, mqar(16)),
        Task("recall-far-1", i, "one key–value pair, 100 distractor tokens, then its key: recall the value", 128,
             mqar(1, gap=100)),
        Task("mqar-32", i, "multi-query associative recall, 32 pairs", 256, mqar(32)),
        Task("recall-far-2", i, "two key–value pairs, 200 distractor tokens, then both keys", 256,
             mqar(2, gap=200)),
        Task("recall-stream", i, "in-context recall over a stream of pairs from a per-row map of 8 keys", 64,
             recall_stream(8, 62)),
        Task("recall-fuzzy", i, "in-context recall with 1–2-token keys and 1–3-token values", 64, fuzzy_recall),
        Task("recall-noisy", i, "in-context recall with runs of noise tokens between pairs", 128,
             recall_stream(8, 126, noise=True)),
        Task("recall-long-gap", i, "8 pairs, 200 distractor tokens, then the 8 queries", 256, long_gap_recall),
        Task("hop-2", m, "follow a chain of 2 look-ups among shuffled edges", 64, hops(2, 6)),
        Task("hop-3", m, "follow a chain of 3 look-ups among shuffled edges", 64, hops(3, 6)),
        Task("hop-4", m, "follow a chain of 4 look-ups among shuffled edges", 128, hops(4, 8)),
        Task("variable-chasing-2", m, "value of a variable after 2 assignments (x = 7; y = x)", 64,
             variable_chasing(2, 4)),
        Task("variable-chasing-3", m, "value of a variable after 3 assignments", 64, variable_chasing(3, 4)),
        Task("context-then-fact", m, "resolve an alias in context, then recall the memorised fact", 32,
             context_then_fact),
        Task("language-common", lo, "agreement in the common synthetic language (the mixture's majority)", 128,
             language(0), weight=2.0),
        Task("language-rare-1", lo, "agreement in rare language 1 (SVO, own vocabulary and classes)", 128,
             language(1), weight=0.25),
        Task("language-rare-2", lo, "agreement in rare language 2 (verb-final)", 128, language(2), weight=0.25),
        Task("language-rare-3", lo, "agreement in rare language 3 (SVO)", 128, language(3), weight=0.25),
        Task("language-rare-4", lo, "agreement in rare language 4 (verb-final)", 128, language(4), weight=0.25),
        Task("translate-to-rare", lo, "word-for-word translation from the common language into rare language 1",
             128, translation, weight=0.5),
        Task("copy", ins, "follow COPY: repeat an 8-item list", 32, instruction(OP_COPY, 8)),
        Task("reverse", ins, "follow REVERSE: an 8-item list backwards", 32, instruction(OP_REVERSE, 8)),
        Task("sort", ins, "follow SORT: an 8-item list in symbol order", 32, instruction(OP_SORT, 8)),
        Task("select-nth", ins, "follow NTH k: the k-th item of an 8-item list", 32, instruction(OP_NTH, 8)),
        Task("map", ins, "follow MAP: apply a fixed symbol substitution to an 8-item list", 32,
             instruction(OP_MAP, 8)),
        Task("filter", ins, "follow FILTER t: keep the items below t, in order", 32, filter_below),
        Task("mixed-instructions", ins, "copy/reverse/sort/nth/map chosen per row by the instruction token", 32,
             instruction(None, 12)),
        Task("selective-copy", ins, "copy the 8 data tokens scattered among blanks, in order", 64, selective_copy),
        Task("tool-call", tool, "call the intent's function with the two given arguments", 32, tool_call("single")),
        Task("tool-argument-order", tool, "as tool-call, for functions whose signature swaps the arguments", 32,
             tool_call("reorder")),
        Task("tool-lookup", tool, "call with argument values looked up by name in the context", 32,
             tool_call("lookup")),
        Task("tool-select", tool, "pick the function the context assigns to the intent, then call it", 32,
             tool_call("select")),
        Task("tool-nested", tool, "emit a call nested inside another call with balanced brackets", 32,
             tool_call("nested")),
        Task("counting", st, "how often does a symbol occur among 40?", 64, counting),
        Task("majority", st, "most frequent of four symbols over 48 draws", 64, majority),
        Task("brackets", st, "close an unfinished two-type bracket sequence", 64, brackets),
        Task("long-copy", st, "repeat an 8-token segment marked 200 tokens earlier", 256, long_copy),
        Task("dedupe", st, "distinct symbols in order of first appearance", 32, dedupe),
        Task("text-prose", txt, "bits per byte on held-out English prose (Python's help topics)", 256,
             text_lm("prose"), metric="bpb", weight=2.0),
        Task("text-code", txt, "bits per byte on held-out Python standard-library source", 256, text_lm("code"),
             metric="bpb", weight=2.0),
        Task("text-prose-late", txt, "bits per byte on the second half of each prose window (long context)", 256,
             text_lm("prose", 128), metric="bpb", weight=0.0),
        Task("text-code-late", txt, "bits per byte on the second half of each code window", 256,
             text_lm("code", 128), metric="bpb", weight=0.0),
        Task("text-repeat", txt, "repeat a 120-byte prose passage byte for byte", 256, text_repeat),
    ]


_WORLD: World | None = None


def build_suite(corpus: Corpus) -> Suite:
    global _WORLD
    if _WORLD is None:
        _WORLD = build_world()
    tasks = tuple(_task_table())
    assert len(tasks) == 50 and len({t.name for t in tasks}) == 50
    return Suite(tasks, Sources(_WORLD, corpus))


def select_tasks(spec: str) -> list[str]:
    """Task names from a comma-separated list of task and category names (a category stands for all
    of its tasks), in suite order, so that `--tasks in_context_recall,text-code` means what it says."""
    table = _task_table()
    wanted = [part for part in spec.replace(" ", "").split(",") if part]
    for part in wanted:
        if part not in CATEGORIES and all(t.name != part for t in table):
            raise StarError(f"unknown task or category {part!r}; `star tasks` lists the {len(table)} tasks "
                            f"and their categories")
    return [t.name for t in table if t.name in wanted or t.category in wanted]


def task_list() -> list[dict[str, str]]:
    """Name, category, description and metric of every task, without building any corpus."""
    return [{"name": t.name, "category": t.category, "metric": t.metric, "seq_len": t.seq_len,
             "description": t.description} for t in _task_table()]
