"""Cache-aware replica choice: which replica of a model most likely holds a prompt's prefix.

Every turn of a conversation resends the whole history, and a node keeps the KV of the
conversations it served (its slots, then its saved-state LRU). Sending a turn where its history
is cached saves prefilling it again; sending it anywhere else costs the whole history.

The gateway does not ask the nodes on the hot path. It keeps, per model, an index of the
prompts it routed: the prompt's wire text (messages serialized one by one, so a conversation's
earlier turn is a byte prefix of its next) cut into fixed blocks, each block's hash chained with
its predecessor's (vLLM's block hashing, over text rather than tokens: the gateway has no
tokenizer for a remote model, and the same text renders to the same tokens on every replica of
one model). Each replica's blocks sit in an LRU bounded by what the node can keep
(`capacity_tokens`); an answer's `cache_n` (`prompt_tokens_details.cached_tokens`) below what
the index expected shrinks that bound, hits grow it back. A replica that goes down or leaves is
forgotten, so its conversations move in one request each.

A node also keeps the answer it generated, and the next turn resends it: so when an answer ends,
the blocks of its prompt followed by the answer as the next turn will carry it (an assistant
message of that text; a text completion's prompt simply continues) go into the index too. A
conversation is then found by its next turn even when its first prompt was shorter than a block
or than `min_cached_bytes`, where the prompt's own blocks say nothing. A client that sends the
answer back changed only matches up to the end of the prompt.

The choice balances against load with bounded loads: the replica holding the longest prefix
gets the request unless that would put it above `balance` x the mean outstanding requests
(rounded up); then the least-loaded replica gets it and the override is counted. Requests with
no cached prefix beyond their system messages (a shared system prompt does not steer) go to a
replica within its bounded share of the recent requests (a hot conversation's replica takes no
new ones), the least loaded, then the one with the least prefill still to do, then the one that
served the fewest recent requests, then the one holding more of the prompt, then round-robin.

Prefill still to do is the gateway's own estimate, again without asking the nodes: each request
sent to a replica adds the prompt tokens it was not expected to find cached there, worked off at
the replica's measured prefill speed until its first token comes back (a non-streamed answer
reports back only when it ends). A new conversation then starts beside short prompts rather than
beside a long one: it shares the node with that prompt's prefill for all its later turns' first
tokens, while the conversation continuing on that node keeps its cache (a node serves the
shortest waiting prompt first, so its short turns are not queued behind the long one).
"""

from __future__ import annotations

import itertools
import math
import time
from collections import OrderedDict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import orjson

from edgellm.config import AffinitySettings
from edgellm.engine.types import Finished, GenerationEvent, TextDelta, ToolCallDelta

if TYPE_CHECKING:
    from edgellm.gateway.health import ReplicaState
    from edgellm.gateway.metrics import GatewayMetrics
    from edgellm.gateway.request import GatewayRequest
    from edgellm.gateway.route import Route

_ALPHA = 0.2  # weight of the newest sample in the bytes-per-token estimate
_RECENT = 64  # routed requests remembered per model for the tie-break of new conversations
_TICKETS = 4096  # routing decisions awaiting their answer (bounded: failed requests never end)
_SHRINK = 0.8  # a replica's capacity after a miss, as a share of what the index held for it
_GROW = 1.05  # a replica's capacity after a hit at full capacity
_STALE_S = 600.0  # a prefill this far past its expected end never reported back: dropped


class Replica(Protocol):
    id: str
    state: ReplicaState


R = TypeVar("R", bound=Replica)


def prompt_bytes(call: GatewayRequest) -> bytes:
    """The prompt's wire text: one JSON object per message, so earlier turns are a prefix."""
    messages = call.history if call.history is not None else call.messages
    if messages is not None:
        return b"".join(orjson.dumps(m, option=orjson.OPT_SORT_KEYS) for m in messages)
    prompt: Any = getattr(call.body, "prompt", "")
    return prompt.encode() if isinstance(prompt, str) else orjson.dumps(prompt)


