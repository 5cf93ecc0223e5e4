"""Retrieval metrics and rank fusion, against hand-computed values."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from flightline.platform.errors import DataValidationError
from flightline.rag.evaluation import dedupe_documents, load_qrels, ndcg_at_k, recall_at_k
from flightline.rag.retrieval import reciprocal_rank_fusion


def test_ndcg_perfect_and_partial() -> None:
    relevance = {"a": 1, "b": 1}
    assert ndcg_at_k(["a", "b", "c"], relevance, 10) == pytest.approx(1.0)
    # one relevant at rank 2 of two relevant: (1/log2(3)) / (1 + 1/log2(3))
    expected = (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    assert ndcg_at_k(["x", "a", "y"], relevance, 10) == pytest.approx(expected)
    assert ndcg_at_k(["x", "y"], relevance, 10) == 0.0
    assert ndcg_at_k(["a"], {}, 10) == 0.0


def test_ndcg_cuts_at_k_and_uses_graded_gains() -> None:
    assert ndcg_at_k(["x", "a"], {"a": 1}, 1) == 0.0
    graded = {"a": 2, "b": 1}
    assert ndcg_at_k(["b", "a"], graded, 10) < ndcg_at_k(["a", "b"], graded, 10) == pytest.approx(1.0)


def test_recall() -> None:
    relevance = {"a": 1, "b": 1, "c": 0}
    assert recall_at_k(["a", "x", "b"], relevance, 2) == 0.5
    assert recall_at_k(["a", "x", "b"], relevance, 3) == 1.0
    assert recall_at_k(["c"], relevance, 10) == 0.0


def test_chunk_ranking_becomes_document_ranking_at_best_chunk() -> None:
    assert dedupe_documents(["d1", "d2", "d1", "d3", "d2"]) == ["d1", "d2", "d3"]


def test_rrf_rewards_agreement_between_rankings() -> None:
    fused = reciprocal_rank_fusion([["a", "b", "c"], ["d", "b", "c"]], k=60)
    ids = [hit.chunk_id for hit in fused]
    assert ids[0] == "b"  # 2nd in both rankings beats 1st in one
    assert fused[0].score == pytest.approx(2 / 62)
    assert ids[1] == "c"  # 3rd in both still beats 1st in one
    assert set(ids[2:]) == {"a", "d"}


def test_rrf_of_one_ranking_keeps_its_order() -> None:
    assert [hit.chunk_id for hit in reciprocal_rank_fusion([["x", "y", "z"]])] == ["x", "y", "z"]
    assert reciprocal_rank_fusion([[], []]) == []


def test_qrels_loader_reads_beir_tsv_with_crlf(tmp_path: Path) -> None:
    path = tmp_path / "train.tsv"
    path.write_bytes(b"query-id\tcorpus-id\tscore\r\n1\t10\t1\r\n1\t11\t1\r\n2\t12\t1\r\n")
    assert load_qrels(path) == {"1": {"10": 1, "11": 1}, "2": {"12": 1}}
    path.write_text("q\tdoc\n1\t2\n")
    with pytest.raises(DataValidationError, match="BEIR header"):
        load_qrels(path)


def test_shared_scifact_labels_load() -> None:
    from flightline.platform.config import get_settings

    qrels = load_qrels(get_settings().shared_data_dir / "scifact" / "qrels" / "train.tsv")
    assert len(qrels) == 809
    assert sum(len(docs) for docs in qrels.values()) == 919
