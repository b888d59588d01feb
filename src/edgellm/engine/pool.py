"""The models one process serves: engines by name and alias, loaded in the background.

The HTTP layer asks the pool for an engine by the request's `model` field; `/health` reports
its state. The gateway issue puts routing in front of this seam.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path

from edgellm.config import Capability, ModelConfig
from edgellm.engine.embedding import EmbeddingEngine
from edgellm.engine.engine import Engine, FinishListener
from edgellm.engine.jobs import SchedulerStats
from edgellm.engine.llama import LlamaWeights
from edgellm.errors import EdgeLLMError, InvalidRequestError, ModelNotFoundError, NotReadyError

log = logging.getLogger(__name__)

PathResolver = Callable[[str], Path]


def resolve_with_catalog(source: str) -> Path:
    from edgellm.models import resolve_model

    return resolve_model(source).path


@dataclass(frozen=True, slots=True)
class EngineLoad:
    model: str
    waiting: int
    running: int
    slots: int
    stats: SchedulerStats


class PoolState(StrEnum):
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"


class EnginePool:
    def __init__(
        self, models: list[ModelConfig], resolve: PathResolver = resolve_with_catalog
    ) -> None:
        if not models:
            raise ValueError("at least one model must be configured")
        self._configs = models
        self._resolve = resolve
        self._engines: dict[str, Engine] = {}
        self._embedders: dict[str, EmbeddingEngine] = {}
        self._weights: dict[str, LlamaWeights] = {}  # models that only embed
        self._serves: dict[str, list[Capability]] = {cfg.name: cfg.serves for cfg in models}
        self._names: dict[str, str] = {}  # name or alias -> model name
        for cfg in models:
            for key in (cfg.name, *cfg.aliases):
                if key in self._names:
                    raise ValueError(f"model name or alias {key!r} is used twice")
                self._names[key] = cfg.name
        self.state = PoolState.LOADING
        self.error: str | None = None
        self.created = int(time.time())
        self._loaded = threading.Event()
        self._listeners: list[FinishListener] = []

    def add_finish_listener(self, listener: FinishListener) -> None:
        """Attach `listener` to every engine, loaded now or later (metrics use this)."""
        self._listeners.append(listener)
        for engine in self.engines():
            engine.add_listener(listener)

    # -- loading ----------------------------------------------------------------------------

    def load(self) -> None:
        """Load every model (blocking). On failure the pool is FAILED and `error` says why."""
        try:
            for cfg in self._configs:
                started = time.perf_counter()
                path = self._resolve(cfg.source)
                weights: LlamaWeights
                if "generation" in cfg.serves:
                    engine = Engine.load(cfg.name, path, cfg.engine)
                    for listener in self._listeners:
                        engine.add_listener(listener)
                    self._engines[cfg.name] = engine
                    weights = engine.weights
                else:  # no generation context: the weights alone
                    weights = self._weights[cfg.name] = LlamaWeights(path)
                if "embeddings" in cfg.serves:
                    self._embedders[cfg.name] = EmbeddingEngine(cfg.name, weights, cfg.embeddings)
                log.info(
                    "loaded %s from %s in %.1f s", cfg.name, path, time.perf_counter() - started
                )
            self.state = PoolState.READY
        except EdgeLLMError as exc:
            log.error("model loading failed: %s", exc.message)
            self.error = exc.message
            self.state = PoolState.FAILED
        except Exception as exc:
            log.exception("model loading failed")
            self.error = f"{type(exc).__name__}: {exc}"
            self.state = PoolState.FAILED
        finally:
            self._loaded.set()

    def load_in_background(self) -> threading.Thread:
        thread = threading.Thread(target=self.load, name="model-loader", daemon=True)
        thread.start()
        return thread

    def wait_loaded(self, timeout: float | None = None) -> bool:
        return self._loaded.wait(timeout)

    # -- lookup -----------------------------------------------------------------------------

    @property
    def model_names(self) -> list[str]:
        return [cfg.name for cfg in self._configs]

    def get(self, name: str) -> Engine:
        """The generation engine of `name` (a 400 for a model that only embeds)."""
        canonical = self._canonical(name)
        if "generation" not in self._serves[canonical]:
            raise InvalidRequestError(
                f"'{name}' is an embedding model: it serves /v1/embeddings only", param="model"
            )
        engine = self._engines.get(canonical)
        if engine is None:
            raise self._not_ready(canonical)
        return engine

    def embedder(self, name: str) -> EmbeddingEngine:
        """The embedding engine of `name` (a 400 naming the models that embed, if it does not)."""
        canonical = self._canonical(name)
        if "embeddings" not in self._serves[canonical]:
            able = [n for n, serves in self._serves.items() if "embeddings" in serves]
            raise InvalidRequestError(
                f"'{name}' does not serve embeddings; models that do: {', '.join(able) or 'none'}",
                param="model",
            )
        embedder = self._embedders.get(canonical)
        if embedder is None:
            raise self._not_ready(canonical)
        return embedder

    def serves(self, name: str) -> list[Capability]:
        return list(self._serves[self._canonical(name)])

    def _canonical(self, name: str) -> str:
        canonical = self._names.get(name)
        if canonical is None:
            raise ModelNotFoundError.unknown(name, list(self._names))
        return canonical

    def _not_ready(self, canonical: str) -> NotReadyError:
        if self.state is PoolState.FAILED:
            return NotReadyError("model loading failed; the server log says why")
        return NotReadyError(f"model '{canonical}' is still loading")

    def engines(self) -> Iterable[Engine]:
        return list(self._engines.values())

    def queue_state(self) -> list[EngineLoad]:
        """A snapshot of every loaded engine's scheduler, for /metrics and load-aware routing."""
        return [
            EngineLoad(
                model=e.name,
                waiting=e.scheduler.queue_depth,
                running=e.scheduler.running,
                slots=e.scheduler.n_slots,
                stats=replace(e.scheduler.stats),
            )
            for e in self.engines()
        ]

    def aliases(self, name: str) -> list[str]:
        return [k for k, v in self._names.items() if v == name and k != name]

    def close(self) -> None:
        for embedder in self._embedders.values():  # before the weights they use
            embedder.close()
        self._embedders.clear()
        for engine in self.engines():
            engine.close()
        self._engines.clear()
        for weights in self._weights.values():
            weights.close()
        self._weights.clear()
