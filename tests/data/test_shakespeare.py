"""Shakespeare text: Markdown cleaning, the fixed play-level split, and the genre task."""

from __future__ import annotations

import collections

import pytest

from prunekit.data import load_dataset
from prunekit.data import shakespeare as sh
from prunekit.errors import PrunekitError

SNIPPET = """# Macbeth

## ACT I

### SCENE II. A camp near Forres.

_Alarum within. Enter DUNCAN, with Attendants,
meeting a bleeding Sergeant_

**DUNCAN**  
What bloody man is that? He can report,  
_\\[Aside]_ The newest state.

**First Witch**  
Show'd like a rebel's whore\u2014but all's too weak:

_Exit Sergeant_

Who comes here?
"""


def test_parse_play_drops_markup_keeps_speakers_and_lines():
    text, speeches = sh.parse_play(SNIPPET)
    assert text.splitlines()[:6] == ["Macbeth", "", "ACT I", "", "SCENE II. A camp near Forres.", ""]
    assert "Alarum within. Enter DUNCAN, with Attendants,\nmeeting a bleeding Sergeant" in text
    assert "DUNCAN:\nWhat bloody man is that? He can report,\n[Aside] The newest state." in text
    assert "First Witch:\nShow'd like a rebel's whore--but all's too weak:" in text
    assert not any(c in text for c in "#*_\\") and text.isascii()
    assert all(not line.endswith(" ") for line in text.splitlines())
    # spoken lines only: no speaker names, no stage directions; the line after a direction continues the speech
    assert speeches == [["What bloody man is that? He can report,", "The newest state."],
                        ["Show'd like a rebel's whore--but all's too weak:", "Who comes here?"]]


def test_play_split_is_fixed_and_disjoint():
    split = sh.play_split()
    names = {k: [p.name for p in v] for k, v in split.items()}
    assert names["val"] == list(sh.VAL_PLAYS) and names["test"] == list(sh.TEST_PLAYS)
    assert len(names["train"]) == 32
    sets = [set(v) for v in names.values()]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert len(sets[0] | sets[1] | sets[2]) == 38
    # validation and test both cover every merged genre
    for part in ("val", "test"):
        assert sorted(p.genre for p in split[part]) == list(sh.GENRES)


def test_shakespeare_text_dataset():
    d = load_dataset("shakespeare")
    assert d.info.split_sizes == {"train": 32, "val": 3, "test": 3}
    assert d.test.names == list(sh.TEST_PLAYS)
    assert d.test[2].startswith("Macbeth\n\nACT I")
    assert "DUNCAN:\nWhat bloody man is that?" in d.test.text
    for part in (d.train, d.val, d.test):
        assert "**" not in part.text and "#" not in part.text and "_" not in part.text
        assert part.text.isascii()
    assert 4_000_000 < len(d.train.text) < 4_600_000 and 300_000 < len(d.test.text) < 400_000


def test_genre_dataset_balanced_and_label_safe():
    d = load_dataset("shakespeare-genre")
    assert d.info.label_names == ("comedy", "history", "tragedy") and d.info.num_classes == 3
    for part in (d.train, d.val, d.test):
        counts = collections.Counter(part.labels)
        assert sorted(counts) == [0, 1, 2] and len(set(counts.values())) == 1
        assert len(part) >= 2000
    text, label = d.test[0]
    assert isinstance(text, str) and label in (0, 1, 2)
    assert all(1 <= len(t.splitlines()) <= 4 for t, _ in d.train.items)
    # passages never carry speaker tags (which would leak e.g. "KING HENRY" -> history)
    assert not any(line.endswith(":") and line.isupper() for t, _ in d.val.items for line in t.splitlines())
    test_texts = {t for t, _ in d.test.items}
    assert not (test_texts & {t for t, _ in d.val.items})


def test_genre_passage_lines_option():
    d = load_dataset("shakespeare-genre", passage_lines=1)
    assert all(len(t.splitlines()) == 1 for t, _ in d.val.items)
    with pytest.raises(PrunekitError, match=r"passage_lines must be an integer from 1 to 64, got 0"):
        load_dataset("shakespeare-genre", passage_lines=0)
