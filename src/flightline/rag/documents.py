"""The documents of a source: a BEIR corpus (corpus.jsonl) or a folder of text and Markdown files.

Everything wrong with a source is found and named before anything is embedded: malformed lines, values
PostgreSQL cannot store, duplicate ids. Sources named by a DAG trigger must lie under an allowed root.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from flightline.platform.errors import DataValidationError, NotFoundError

if TYPE_CHECKING:
    from flightline.platform.config import Settings

TEXT_SUFFIXES = (".txt", ".md", ".markdown")

MAX_PROBLEMS_SHOWN = 20
"""Bad documents named in the error; the rest are counted."""


@dataclass(frozen=True)
class Document:
    doc_id: str
    text: str
    title: str | None = None
    metadata: dict[str, object] = field(default_factory=dict)



def load_documents(source: Path) -> list[Document]:
    """Documents of a BEIR corpus (a folder with corpus.jsonl, or the .jsonl itself) or a folder of
    text/Markdown files (searched recursively; the doc_id is the path relative to the folder).

    Raises:
        NotFoundError: when source does not exist.
        DataValidationError: when a corpus line is malformed, a document holds what PostgreSQL cannot
            store (NUL characters, NaN in metadata), or two documents share an id; it names each one,
            before anything is embedded.
    """
    if not source.exists():
        raise NotFoundError(f"document source {source} does not exist; pass an existing folder or corpus.jsonl")
    problems: list[str] = []
    if source.is_file():
        documents = _load_beir(source, problems)
    elif (source / "corpus.jsonl").is_file():
        documents = _load_beir(source / "corpus.jsonl", problems)
    else:
        documents = _load_folder(source, problems)
    if problems:
        shown = "\n  ".join(problems[:MAX_PROBLEMS_SHOWN])
        more = f"\n  ... and {len(problems) - MAX_PROBLEMS_SHOWN} more" if len(problems) > MAX_PROBLEMS_SHOWN else ""
        raise DataValidationError(f"{len(problems)} document(s) in {source} cannot be ingested:\n  {shown}{more}")
    _reject_duplicate_ids(documents, source)
    return documents


def check_source_allowed(settings: Settings, source: Path) -> Path:
    """``source`` resolved (symlinks followed) if it lies under one of ``settings.rag_allowed_roots``.

    For runs whose source comes from a DAG trigger: the person triggering may not be allowed to read the
    machine's files, and what is ingested can be searched over HTTP.

    Raises:
        FlightlineConfigError: naming the allowed folders and the setting that adds one.
    """
    from flightline.platform.errors import FlightlineConfigError

    resolved = source.expanduser().resolve()
    roots = [root.expanduser().resolve() for root in settings.rag_allowed_roots]
    if not any(resolved.is_relative_to(root) for root in roots):
        raise FlightlineConfigError(
            f"source {source} is outside the folders an ingestion run may read ({', '.join(map(str, roots))}); "
            "put the documents under one, or have an operator add their folder to FLIGHTLINE_RAG_SOURCE_ROOTS"
        )
    return resolved


def _load_beir(path: Path, problems: list[str]) -> list[Document]:
    documents = []
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            where = f"{path}:{number}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                problems.append(f"{where}: not UTF-8 ({exc.reason} at byte {exc.start} of the line)")
                continue
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                doc_id = record["_id"]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise DataValidationError(f"{where} is not a BEIR corpus record ({exc})") from exc
            title, text, metadata = record.get("title") or None, record.get("text") or "", record.get("metadata") or {}
            if not (isinstance(doc_id, str | int) and not isinstance(doc_id, bool) and isinstance(text, str)
                    and isinstance(title, str | None) and isinstance(metadata, dict)):
                problems.append(f"{where}: _id must be a string or integer, text and title strings, metadata an object")
                continue
            document = Document(doc_id=str(doc_id), title=title, text=text, metadata=metadata)
            problems.extend(f"{where}: {problem}" for problem in _unstorable(document))
            documents.append(document)
    return documents


def _load_folder(folder: Path, problems: list[str]) -> list[Document]:
    documents = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES):
        relative = path.relative_to(folder).as_posix()
        text = path.read_text(encoding="utf-8", errors="replace")
        is_markdown = path.suffix.lower() != ".txt"
        metadata: dict[str, object] = {"path": relative, "format": "markdown" if is_markdown else "text"}
        if len(path.relative_to(folder).parts) > 1:
            metadata["folder"] = path.relative_to(folder).parts[0]
        document = Document(doc_id=relative, title=_title_of(text, path, is_markdown), text=text, metadata=metadata)
        problems.extend(f"{path}: {problem}" for problem in _unstorable(document))
        documents.append(document)
    return documents


def _unstorable(document: Document) -> list[str]:
    """What PostgreSQL would refuse mid-sync, failing the whole collection's transaction: text cannot hold
    NUL, jsonb cannot hold NaN or Infinity. An empty id would make chunk ids that name no document."""
    problems = []
    if not document.doc_id.strip():
        problems.append("empty document id")
    for name, value in (("id", document.doc_id), ("title", document.title or ""), ("text", document.text)):
        if "\x00" in value:
            problems.append(f"NUL character in its {name} (a binary file?)")
    values = list(_json_leaves(document.metadata))
    if any(isinstance(v, str) and "\x00" in v for v in values):
        problems.append("NUL character in its metadata")
    if any(isinstance(v, float) and not math.isfinite(v) for v in values):
        problems.append("NaN or Infinity in its metadata (JSON has no such numbers)")
    return problems


def _json_leaves(value: object) -> Iterable[object]:
    """Keys and scalar values of a JSON document, depth first."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _json_leaves(item)
    elif isinstance(value, list):
        for item in value:
            yield from _json_leaves(item)
    else:
        yield value


def _title_of(text: str, path: Path, is_markdown: bool) -> str:
    """A Markdown file's first level-1 heading, else the file name without suffix."""
    if is_markdown:
        for line in text.splitlines():
            if line.startswith("# "):
                return line[2:].strip()
    return path.stem.replace("_", " ").replace("-", " ")


def _reject_duplicate_ids(documents: Sequence[Document], source: Path) -> None:
    seen: set[str] = set()
    for document in documents:
        if document.doc_id in seen:
            raise DataValidationError(f"document id {document.doc_id!r} appears twice in {source}; ids must be unique")
        seen.add(document.doc_id)