def shared_lead(call: GatewayRequest) -> int:
    """Bytes of the prompt's leading system/developer messages: a prefix many conversations
    share, which says nothing about where a conversation lives."""
    messages = call.history if call.history is not None else call.messages
    n = 0
    for m in messages or []:
        if m.get("role") not in {"system", "developer"}:
            break
        n += len(orjson.dumps(m, option=orjson.OPT_SORT_KEYS))
    return n


def continuation_bytes(call: GatewayRequest, answer: str) -> bytes | None:
    """What follows the prompt's wire text in the next turn when the client sends `answer`
    back unchanged (None: a token-id prompt, whose next turn cannot be predicted as text, or an
    echoed one, whose answer repeats it)."""
    if call.echoes_prompt:
        return None
    if call.history is not None or call.messages is not None:
        message = {"content": answer, "role": "assistant"}
        return orjson.dumps(message, option=orjson.OPT_SORT_KEYS)
    prompt: Any = getattr(call.body, "prompt", None)
    return answer.encode() if isinstance(prompt, str) else None


def block_hashes(data: bytes, block: int, chain: int = 0) -> list[int]:
    """Chained hashes of the whole `block`-byte blocks of `data` (a partial tail is left out:
    it may still grow, and a match is counted in whole blocks); `chain`: the hash of the block
    before `data`, when `data` continues hashed blocks."""
    out: list[int] = []
    h = chain
    for i in range(0, len(data) - block + 1, block):
        h = hash((h, data[i : i + block]))
        out.append(h)
    return out


class PrefixIndex:
    """Block hash → replicas holding it, with one LRU of blocks per replica.

    Memory is bounded: a replica holds at most its capacity in blocks, and the whole index at
    most `max_blocks` (the largest replica gives way first).
    """

    def __init__(self, *, block: int, capacity_blocks: int, max_blocks: int) -> None:
        self.block = block
        self.default_capacity = capacity_blocks
        self.max_blocks = max_blocks
        self.where: dict[int, set[str]] = {}
        self.lru: dict[str, OrderedDict[int, None]] = {}
        self.capacity: dict[str, int] = {}
        self.size = 0

    def match(self, blocks: Sequence[int], replicas: Iterable[str]) -> dict[str, int]:
        """Leading blocks of `blocks` each replica holds."""
        result = dict.fromkeys(replicas, 0)
        todo = set(result)
        for n, h in enumerate(blocks):
            holders = self.where.get(h, set())
            still = todo & holders
            for r in todo - still:
                result[r] = n
            todo = still
            if not todo:
                break
        for r in todo:
            result[r] = len(blocks)
        return result

    def insert(self, replica: str, blocks: Sequence[int]) -> None:
        lru = self.lru.setdefault(replica, OrderedDict())
        cap = self.capacity.setdefault(replica, self.default_capacity)
        for h in blocks:
            if h in lru:
                lru.move_to_end(h)
                continue
            lru[h] = None
            self.where.setdefault(h, set()).add(replica)
            self.size += 1
        while len(lru) > cap:
            self._evict(replica)
        while self.size > self.max_blocks:
            self._evict(max(self.lru, key=lambda r: len(self.lru[r])))

    def _evict(self, replica: str) -> None:
        h, _ = self.lru[replica].popitem(last=False)
        self._unhold(h, replica)

    def _unhold(self, h: int, replica: str) -> None:
        """`replica` no longer holds block `h` (already out of its LRU)."""
        holders = self.where[h]
        holders.discard(replica)
        if not holders:
            del self.where[h]
        self.size -= 1

    def resize(self, replica: str, capacity: int) -> None:
        self.capacity[replica] = max(1, capacity)
        lru = self.lru.get(replica)
        while lru and len(lru) > self.capacity[replica]:
            self._evict(replica)

    def held(self, replica: str) -> int:
        lru = self.lru.get(replica)
        return len(lru) if lru else 0

    def forget(self, replica: str) -> None:
        for h in self.lru.pop(replica, OrderedDict()):
            self._unhold(h, replica)
        self.capacity.pop(replica, None)

    def replicas(self) -> set[str]:
        return set(self.lru)


