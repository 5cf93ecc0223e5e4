from __future__ import annotations

import json
import stat

import pytest

from flightline.platform.config import _SECRET_NAMES, Settings
from flightline.platform.errors import FlightlineConfigError


@pytest.fixture(autouse=True)
def no_secrets_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Other tests' tasks export secrets into this process (dbt's callback); these tests need none."""
    for name in _SECRET_NAMES:
        monkeypatch.delenv(f"FLIGHTLINE_{name.upper()}", raising=False)


def test_environment_overrides_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("FLIGHTLINE_HOME", str(tmp_path))
    monkeypatch.setenv("FLIGHTLINE_MLFLOW_PORT", "5999")
    settings = Settings()
    assert settings.home == tmp_path
    assert settings.mlflow_url == "http://127.0.0.1:5999"
    assert settings.logs_dir == tmp_path / "logs"


def test_secrets_are_generated_once_private_and_stable(tmp_path) -> None:
    settings = Settings(home=tmp_path)
    first = settings.ensure_secrets()
    assert stat.S_IMODE(settings.secrets_file.stat().st_mode) == 0o600
    assert Settings(home=tmp_path).ensure_secrets() == first
    assert len(set(first.values())) == len(first)


def test_environment_secret_wins_over_the_file(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    Settings(home=tmp_path).ensure_secrets()
    monkeypatch.setenv("FLIGHTLINE_POSTGRES_PASSWORD", "from-env")
    assert Settings(home=tmp_path).secret("postgres_password") == "from-env"


def test_missing_secret_says_what_to_do(tmp_path) -> None:
    with pytest.raises(FlightlineConfigError, match="flightline up"):
        Settings(home=tmp_path).secret("postgres_password")


def test_urls_disable_ssl_and_quote_the_password(tmp_path) -> None:
    (tmp_path / "secrets.json").write_text(json.dumps({"postgres_password": "p@ss/word"}))
    settings = Settings(home=tmp_path)
    assert settings.postgres_url("mlflow").endswith("/mlflow?sslmode=disable")
    assert "p%40ss%2Fword" in settings.postgres_url("mlflow")


def test_as_env_round_trips_and_omits_secrets(tmp_path) -> None:
    settings = Settings(home=tmp_path, airflow_port=9999, postgres_password="hidden")
    env = settings.as_env()
    assert env["FLIGHTLINE_AIRFLOW_PORT"] == "9999"
    assert "FLIGHTLINE_POSTGRES_PASSWORD" not in env
    assert Settings(**{k.removeprefix("FLIGHTLINE_").lower(): v for k, v in env.items()}).airflow_port == 9999
