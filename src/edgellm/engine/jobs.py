"""Units of work that schedulers run, and the bookkeeping they share."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from edgellm.engine.types import GenerationEvent, GenerationRequest

EventSink = Callable[[GenerationEvent], None]


@dataclass(slots=True)
class GenerationJob:
    request: GenerationRequest
    sink: EventSink
    admitted_at: float = field(default_factory=time.perf_counter)
    cancelled: threading.Event = field(default_factory=threading.Event)


def common_prefix_len(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i
