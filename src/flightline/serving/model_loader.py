"""Models by alias: :class:`AliasedModel` follows an MLflow alias and swaps a new version in atomically.

Requests in flight finish on the model they started with; a local copy of each version lets a replica
start, and serve, while the registry does not answer.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from flightline.models.servable import fast_path, load_servable, predict_rows

if TYPE_CHECKING:
    from flightline.platform.config import Settings

log = logging.getLogger(__name__)


class AliasedModel:
    """The model an MLflow alias points to, reloaded when the alias moves.

    ``current`` is replaced in one assignment after the new version is loaded, so a request that took
    the old ``(model, version)`` finishes on it: no downtime, nothing dropped.

    Versions are loaded from a local copy (``<home>/serve/model-cache/<model>/v<N>``), and the version each
    alias last served is recorded there: a replica that starts while the registry does not answer (a
    restart, a scale-out under load), or while its alias points at a version that cannot serve, serves
    that version, and says so, instead of the fallback. Versions no alias serves leave the cache after
    an hour unused.
    """

    def __init__(self, settings: Settings, alias: str) -> None:
        self.settings = settings
        self.alias = alias
        self.current: tuple[Any, str] | None = None
        self.error: str | None = None
        self.rows_scored = 0
        self._count_lock = threading.Lock()
        self._stop_following = threading.Event()
        self._refused: tuple[str, str] | None = None  # (version, why): not loaded again every poll

    def refresh(self) -> bool:
        """Load the alias's version if it moved; True when a new version was swapped in."""
        from flightline.models import registry
        from flightline.platform.errors import FlightlineError, ServiceError

        try:
            try:
                version = registry.alias_version(self.settings, self.alias)
            except ServiceError as exc:
                if self.current is None:
                    return self._serve_cached(f"the registry did not answer: {exc}")
                self.error = f"{type(exc).__name__}: {exc}"  # the loaded version goes on serving
                return False
            if version is None:
                self.error = f"alias {self.alias!r} of {self.settings.model_name!r} is not set"
                return False
            number = str(version.version)
            if self.current is not None and self.current[1] == number:
                self.error = None  # an earlier failed read, or a refused version the alias left again
                return False
            if self._refused is not None and self._refused[0] == number:
                self._refuse(*self._refused)
                return False
            registry.client(self.settings)
            try:
                model = load_servable(str(self._cached_copy(number)))
            except FlightlineError as exc:
                self._refuse(number, str(exc))
                log.error("%s: %s", self.alias, self.error)
                # a replica starting now has nothing loaded: the version this alias served before, if cached
                return self.current is None and self._serve_cached(f"v{number} is not served: {exc}")
            self.current = (fast_path(model) or model, number)
            self.error = None
            self._record_served(number)
            self._prune_cache()
            log.info("%s now serves %s v%s", self.alias, self.settings.model_name, number)
            return True
        except Exception as exc:  # noqa: BLE001 - keep serving the loaded version; report why in health
            self.error = f"{type(exc).__name__}: {exc}"
            log.exception("could not refresh %s", self.alias)
            return False

    @property
    def _cache(self) -> Path:
        return self.settings.home / "serve" / "model-cache" / self.settings.model_name

    def _cached_copy(self, number: str) -> Path:
        """The version's files in the local cache, downloaded from the registry the first time, and marked
        as in use now (its modification time), so that no replica's :meth:`_prune_cache` takes it mid-load."""
        import os
        import shutil
        import tempfile

        import mlflow

        local = self._cache / f"v{number}"
        if (local / "MLmodel").exists():
            os.utime(local)
        else:
            self._cache.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".v{number}-", dir=self._cache))
            try:
                uri = f"models:/{self.settings.model_name}/{number}"
                downloaded = Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(staging)))
                with contextlib.suppress(OSError):  # another replica's copy got there first: either will do
                    downloaded.rename(local)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        return local

    def _record_served(self, number: str) -> None:
        """Write down which version this alias serves, for a replica that starts with the registry down."""
        record = self._cache / f"{self.alias}.json"
        staging = record.with_suffix(f".{uuid.uuid4().hex}.tmp")
        staging.write_text(orjson.dumps({"version": number, "at": dt.datetime.now(dt.UTC).isoformat()}).decode())
        staging.replace(record)

    def _prune_cache(self, in_use_s: float = 3600.0) -> None:
        """Delete the cached versions no alias record names and no replica used in the last ``in_use_s``
        (a version being downloaded or loaded now), and leftover downloads: a model retrained daily would
        otherwise leave a version a day (~1 MB each for the trained LightGBM) behind every replica's host."""
        import shutil

        recorded = set()
        for record in self._cache.glob("*.json"):
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                recorded.add(f"v{orjson.loads(record.read_bytes())['version']}")
        cutoff = time.time() - in_use_s
        for entry in self._cache.iterdir():
            stale = entry.name.startswith(".v") or (entry.name.startswith("v") and entry.name not in recorded)
            with contextlib.suppress(OSError):  # another replica pruned it first
                if entry.is_dir() and stale and entry.stat().st_mtime < cutoff:
                    shutil.rmtree(entry)
                    log.info("model cache: removed %s (no alias serves it)", entry.name)

    def _serve_cached(self, why: str) -> bool:
        """Serve the version this alias last served here, from the local cache, when the registry cannot say
        which version to serve, or names one that cannot serve and nothing is loaded yet."""
        from flightline.platform.errors import FlightlineError

        try:
            record = orjson.loads((self._cache / f"{self.alias}.json").read_bytes())
            model = load_servable(str(self._cache / f"v{record['version']}"))
        except (OSError, ValueError, KeyError, FlightlineError) as exc:
            self.error = f"{why}; no cached version to serve ({type(exc).__name__}: {exc})"
            return False
        version = str(record["version"])
        self.current = (fast_path(model) or model, version)
        self.error = f"{why}; serving v{version} from the local cache (this alias's version at {record['at']})"
        log.warning("%s: %s", self.alias, self.error)
        return True

    def _refuse(self, number: str, why: str) -> None:
        """Remember a version that cannot serve, and report it: the loaded version goes on serving."""
        self._refused = (number, why)
        kept = f"; still serving v{self.current[1]}" if self.current else ""
        self.error = f"v{number} is not served: {why}{kept}"

    def follow(self, poll_s: float, on_swap: Callable[[], None] | None = None) -> threading.Thread:
        """Re-read the alias every ``poll_s`` in a daemon thread (started here, returned for health checks),
        until :meth:`stop_following`; ``on_swap`` runs after each new version is swapped in."""

        def loop() -> None:
            while not self._stop_following.wait(poll_s):
                if self.refresh() and on_swap is not None:
                    on_swap()

        thread = threading.Thread(target=loop, name=f"follow-{self.alias}", daemon=True)
        thread.start()
        return thread

    def stop_following(self) -> None:
        """End the :meth:`follow` thread (a model deployment switched to another alias drops this one)."""
        self._stop_following.set()

    def info(self) -> dict[str, Any]:
        current = self.current
        return {"alias": self.alias, "version": current[1] if current else None, "error": self.error,
                "rows_scored": self.rows_scored}

    def loaded(self) -> tuple[Any, str]:
        """The (model, version) loaded now; a caller that pins it is not affected by a swap mid-call."""
        from flightline.platform.errors import NotFoundError

        current = self.current
        if current is None:
            raise NotFoundError(self.error or f"no model loaded for alias {self.alias!r}")
        return current

    def predict(self, rows: list[list[float]], loaded: tuple[Any, str] | None = None) -> tuple[list[float], str]:
        """Delay probabilities for model rows (columns of flightline.features.definitions.FEATURE_NAMES), from
        ``loaded`` (pinned by the caller) or the version loaded now."""
        model, version = loaded or self.loaded()
        probabilities = predict_rows(model, rows)
        with self._count_lock:  # colocated models score in worker threads
            self.rows_scored += len(rows)
        return probabilities, version
