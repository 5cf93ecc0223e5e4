"""Ingest a document collection into pgvector: load, chunk, hash, embed what changed, upsert, delete.

Tables (in the warehouse database, created on first use):

- ``rag_collections``: one row per collection with its embedding model, chunk settings and the
  counts BM25 needs (chunks, lexical tokens).
- ``rag_chunks``: one row per chunk, keyed by (collection, chunk_id = "<doc_id>#<index>"), with its
  text, metadata (jsonb, GIN index for filters), content hash and vector (HNSW, cosine).
- ``rag_postings``: the full-text index: one row per (chunk, lexeme) with its term frequency, from
  Postgres' english text search configuration; BM25 is computed from it in SQL.

A rerun compares content hashes: unchanged chunks are left alone, changed ones are re-embedded
(or take the vector of an identical chunk already stored), vanished ones are deleted. The whole
sync is one transaction under an advisory lock per collection, so readers see the old or the new
collection, never a half-written one, and two runs of the same collection queue up.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from flightline.rag.chunking import Chunk, chunk_document, embedding_text, validate_chunk_settings
from flightline.rag.documents import Document, load_documents

if TYPE_CHECKING:
    import psycopg

    from flightline.platform.config import Settings
    from flightline.rag.embeddings import Embedder

logger = logging.getLogger(__name__)

TEXT_SEARCH_CONFIG = "english"

_SCHEMA_LOCK_KEY = 0x5241475F  # "RAG_": serialises DDL between concurrent first runs


@dataclass
class IngestReport:
    """What a sync did; small enough for XCom and MLflow params."""

    collection: str
    source: str
    embedding_model: str
    embedding_version: str
    embedding_backend: str
    chunk_size: int
    chunk_overlap: int
    documents: int = 0
    chunks: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    metadata_updated: int = 0
    embedded: int = 0
    reused_vectors: int = 0
    seconds_load: float = 0.0
    seconds_chunk: float = 0.0
    seconds_embed: float = 0.0
    seconds_write: float = 0.0
    seconds_total: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


# ---- schema ----------------------------------------------------------------------------------------


def ensure_schema(conn: psycopg.Connection, settings: Settings) -> None:
    """Create the RAG tables and indexes if missing (idempotent; safe under concurrent callers)."""
    from flightline.rag.embeddings import DIMENSION

    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK_KEY,))
        conn.execute("create extension if not exists vector")
        conn.execute(
            """
            create table if not exists rag_collections (
                name text primary key,
                source text not null,
                embedding_model text not null,
                embedding_version text not null,
                dimension int not null,
                chunk_size int not null,
                chunk_overlap int not null,
                document_count int not null default 0,
                chunk_count int not null default 0,
                lexical_token_count bigint not null default 0,
                updated_at timestamptz not null default now()
            )"""
        )
        conn.execute(
            f"""
            create table if not exists rag_chunks (
                collection text not null references rag_collections (name) on delete cascade,
                chunk_id text not null,
                doc_id text not null,
                chunk_index int not null,
                title text,
                text text not null,
                metadata jsonb not null default '{{}}',
                content_hash text not null,
                embedding vector({DIMENSION}) not null,
                updated_at timestamptz not null default now(),
                primary key (collection, chunk_id)
            )"""
        )
        conn.execute(
            """
            create table if not exists rag_postings (
                collection text not null,
                lexeme text not null,
                chunk_id text not null,
                tf int not null,
                chunk_length int not null,
                primary key (collection, lexeme, chunk_id),
                foreign key (collection, chunk_id) references rag_chunks (collection, chunk_id) on delete cascade
            )"""
        )
        conn.execute("create index if not exists rag_chunks_doc on rag_chunks (collection, doc_id)")
        conn.execute("create index if not exists rag_chunks_hash on rag_chunks (collection, content_hash)")
        conn.execute("create index if not exists rag_chunks_metadata on rag_chunks using gin (metadata jsonb_path_ops)")
        conn.execute("create index if not exists rag_postings_chunk on rag_postings (collection, chunk_id)")
        conn.execute(
            "create index if not exists rag_chunks_embedding_hnsw on rag_chunks "
            "using hnsw (embedding vector_cosine_ops) "
            f"with (m = {int(settings.rag_hnsw_m)}, ef_construction = {int(settings.rag_hnsw_ef_construction)})"
        )


# ---- sync ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _PlannedChunk:
    chunk: Chunk
    title: str | None
    metadata_json: str


def sync_collection(
    settings: Settings,
    collection: str,
    documents: Iterable[Document],
    *,
    source: str,
    embedder: Embedder | None = None,
    chunk_size: int | None = None,
    chunk_overlap: int | None = None,
    batch_size: int | None = None,
) -> IngestReport:
    """Make the stored collection equal to ``documents``, embedding only chunks with new content.

    Raises:
        FlightlineConfigError: on a collection name the search API cannot take, or chunk settings that
            cannot work (overlap >= size).
    """
    from flightline.platform import database
    from flightline.rag.embeddings import get_embedder
    from flightline.rag.schemas import check_collection_name

    check_collection_name(collection)
    started = time.perf_counter()
    size = chunk_size or settings.rag_chunk_size
    overlap = settings.rag_chunk_overlap if chunk_overlap is None else chunk_overlap
    validate_chunk_settings(size, overlap)
    embedder = embedder or get_embedder(settings)
    report = IngestReport(
        collection=collection,
        source=source,
        embedding_model=embedder.model_name,
        embedding_version=embedder.model_version,
        embedding_backend=embedder.backend,
        chunk_size=size,
        chunk_overlap=overlap,
    )

    loaded = list(documents)
    report.documents = len(loaded)
    report.seconds_load = time.perf_counter() - started

    step = time.perf_counter()
    model_id = f"{embedder.model_name}@{embedder.model_version}"
    planned: dict[str, _PlannedChunk] = {}
    for document in loaded:
        metadata_json = json.dumps(document.metadata, sort_keys=True, default=str)
        # a document with a title and no body is still findable by its title
        body = document.text if document.text.strip() else (document.title or "")
        for chunk in chunk_document(
            document.doc_id, document.title, body, size=size, overlap=overlap, model_id=model_id
        ):
            planned[chunk.chunk_id] = _PlannedChunk(chunk, document.title, metadata_json)
    report.chunks = len(planned)
    report.seconds_chunk = time.perf_counter() - step

    with database.connect(settings, settings.warehouse_db) as conn:
        ensure_schema(conn, settings)
        with conn.transaction():
            conn.execute("select pg_advisory_xact_lock(hashtext('rag_collection:' || %s))", (collection,))
            _upsert_collection_row(conn, collection, source, embedder, size, overlap)
            stored = {
                chunk_id: (content_hash, json.dumps(metadata, sort_keys=True, default=str))
                for chunk_id, content_hash, metadata in conn.execute(
                    "select chunk_id, content_hash, metadata from rag_chunks where collection = %s", (collection,)
                )
            }
            to_delete = [chunk_id for chunk_id in stored if chunk_id not in planned]
            to_write: list[_PlannedChunk] = []
            metadata_only: list[_PlannedChunk] = []
            for chunk_id, plan in planned.items():
                if chunk_id not in stored:
                    report.added += 1
                    to_write.append(plan)
                elif stored[chunk_id][0] != plan.chunk.content_hash:
                    report.updated += 1
                    to_write.append(plan)
                elif stored[chunk_id][1] != plan.metadata_json:
                    report.metadata_updated += 1
                    metadata_only.append(plan)
                else:
                    report.unchanged += 1
            report.deleted = len(to_delete)

            step = time.perf_counter()
            vectors = _vectors_for(
                conn, collection, to_write, embedder, batch_size or settings.embedding_batch_size, report
            )
            report.seconds_embed = time.perf_counter() - step

            step = time.perf_counter()
            replaced = [plan.chunk.chunk_id for plan in to_write if plan.chunk.chunk_id in stored]
            if to_delete or replaced:
                conn.execute(
                    "delete from rag_chunks where collection = %s and chunk_id = any(%s)",
                    (collection, to_delete + replaced),
                )
            _insert_chunks(conn, collection, to_write, vectors)
            for plan in metadata_only:
                conn.execute(
                    "update rag_chunks set metadata = %s::jsonb, updated_at = now() "
                    "where collection = %s and chunk_id = %s",
                    (plan.metadata_json, collection, plan.chunk.chunk_id),
                )
            _refresh_collection_stats(conn, collection)
            report.seconds_write = time.perf_counter() - step
    report.seconds_total = time.perf_counter() - started
    logger.info("synced collection %s: %s", collection, report.as_dict())
    return report


def ingest_source(
    settings: Settings,
    source: Path,
    *,
    collection: str,
    embedder: Embedder | None = None,
    chunk_size: int | None = None,
    chunk_overlap: int | None = None,
) -> IngestReport:
    """Load documents from source and sync them into collection."""
    started = time.perf_counter()
    documents = load_documents(source)
    seconds_load = time.perf_counter() - started
    report = sync_collection(
        settings,
        collection,
        documents,
        source=str(source),
        embedder=embedder,
        chunk_size=chunk_size,
        chunk_overlap=chunk_overlap,
    )
    report.seconds_load += seconds_load
    report.seconds_total += seconds_load
    return report


def drop_collection(settings: Settings, collection: str) -> bool:
    """Delete a collection and its chunks; False when it did not exist."""
    from flightline.platform import database

    with database.connect(settings, settings.warehouse_db) as conn:
        ensure_schema(conn, settings)
        with conn.transaction():
            deleted = conn.execute("delete from rag_collections where name = %s", (collection,)).rowcount
    return bool(deleted)


def _upsert_collection_row(
    conn: psycopg.Connection, collection: str, source: str, embedder: Embedder, size: int, overlap: int
) -> None:
    conn.execute(
        """
        insert into rag_collections
            (name, source, embedding_model, embedding_version, dimension, chunk_size, chunk_overlap)
        values (%s, %s, %s, %s, %s, %s, %s)
        on conflict (name) do update set
            source = excluded.source, embedding_model = excluded.embedding_model,
            embedding_version = excluded.embedding_version, dimension = excluded.dimension,
            chunk_size = excluded.chunk_size, chunk_overlap = excluded.chunk_overlap, updated_at = now()
        """,
        (collection, source, embedder.model_name, embedder.model_version, embedder.dimension, size, overlap),
    )


def _vectors_for(
    conn: psycopg.Connection,
    collection: str,
    plans: Sequence[_PlannedChunk],
    embedder: Embedder,
    batch_size: int,
    report: IngestReport,
) -> list[str]:
    """pgvector text literals for plans: copied from an identical stored chunk, else embedded."""
    hashes = list({plan.chunk.content_hash for plan in plans})
    known: dict[str, str] = {}
    if hashes:
        known = {
            content_hash: vector
            for content_hash, vector in conn.execute(
                "select distinct on (content_hash) content_hash, embedding::text from rag_chunks "
                "where collection = %s and content_hash = any(%s)",
                (collection, hashes),
            )
        }
    missing = [plan for plan in plans if plan.chunk.content_hash not in known]
    unique_missing = list({plan.chunk.content_hash: plan for plan in missing}.values())
    if unique_missing:
        vectors = embedder.embed(
            [embedding_text(plan.title, plan.chunk.text) for plan in unique_missing], batch_size=batch_size
        )
        for plan, vector in zip(unique_missing, vectors, strict=True):
            known[plan.chunk.content_hash] = "[" + ",".join(f"{x:.7g}" for x in vector.tolist()) + "]"
    report.embedded = len(unique_missing)
    report.reused_vectors = len(plans) - len(missing)
    return [known[plan.chunk.content_hash] for plan in plans]


def _insert_chunks(
    conn: psycopg.Connection, collection: str, plans: Sequence[_PlannedChunk], vectors: Sequence[str]
) -> None:
    if not plans:
        return
    with conn.cursor() as cursor:
        with cursor.copy(
            "copy rag_chunks "
            "(collection, chunk_id, doc_id, chunk_index, title, text, metadata, content_hash, embedding) "
            "from stdin"
        ) as copy:
            for plan, vector in zip(plans, vectors, strict=True):
                chunk = plan.chunk
                copy.write_row(
                    (
                        collection,
                        chunk.chunk_id,
                        chunk.doc_id,
                        chunk.chunk_index,
                        plan.title,
                        chunk.text,
                        plan.metadata_json,
                        chunk.content_hash,
                        vector,
                    )
                )
    conn.execute(
        f"""
        insert into rag_postings (collection, lexeme, chunk_id, tf, chunk_length)
        select c.collection, t.lexeme, c.chunk_id, t.tf, sum(t.tf) over (partition by c.chunk_id)
        from rag_chunks c
        cross join lateral (
            select lexeme, coalesce(array_length(positions, 1), 1) as tf
            from unnest(to_tsvector('{TEXT_SEARCH_CONFIG}', coalesce(c.title, '') || ' ' || c.text))
        ) t
        where c.collection = %s and c.chunk_id = any(%s)
        """,
        (collection, [plan.chunk.chunk_id for plan in plans]),
    )


def _refresh_collection_stats(conn: psycopg.Connection, collection: str) -> None:
    conn.execute(
        """
        update rag_collections set
            document_count = (select count(distinct doc_id) from rag_chunks where collection = %(c)s),
            chunk_count = (select count(*) from rag_chunks where collection = %(c)s),
            lexical_token_count = coalesce((select sum(tf) from rag_postings where collection = %(c)s), 0),
            updated_at = now()
        where name = %(c)s
        """,
        {"c": collection},
    )
