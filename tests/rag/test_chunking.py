"""Chunk windows and content hashes: the basis of idempotent re-ingestion."""

from __future__ import annotations

import pytest

from flightline.platform.errors import FlightlineConfigError
from flightline.rag.chunking import chunk_document, content_hash, embedding_text, split_words


def test_windows_overlap_by_the_setting() -> None:
    words = [f"w{i}" for i in range(25)]
    windows = split_words(" ".join(words), size=10, overlap=3)
    assert windows[0].split() == words[0:10]
    assert windows[1].split() == words[7:17]
    assert windows[-1].split()[-1] == "w24"
    for first, second in zip(windows, windows[1:], strict=False):
        assert first.split()[-3:] == second.split()[:3]


def test_last_window_is_not_a_mere_repeat_of_the_previous_tail() -> None:
    windows = split_words(" ".join(str(i) for i in range(10)), size=10, overlap=3)
    assert windows == [" ".join(str(i) for i in range(10))]


def test_short_and_empty_texts() -> None:
    assert split_words("one two", size=10, overlap=2) == ["one two"]
    assert split_words("   \n\t ", size=10, overlap=2) == []
    assert chunk_document("d", "title", "", size=10, overlap=2, model_id="m") == []


def test_very_long_document_is_covered_completely() -> None:
    words = [f"w{i}" for i in range(100_000)]
    windows = split_words(" ".join(words), size=200, overlap=40)
    assert len(windows) == 625
    covered = {word for window in windows for word in window.split()}
    assert covered == set(words)
    assert all(len(window.split()) <= 200 for window in windows)


@pytest.mark.parametrize(("size", "overlap"), [(10, 10), (10, 11), (10, -1), (0, 0)])
def test_impossible_settings_are_rejected(size: int, overlap: int) -> None:
    with pytest.raises(FlightlineConfigError, match="overlap"):
        split_words("a b c", size=size, overlap=overlap)


def test_hash_covers_model_title_and_text_only() -> None:
    base = content_hash("model@1", "Title", "body text")
    assert base == content_hash("model@1", "Title", "body text")
    assert base != content_hash("model@2", "Title", "body text")
    assert base != content_hash("model@1", "Other", "body text")
    assert base != content_hash("model@1", "Title", "body text!")
    # field boundaries matter: moving a word from title to text changes the hash
    assert content_hash("m", "a b", "c") != content_hash("m", "a", "b c")


def test_chunk_ids_and_hashes_are_stable_across_runs() -> None:
    text = " ".join(f"w{i}" for i in range(50))
    first = chunk_document("doc-1", "T", text, size=20, overlap=5, model_id="m")
    again = chunk_document("doc-1", "T", text, size=20, overlap=5, model_id="m")
    assert first == again
    assert [c.chunk_id for c in first] == ["doc-1#0", "doc-1#1", "doc-1#2"]
    edited = chunk_document("doc-1", "T", text.replace("w45", "changed"), size=20, overlap=5, model_id="m")
    assert [a.content_hash == b.content_hash for a, b in zip(first, edited, strict=False)] == [True, True, False]


def test_embedding_text_prefixes_the_title() -> None:
    assert embedding_text("Title", "body") == "Title\nbody"
    assert embedding_text(None, "body") == "body"