@dataclass(slots=True)
class Ticket:
    """One routing decision, kept until the answer says how much was really cached."""

    blocks: list[int]
    expected: dict[str, int]  # blocks of the prompt each replica was expected to hold
    prompt_len: int  # bytes
    tail: bytes  # the prompt's bytes after its last whole block
    at: float = field(default_factory=time.monotonic)


class ReplicaAffinity:
    """Orders one model's replicas for a request and learns from the answers."""

    def __init__(
        self,
        model: str,
        settings: AffinitySettings | None = None,
        metrics: GatewayMetrics | None = None,
    ) -> None:
        self.model = model
        self.settings = s = settings or AffinitySettings()
        self.metrics = metrics
        self.bytes_per_token = 4.0  # English BPE prior; learned from the answers' prompt_tokens
        self.index = PrefixIndex(
            block=s.block_bytes,
            capacity_blocks=self._blocks_for(s.capacity_tokens),
            max_blocks=s.max_blocks,
        )
        self._recent: deque[str] = deque(maxlen=_RECENT)
        self._tickets: OrderedDict[str, Ticket] = OrderedDict()
        # replica -> answer id -> (prompt tokens to prefill there, monotonic time sent)
        self._prefilling: dict[str, dict[str, tuple[int, float]]] = {}
        self._rr = itertools.count()
        self.overrides = 0

    def _blocks_for(self, tokens: int) -> int:
        return max(1, int(tokens * self.bytes_per_token / self.settings.block_bytes))

    def tokens(self, blocks: int) -> int:
        return int(blocks * self.settings.block_bytes / self.bytes_per_token)

    # -- choosing --------------------------------------------------------------------------

    def order(
        self, replicas: Sequence[R], call: GatewayRequest, info: Route | None = None
    ) -> list[R]:
        """Available replicas first: the one expected to hold the longest prefix unless it is
        over its bounded load, then by load; unavailable replicas last."""
        now = time.monotonic()
        available = [r for r in replicas if r.state.available(now)]
        self._prune(available)
        down = [r for r in replicas if r not in available]
        if not available:
            return list(replicas)
        ticket = self._open_ticket(call, prompt_bytes(call), (r.id for r in available))
        matched = ticket.expected

        start = next(self._rr) % len(available)
        rotated = available[start:] + available[:start]
        recent = {r.id: 0 for r in available}
        for rid in self._recent:
            if rid in recent:
                recent[rid] += 1
        # a busy replica past its bounded share of the recent requests (a hot conversation's)
        # is the last choice for anything that is not steered to it; an idle one is not (its
        # share is history: passing it over would leave it idle while others double up)
        cap = self.settings.balance * (len(self._recent) + 1) / len(available)
        backlog = {r.id: self.prefill_backlog_s(r, now) for r in available}
        by_load = sorted(
            rotated,
            key=lambda r: (
                recent[r.id] + 1 > cap and r.state.outstanding > 0,
                r.state.outstanding,
                backlog[r.id],
                recent[r.id],
                -matched[r.id],
                self.index.held(r.id),
            ),
        )
        best = max(rotated, key=lambda r: (matched[r.id], -r.state.outstanding))
        best_bytes = matched[best.id] * self.settings.block_bytes
        reason = "no cached prefix"
        # A shared system prompt alone does not steer: it would pile every new conversation
        # onto the replicas that happen to hold it (at equal load it still breaks the tie).
        if best_bytes >= self.settings.min_cached_bytes and best_bytes > shared_lead(call):
            total = sum(r.state.outstanding for r in available)
            bound = math.ceil(self.settings.balance * (total + 1) / len(available))
            if best.state.outstanding + 1 <= bound:
                reason = "cached prefix"
                by_load.remove(best)
                by_load.insert(0, best)
            else:
                reason = "cached prefix, overloaded"
                self.overrides += 1
                if self.metrics is not None:
                    self.metrics.count_affinity_override(self.model, best.id)
        if info is not None:
            info.signals["affinity"] = {
                "expected_cached_tokens": {
                    r.id: self._expected_cached(ticket, r.id) for r in available
                },
                "prefill_backlog_s": {r.id: round(backlog[r.id], 2) for r in available},
                "reason": reason,
            }
        return by_load + down

    def expect(self, replicas: Sequence[Replica], call: GatewayRequest) -> dict[str, int]:
        """Prompt tokens each replica is expected to hold cached, for a policy that ranks
        replicas itself (`load`); the replica that then takes the request is recorded as if
        `order` had chosen it."""
        ticket = self._open_ticket(call, prompt_bytes(call), (r.id for r in replicas))
        return {rid: self._expected_cached(ticket, rid) for rid in ticket.expected}

    def _open_ticket(self, call: GatewayRequest, data: bytes, replicas: Iterable[str]) -> Ticket:
        """Match the prompt against the index and keep the decision until the answer."""
        blocks = block_hashes(data, self.settings.block_bytes)
        tail = data[len(blocks) * self.settings.block_bytes :]
        ticket = Ticket(blocks, self.index.match(blocks, replicas), len(data), tail)
        self._tickets[call.answer_id] = ticket
        self._tickets.move_to_end(call.answer_id)
        while len(self._tickets) > _TICKETS:
            self._tickets.popitem(last=False)
        return ticket

    def _expected_cached(self, ticket: Ticket, replica: str) -> int:
        """Prompt tokens `replica` is expected to hold cached (at most the whole prompt)."""
        blocks = ticket.expected.get(replica, 0)
        return min(self.tokens(blocks), self._prompt_tokens(ticket.prompt_len))

    def _prompt_tokens(self, n_bytes: int) -> int:
        return max(1, int(n_bytes / self.bytes_per_token))

    def prefill_backlog_s(self, replica: Replica, now: float | None = None) -> float:
        """Seconds of prefill the replica still has to do for requests sent to it, by the
        gateway's estimate (its measured prefill speed, the tokens it was not expected to
        hold)."""
        entries = self._prefilling.get(replica.id)
        if not entries:
            return 0.0
        now = time.monotonic() if now is None else now
        tps = max(replica.state.prefill_tps, 1.0)
        total = 0.0
        for answer_id, (tokens, at) in list(entries.items()):
            left = tokens / tps - (now - at)
            if left < -_STALE_S:
                del entries[answer_id]
            total += max(0.0, left)
        return total

    def _prune(self, available: Sequence[Replica]) -> None:
        """Forget replicas that left (DNS) or went down: whatever they held is not to be
        counted on (a node that comes back has usually restarted with an empty cache)."""
        keep = {r.id for r in available}
        for rid in self.index.replicas() - keep:
            self.index.forget(rid)
        for rid in set(self._prefilling) - keep:
            del self._prefilling[rid]

    # -- learning --------------------------------------------------------------------------

    def sending(self, replica: str, call: GatewayRequest) -> None:
        """The request goes to `replica`: what it was not expected to hold there is prefill
        work on that replica until its first token comes back."""
        ticket = self._tickets.get(call.answer_id)
        if ticket is None:
            return
        tokens = self._prompt_tokens(ticket.prompt_len) - self._expected_cached(ticket, replica)
        self.abandoned(call)  # a retry on another replica replaces the earlier attempt
        self._prefilling.setdefault(replica, {})[call.answer_id] = (tokens, time.monotonic())

    def abandoned(self, call: GatewayRequest) -> None:
        """The request's prefill is over, or will not happen where it was sent."""
        for entries in self._prefilling.values():
            entries.pop(call.answer_id, None)

    def keeps(self, call: GatewayRequest) -> bool:
        """Whether the request was routed here and its answer is still awaited (its text is
        then worth collecting for `finished`)."""
        return call.answer_id in self._tickets

    def routed(self, replica: str, call: GatewayRequest) -> None:
        """The replica took the request: it will hold the prompt's blocks. (Nothing to do for a
        request that was not ordered here: a model with one replica has no choice to make.)"""
        self.abandoned(call)
        ticket = self._tickets.get(call.answer_id)
        if ticket is None:
            return
        self.index.insert(replica, ticket.blocks)
        self._recent.append(replica)

    def finished(
        self, replica: str, call: GatewayRequest, last: object, answer: str | None = None
    ) -> None:
        """Correct the index from what the replica reported it reused, and add the answer
        (`answer`: its text, None when unknown) where the next turn will look for it. (Its
        prefill entry went with its first token: `routed`.)"""
        if not isinstance(last, Finished):
            self._tickets.pop(call.answer_id, None)
            return
        t = last.timings
        if self.metrics is not None:
            self.metrics.count_prompt_tokens(self.model, replica, t.cache_n, t.prompt_n)
        ticket = self._tickets.pop(call.answer_id, None)
        if ticket is None:
            return
        if last.prompt_tokens > 0 and ticket.prompt_len > 0:
            sample = ticket.prompt_len / last.prompt_tokens
            self.bytes_per_token = (1 - _ALPHA) * self.bytes_per_token + _ALPHA * sample
        if t.cache_n + t.prompt_n > 0:  # (an upstream without timings corrects nothing)
            self._correct(replica, ticket, t.cache_n)
        self._index_answer(replica, call, ticket, answer)

    def _correct(self, replica: str, ticket: Ticket, cache_n: int) -> None:
        """Resize the replica's share of the index from the tokens it reported cached."""
        expected = self.tokens(ticket.expected.get(replica, 0))
        slack = self.tokens(1) + self.settings.min_cached_bytes / self.bytes_per_token
        held = self.index.held(replica)
        cap = self.index.capacity.get(replica, self.index.default_capacity)
        if cache_n + slack < expected:
            # Evicted sooner than the index assumed: the node keeps less than `capacity`
            # (other clients, longer answers, a restart). Keep what was just prefilled.
            self.index.resize(replica, max(len(ticket.blocks), int(held * _SHRINK)))
        elif expected > 0 and held >= cap:
            top = self._blocks_for(self.settings.capacity_tokens)
            self.index.resize(replica, min(top, max(cap + 1, int(cap * _GROW))))

    def _index_answer(
        self, replica: str, call: GatewayRequest, ticket: Ticket, answer: str | None
    ) -> None:
        """The prompt's blocks followed by the answer's, as the next turn will send them."""
        more = continuation_bytes(call, answer) if answer is not None else None
        if not more:
            return
        chain = ticket.blocks[-1] if ticket.blocks else 0
        added = block_hashes(ticket.tail + more, self.settings.block_bytes, chain)
        if added:
            # the prompt's blocks again, first: they must not be older in the LRU than the
            # answer's, or eviction would drop the leading blocks a match starts from
            self.index.insert(replica, ticket.blocks + added)

    def describe(self) -> dict[str, Any]:
        return {
            "blocks": self.index.size,
            "bytes_per_token": round(self.bytes_per_token, 2),
            "overrides": self.overrides,
            "replicas": {
                r: {"blocks": len(lru), "capacity_blocks": self.index.capacity.get(r)}
                for r, lru in self.index.lru.items()
            },
        }


class AnswerText:
    """An answer's text as it streams through (None if it calls a tool: its next turn carries
    the call, not plain text)."""

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._plain = True

    def add(self, event: GenerationEvent) -> None:
        if isinstance(event, TextDelta):
            self._parts.append(event.text)
        elif isinstance(event, ToolCallDelta):
            self._plain = False

    @property
    def text(self) -> str | None:
        return "".join(self._parts) if self._plain else None
