"""Loading a document source: what PostgreSQL could not store is named up front, before any embedding.

Each of these used to fail mid-sync with a traceback (psycopg's DataError, jsonb's NaN, a decode error),
after the whole collection had been chunked and embedded.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from flightline.platform.errors import DataValidationError
from flightline.rag.documents import load_documents


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (b'{"_id": "1", "text": "a \\u0000 b"}', "corpus.jsonl:2: NUL character in its text"),
        (b'{"_id": "1", "title": "t\\u0000", "text": "a"}', "corpus.jsonl:2: NUL character in its title"),
        (b'{"_id": "1", "text": "a", "metadata": {"k": ["\\u0000"]}}', "corpus.jsonl:2: NUL character in its metadata"),
        (b'{"_id": "1", "text": "a", "metadata": {"score": NaN}}', "corpus.jsonl:2: NaN or Infinity in its metadata"),
        (b'{"_id": "1", "text": 123}', "corpus.jsonl:2: _id must be a string or integer"),
        (b'{"_id": null, "text": "a"}', "corpus.jsonl:2: _id must be a string or integer"),
        (b'{"_id": "1", "text": "a", "metadata": [1]}', "metadata an object"),
        (b'{"_id": " ", "text": "a"}', "corpus.jsonl:2: empty document id"),
        (b'{"_id": "1", "text": "caf\xe9"}', "corpus.jsonl:2: not UTF-8 (invalid continuation byte at byte 25 of"),
    ],
)
def test_a_corpus_line_postgres_cannot_store_is_named(tmp_path: Path, line: bytes, problem: str) -> None:
    (tmp_path / "corpus.jsonl").write_bytes(b'{"_id": "0", "text": "fine"}\n' + line + b"\n")
    with pytest.raises(DataValidationError, match="1 document\\(s\\) in .* cannot be ingested") as info:
        load_documents(tmp_path)
    assert problem in str(info.value)


def test_every_bad_file_of_a_folder_is_named_and_a_long_list_is_cut(tmp_path: Path) -> None:
    (tmp_path / "good.md").write_text("# Good\nplain text")
    for n in range(25):
        (tmp_path / f"binary{n:02}.txt").write_bytes(b"PK\x03\x04\x00\x00 zipped")
    with pytest.raises(DataValidationError) as info:
        load_documents(tmp_path)
    message = str(info.value)
    assert message.startswith(f"25 document(s) in {tmp_path} cannot be ingested:")
    assert f"{tmp_path / 'binary00.txt'}: NUL character in its text (a binary file?)" in message
    assert "binary19.txt" in message and "binary20.txt" not in message and message.endswith("... and 5 more")


def test_valid_documents_load_as_before(tmp_path: Path) -> None:
    (tmp_path / "corpus.jsonl").write_text(
        '{"_id": 7, "title": "T", "text": "body", "metadata": {"year": 2020, "tags": ["a"]}}\n\n'
    )
    [document] = load_documents(tmp_path)
    assert (document.doc_id, document.title, document.text, document.metadata) == (
        "7", "T", "body", {"year": 2020, "tags": ["a"]}
    )


def test_a_source_must_lie_under_an_allowed_root(tmp_path: Path) -> None:
    import os

    from flightline.platform.config import Settings
    from flightline.platform.errors import FlightlineConfigError
    from flightline.rag.documents import check_source_allowed

    home, shared, extra, outside = (tmp_path / name for name in ("home", "shared", "extra", "outside"))
    settings = Settings(home=home, shared_data_dir=shared, rag_source_roots=f"{extra}{os.pathsep}")
    for allowed in (shared / "scifact", home / "documents" / "team", extra / "a" / "b"):
        assert check_source_allowed(settings, allowed) == allowed.resolve()
    (home / "documents").mkdir(parents=True)
    (home / "documents" / "link").symlink_to(outside)
    for refused in (outside, home / "documents" / "link", home / "documents" / ".." / "secrets.json", home):
        with pytest.raises(FlightlineConfigError, match="outside the folders an ingestion run may read") as info:
            check_source_allowed(settings, refused)
        assert "FLIGHTLINE_RAG_SOURCE_ROOTS" in str(info.value) and str(extra) in str(info.value)
