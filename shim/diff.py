"""The delivery differ: what legacy delivered vs what new delivered, per connection.

GitHub Scientist's shape: the legacy manager is the control, the WebSocketService
the candidate; both sides' deliveries to a sampled connection are recorded, noise
is masked, mismatches are counted, logged (rate-limited) and kept for a report.
Pure logic: no I/O, no asyncio, the clock is passed in. The shim calls it::

    differ.open(connection_id, endpoint)               # sampling picked this connection
    differ.record(connection_id, Side.LEGACY, wire)    # on every delivery, either side
    differ.flush()                                     # periodically; returns new mismatches
    differ.close(connection_id)                        # socket closed: settle and forget
    differ.report().to_markdown()

Events arrive as standardized wire dicts (the shim translates legacy payloads first).

Matching algorithm
------------------
``record`` masks the event (:attr:`DiffConfig.masks`), fingerprints the masked copy
(BLAKE2b of orjson with sorted keys) and appends ``(arrival time, masked, fingerprint,
original)`` to that side's pending queue, in delivery order. Nothing else.

``flush`` then, for each connection:

1. **Align** the two pending queues by fingerprint as a longest common subsequence
   (common prefix, then Myers' O((N+M)D) diff, which takes the earliest of equal
   candidates, so duplicates are first-come first-matched; past 128 edits, a greedy
   first-come pairing cut down to its longest in-order subset). Aligned pairs are
   identical events delivered in the same order: ``matched``.
2. **Settle** each unaligned event older than ``settle_seconds`` (every one, with
   ``force``) against the earliest unaligned event of the other side that has
   (a) the same fingerprint: ORDER, the same event delivered out of order (one per
   event that has to move, not one per inverted pair); else (b) the same
   ``(type, topic, correlation key values)``: FIELD, with every differing path
   (recursive over dicts, lists element-wise, a length change reported at the list);
   else (c) nothing: MISSING (legacy only) or EXTRA (new only).
3. **Commit** aligned pairs up to the first unaligned event that is still young; it
   and everything after stay pending and are aligned again with what arrives next,
   so a late event still matches in order and nothing is reported before it settles.

A side holding more than ``max_pending`` events is compacted (steps 1-3 at the
current time, at most once per ``max_pending // 2`` recorded events); if it is still
full its oldest event is dropped and one OVERFLOW is reported (once per connection
and side), published by the next ``flush``.

Every mismatch is checked against :attr:`DiffConfig.expected`; a declared one is
counted under ``expected`` instead of its kind, flagged, and neither kept in the
ring nor logged. A FIELD mismatch is also expected when each of its differing paths
is covered by some FIELD declaration. Unexpected ones go to the ring of recent
mismatches and to structlog as ``diff_mismatch``, through a token bucket of
``log_per_second``; what the bucket drops is summed into one
``diff_mismatches_suppressed`` event per ``flush``/``close``.
"""

from __future__ import annotations

import bisect
import hashlib
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, Final

import orjson
import structlog

from .report import (
    ABSENT,
    COUNTER_KEYS,
    UNEXPECTED_KINDS,
    DiffReport,
    FieldDiff,
    Mismatch,
    MismatchKind,
)

__all__ = [
    "ABSENT",
    "DiffConfig",
    "DiffReport",
    "Differ",
    "ExpectedDifference",
    "FieldDiff",
    "Mismatch",
    "MismatchKind",
    "Side",
]


class Side(StrEnum):
    """Which side delivered an event: the control (legacy) or the candidate (new)."""

    LEGACY = "legacy"
    NEW = "new"


@dataclass(frozen=True)
class ExpectedDifference:
    """A declared, accepted difference: matching mismatches count as ``expected``.

    ``None`` fields match anything. ``field`` (FIELD declarations only) accepts a
    mismatch whose every differing path is ``field`` or lies under it; it may use
    ``*`` segments like masks do (``data.*.updated_at``).

    Raises :class:`ValueError` when ``field`` is given for another kind.
    """

    kind: MismatchKind
    type: str | None = None
    topic: str | None = None
    endpoint: str | None = None
    field: str | None = None
    reason: str = ""

    def __post_init__(self) -> None:
        if self.field is not None and self.kind != MismatchKind.FIELD:
            raise ValueError(f"ExpectedDifference.field only applies to FIELD, not {self.kind}")

    def matches(self, mismatch: Mismatch) -> bool:
        """True when this declaration accepts ``mismatch`` on its own."""
        if not self._matches_event(mismatch):
            return False
        if self.field is None:
            return True
        return bool(mismatch.fields) and all(self.covers(diff.path) for diff in mismatch.fields)

    def covers(self, path: str) -> bool:
        """True when ``path`` is this declaration's ``field`` or lies under it."""
        if self.field is None:
            return False
        return _path_under(path.split("."), self.field.split("."))

    def _matches_event(self, mismatch: Mismatch) -> bool:
        return (
            self.kind == mismatch.kind
            and (self.type is None or self.type == mismatch.type)
            and (self.topic is None or self.topic == mismatch.topic)
            and (self.endpoint is None or self.endpoint == mismatch.endpoint)
        )


@dataclass(frozen=True)
class DiffConfig:
    """How the differ compares. Every field is defaulted; see the module docstring.

    - ``masks``: dotted paths ignored when comparing (``"timestamp"``,
      ``"data.timestamp"``); a ``*`` segment matches any key or list index
      (``"data.*.updated_at"``). A masked key is removed, a masked list element
      replaced by ``"<masked>"`` (so list lengths still count).
    - ``correlation_keys``: ``data`` keys that identify "the same event" when pairing
      unmatched events into FIELD mismatches.
    - ``settle_seconds``: how long an unmatched event waits for its counterpart.
    - ``max_pending``: events pending per connection and side before OVERFLOW.
    - ``ring_size``: unexpected mismatches kept, with both payloads, for the report.
    - ``log_per_second``: ``diff_mismatch`` log rate (burst: one second's worth,
      at least one); ``0`` turns mismatch logging off entirely.

    Raises :class:`ValueError` on a negative duration/size or an empty mask segment.
    """

    masks: tuple[str, ...] = ("timestamp", "seq", "epoch", "id")
    expected: tuple[ExpectedDifference, ...] = ()
    correlation_keys: tuple[str, ...] = ("session_id", "model_id")
    settle_seconds: float = 2.0
    max_pending: int = 1000
    ring_size: int = 200
    log_per_second: float = 5.0

    def __post_init__(self) -> None:
        if self.settle_seconds < 0:
            raise ValueError(f"settle_seconds must be >= 0, got {self.settle_seconds}")
        if self.max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {self.max_pending}")
        if self.ring_size < 0:
            raise ValueError(f"ring_size must be >= 0, got {self.ring_size}")
        if self.log_per_second < 0:
            raise ValueError(f"log_per_second must be >= 0, got {self.log_per_second}")
        for mask in self.masks:
            if not mask or "" in mask.split("."):
                raise ValueError(f"mask {mask!r} has an empty segment")


class Differ:
    """Compares the two sides' deliveries, connection by connection (not thread-safe).

    ``clock`` returns seconds (monotonic); ``logger`` needs structlog's
    ``warning(event, **fields)`` and defaults to ``structlog.get_logger("shim.diff")``.
    """

    def __init__(
        self,
        config: DiffConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        logger: Any | None = None,
    ) -> None:
        self.config = config if config is not None else DiffConfig()
        self._clock = clock
        self._logger: Any = logger if logger is not None else structlog.get_logger("shim.diff")
        self._masks = _compile_masks(self.config.masks)
        self._masked_cache: dict[int, tuple[object, Mapping[str, Any], Any, Any]] = {}
        self._connections: dict[str, _Connection] = {}
        self._counters: dict[str, dict[str, int]] = {}
        self._ring: deque[Mismatch] = deque(maxlen=self.config.ring_size)
        self._bucket = _TokenBucket(self.config.log_per_second, clock)

    # -- the shim's calls ------------------------------------------------------------

    def open(self, connection: str, endpoint: str) -> None:
        """Start comparing ``connection``; a no-op when it is already open."""
        if connection not in self._connections:
            self._connections[connection] = _Connection(connection, endpoint)
        self._counters.setdefault(endpoint, dict.fromkeys(COUNTER_KEYS, 0))

    def record(self, connection: str, side: Side, event: Mapping[str, Any]) -> None:
        """Record one delivery. Cheap, never logs, never raises on odd events.

        Unopened connections and unknown sides are ignored. A non-mapping event is
        compared as ``{"data": event}``. ``event`` is kept, not copied: do not mutate it.
        """
        conn = self._connections.get(connection)
        index = 0 if side == Side.LEGACY else 1 if side == Side.NEW else -1
        if conn is None or index < 0:
            return
        # One broadcast records the same event object for every recipient: mask and
        # fingerprint it once (keyed by identity; the entry keeps the object alive).
        cached = self._masked_cache.get(id(event))
        if cached is not None and cached[0] is event:
            _, payload, masked, fingerprint = cached
        else:
            payload = event if isinstance(event, Mapping) else {"data": event}
            masked = _mask(payload, self._masks)
            fingerprint = _fingerprint(masked)
            if len(self._masked_cache) >= 256:
                self._masked_cache.clear()
            self._masked_cache[id(event)] = (event, payload, masked, fingerprint)
        queue = conn.pending[index]
        queue.append(_Entry(conn.next_pos[index], self._clock(), payload, masked, fingerprint))
        conn.next_pos[index] += 1
        conn.since_compaction += 1
        self._counters[conn.endpoint]["compared"] += 1
        if len(queue) > self.config.max_pending:
            self._relieve(conn, index)

    def flush(self, *, force: bool = False) -> list[Mismatch]:
        """Match what is pending; return the mismatches found since the last call.

        Without ``force`` an unmatched event younger than ``settle_seconds`` stays
        pending; with ``force`` everything is settled now (used at shutdown and by
        CI replays). Expected mismatches are returned too, flagged ``expected``.
        """
        now = self._clock()
        found: list[Mismatch] = []
        for conn in self._connections.values():
            if conn.pending[0] or conn.pending[1]:
                self._settle(conn, now, force=force)
            if conn.outbox:
                found += conn.outbox
                conn.outbox = []
        self._publish(found)
        return found

    def close(self, connection: str) -> list[Mismatch]:
        """Settle everything pending for ``connection`` now, forget it, return its mismatches."""
        conn = self._connections.pop(connection, None)
        if conn is None:
            return []
        self._settle(conn, self._clock(), force=True)
        self._publish(conn.outbox)
        return conn.outbox

    # -- results ---------------------------------------------------------------------

    def counters(self) -> dict[str, dict[str, int]]:
        """Return a copy of ``{endpoint: {counter: n}}``; keys as in :data:`COUNTER_KEYS`.

        ``compared`` counts events recorded (both sides), ``matched`` events that found
        an identical counterpart in order (two per pair), the kinds count unexpected
        mismatches, ``expected`` the declared ones.
        """
        return {endpoint: dict(counts) for endpoint, counts in self._counters.items()}

    def recent(self, limit: int = 50) -> list[Mismatch]:
        """Return up to ``limit`` most recent unexpected mismatches, oldest first."""
        return list(self._ring)[-limit:] if limit > 0 else []

    def report(self) -> DiffReport:
        """Return a snapshot: counters and every unexpected mismatch still in the ring."""
        return DiffReport(self.counters(), list(self._ring), self._clock())

    @property
    def unexpected_total(self) -> int:
        """Unexpected mismatches counted so far, all kinds and endpoints together."""
        return sum(counts[kind] for counts in self._counters.values() for kind in UNEXPECTED_KINDS)

    # -- internals -------------------------------------------------------------------

    def _relieve(self, conn: _Connection, index: int) -> None:
        # Compacting is O(pending): at most once per max_pending // 2 recorded events,
        # so a connection stuck full costs O(1) per record, not O(max_pending).
        if conn.since_compaction >= self.config.max_pending // 2:
            conn.since_compaction = 0
            self._settle(conn, self._clock(), force=False)
        queue = conn.pending[index]  # _settle replaced the queues
        while len(queue) > self.config.max_pending:
            dropped = queue.popleft()
            if not conn.overflowed[index]:
                conn.overflowed[index] = True
                side = Side.LEGACY if index == 0 else Side.NEW
                reason = (
                    f"{side.value} side had more than max_pending={self.config.max_pending}"
                    " events pending; its oldest were dropped, the comparison is incomplete"
                )
                legacy, new = (dropped, None) if index == 0 else (None, dropped)
                conn.outbox.append(
                    self._mismatch(MismatchKind.OVERFLOW, conn, legacy, new, (), reason)
                )

    def _settle(self, conn: _Connection, now: float, *, force: bool) -> None:
        """Steps 1-3 of the module docstring for one connection; mismatches to its outbox."""
        legacy, new = list(conn.pending[0]), list(conn.pending[1])
        pairs = _align([entry.fp for entry in legacy], [entry.fp for entry in new])
        settle = self.config.settle_seconds
        unaligned: tuple[_Index, _Index] | None = None
        matched = 0
        blocked = False
        for left, right in _walk(legacy, new, pairs):
            if left is not None and right is not None:
                if not blocked:
                    left.done = right.done = True
                    matched += 2
                continue
            entry = left if left is not None else right
            if entry is None or entry.done:
                continue
            if not force and now - entry.at < settle:
                blocked = True
                continue
            if unaligned is None:
                unaligned = self._index_unaligned(legacy, new, pairs)
            conn.outbox.append(self._resolve(conn, entry, left is not None, unaligned))
        self._counters[conn.endpoint]["matched"] += matched
        conn.pending = (
            deque(entry for entry in legacy if not entry.done),
            deque(entry for entry in new if not entry.done),
        )

    def _index_unaligned(
        self, legacy: list[_Entry], new: list[_Entry], pairs: list[tuple[int, int]]
    ) -> tuple[_Index, _Index]:
        aligned_left = {i for i, _ in pairs}
        aligned_right = {j for _, j in pairs}
        keys = self.config.correlation_keys
        return (
            _Index((e for i, e in enumerate(legacy) if i not in aligned_left), keys),
            _Index((e for j, e in enumerate(new) if j not in aligned_right), keys),
        )

    def _resolve(
        self, conn: _Connection, entry: _Entry, is_legacy: bool, unaligned: tuple[_Index, _Index]
    ) -> Mismatch:
        other = unaligned[1 if is_legacy else 0]
        entry.done = True
        partner = other.take_fp(entry.fp)
        if partner is None:
            partner = other.take_key(entry.key(self.config.correlation_keys))
            kind = MismatchKind.FIELD
        else:
            kind = MismatchKind.ORDER
        if partner is None:
            if is_legacy:
                return self._mismatch(
                    MismatchKind.MISSING, conn, entry, None, (), "delivered by legacy only"
                )
            return self._mismatch(
                MismatchKind.EXTRA, conn, None, entry, (), "delivered by new only"
            )
        partner.done = True
        left, right = (entry, partner) if is_legacy else (partner, entry)
        if kind is MismatchKind.ORDER:
            reason = (
                f"identical event delivered out of order: position {left.pos} on legacy,"
                f" {right.pos} on new"
            )
            return self._mismatch(kind, conn, left, right, (), reason)
        fields = _field_diffs(left.masked, right.masked)
        reason = f"{len(fields)} field{'s' if len(fields) != 1 else ''} differ"
        return self._mismatch(kind, conn, left, right, fields, reason)

    def _mismatch(
        self,
        kind: MismatchKind,
        conn: _Connection,
        legacy: _Entry | None,
        new: _Entry | None,
        fields: tuple[FieldDiff, ...],
        reason: str,
    ) -> Mismatch:
        source = legacy if legacy is not None else new
        event = source.event if source is not None else {}
        draft = Mismatch(
            kind=kind,
            connection=conn.name,
            endpoint=conn.endpoint,
            type=_text(event.get("type")) or "",
            topic=_text(event.get("topic")),
            legacy=None if legacy is None else legacy.event,
            new=None if new is None else new.event,
            fields=fields,
            reason=reason,
            at=self._clock(),
        )
        return self._classify(draft)

    def _classify(self, draft: Mismatch) -> Mismatch:
        declared = self.config.expected
        for declaration in declared:
            if declaration.matches(draft):
                return replace(draft, expected=True, reason=declaration.reason or draft.reason)
        if draft.kind is not MismatchKind.FIELD or not draft.fields:
            return draft
        # Several FIELD declarations may together cover every differing path.
        reasons: list[str] = []
        for diff in draft.fields:
            cover = next(
                (d for d in declared if d._matches_event(draft) and d.covers(diff.path)), None
            )
            if cover is None:
                return draft
            if cover.reason and cover.reason not in reasons:
                reasons.append(cover.reason)
        return replace(draft, expected=True, reason="; ".join(reasons) or draft.reason)

    def _publish(self, mismatches: Iterable[Mismatch]) -> None:
        suppressed = 0
        for mismatch in mismatches:
            counts = self._counters[mismatch.endpoint]
            if mismatch.expected:
                counts["expected"] += 1
                continue
            counts[mismatch.kind.value] += 1
            self._ring.append(mismatch)
            if self._bucket.take():
                self._logger.warning(
                    "diff_mismatch",
                    kind=mismatch.kind.value,
                    endpoint=mismatch.endpoint,
                    connection=mismatch.connection,
                    type=mismatch.type,
                    topic=mismatch.topic,
                    fields=[diff.path for diff in mismatch.fields],
                    reason=mismatch.reason,
                )
            else:
                suppressed += 1
        if suppressed and self.config.log_per_second > 0:
            self._logger.warning("diff_mismatches_suppressed", count=suppressed)


# -- per-connection state ------------------------------------------------------------


class _Entry:
    """One recorded delivery; ``pos`` is its index in its side's delivery order."""

    __slots__ = ("_key", "at", "done", "event", "fp", "masked", "pos")

    def __init__(
        self, pos: int, at: float, event: Mapping[str, Any], masked: Mapping[str, Any], fp: bytes
    ) -> None:
        self.pos = pos
        self.at = at
        self.event = event
        self.masked = masked
        self.fp = fp
        self.done = False
        self._key: tuple[Any, ...] | None = None

    def key(self, correlation_keys: tuple[str, ...]) -> tuple[Any, ...]:
        """``(type, topic, correlation values)`` of the masked event; absent values are None."""
        if self._key is None:
            data = self.masked.get("data")
            values = tuple(
                _canonical(data[name]) if isinstance(data, Mapping) and name in data else None
                for name in correlation_keys
            )
            self._key = (
                _canonical(self.masked.get("type")),
                _canonical(self.masked.get("topic")),
                values,
            )
        return self._key


class _Connection:
    __slots__ = (
        "endpoint",
        "name",
        "next_pos",
        "outbox",
        "overflowed",
        "pending",
        "since_compaction",
    )

    def __init__(self, name: str, endpoint: str) -> None:
        self.name = name
        self.endpoint = endpoint
        self.pending: tuple[deque[_Entry], deque[_Entry]] = (deque(), deque())
        self.next_pos = [0, 0]
        self.overflowed = [False, False]
        self.outbox: list[Mismatch] = []
        self.since_compaction = 0


class _Index:
    """One side's unaligned events by fingerprint and by correlation key, earliest first.

    Built lazily: most flushes settle nothing. Entries already ``done`` are skipped.
    """

    def __init__(self, entries: Iterable[_Entry], correlation_keys: tuple[str, ...]) -> None:
        self._entries = list(entries)
        self._correlation_keys = correlation_keys
        self._by_fp: dict[bytes, deque[_Entry]] | None = None
        self._by_key: dict[tuple[Any, ...], deque[_Entry]] | None = None

    def take_fp(self, fp: bytes) -> _Entry | None:
        """Remove and return the earliest pending entry with fingerprint ``fp``."""
        if self._by_fp is None:
            self._by_fp = {}
            for entry in self._entries:
                self._by_fp.setdefault(entry.fp, deque()).append(entry)
        return _take(self._by_fp.get(fp))

    def take_key(self, key: tuple[Any, ...]) -> _Entry | None:
        """Remove and return the earliest pending entry with correlation key ``key``."""
        if self._by_key is None:
            self._by_key = {}
            for entry in self._entries:
                self._by_key.setdefault(entry.key(self._correlation_keys), deque()).append(entry)
        return _take(self._by_key.get(key))


def _take(queue: deque[_Entry] | None) -> _Entry | None:
    while queue:
        entry = queue.popleft()
        if not entry.done:
            return entry
    return None


class _TokenBucket:
    """``rate`` tokens per second on ``clock``, holding at most one second's worth (>= 1)."""

    def __init__(self, rate: float, clock: Callable[[], float]) -> None:
        self._rate = rate
        self._capacity = max(1.0, rate) if rate > 0 else 0.0
        self._tokens = self._capacity
        self._clock = clock
        self._last: float | None = None

    def take(self) -> bool:
        if self._rate <= 0:
            return False
        now = self._clock()
        if self._last is not None:
            self._tokens = min(
                self._capacity, self._tokens + max(0.0, now - self._last) * self._rate
            )
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


# -- masking and fingerprints --------------------------------------------------------

#: What a masked list element is replaced by (removing it would shift the indexes).
MASKED: Final = "<masked>"


class _MaskNode:
    """A trie of mask paths; ``*`` children are folded into their siblings at compile time."""

    __slots__ = ("children", "drop", "indexes", "star")

    def __init__(self) -> None:
        self.children: dict[str, _MaskNode] = {}
        self.drop = False
        self.star: _MaskNode | None = None
        self.indexes = False


def _compile_masks(paths: Iterable[str]) -> _MaskNode:
    root = _MaskNode()
    for path in paths:
        node = root
        for segment in path.split("."):
            node = node.children.setdefault(segment, _MaskNode())
        node.drop = True
    _fold(root)
    return root


def _merge(target: _MaskNode, source: _MaskNode) -> None:
    target.drop = target.drop or source.drop
    for segment, child in source.children.items():
        _merge(target.children.setdefault(segment, _MaskNode()), child)


def _fold(node: _MaskNode) -> None:
    node.star = node.children.get("*")
    if node.star is not None:
        for segment, child in node.children.items():
            if segment != "*":
                _merge(child, node.star)
    node.indexes = node.star is not None or any(s.isdigit() for s in node.children)
    for child in node.children.values():
        _fold(child)


def _mask(value: Any, node: _MaskNode) -> Any:
    """Return ``value`` without the masked paths; unchanged parts are shared, not copied."""
    if not node.children:
        return value
    if isinstance(value, Mapping):
        out: dict[Any, Any] | None = None
        keys: Iterable[Any] = list(value) if node.star is not None else node.children
        for key in keys:
            child = node.children.get(key, node.star) if isinstance(key, str) else node.star
            if child is None or key not in value:
                continue
            if child.drop:
                out = dict(value) if out is None else out
                del out[key]
                continue
            old = value[key]
            masked = _mask(old, child)
            if masked is not old:
                out = dict(value) if out is None else out
                out[key] = masked
        return value if out is None else out
    if isinstance(value, list | tuple) and node.indexes:
        items: list[Any] | None = None
        for index, old in enumerate(value):
            child = node.children.get(str(index), node.star)
            if child is None:
                continue
            masked = MASKED if child.drop else _mask(old, child)
            if masked is not old:
                items = list(value) if items is None else items
                items[index] = masked
        return value if items is None else items
    return value


_OPTIONS: Final = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS


def _json_default(value: Any) -> Any:
    if isinstance(value, set | frozenset):
        return sorted(repr(item) for item in value)
    if isinstance(value, Mapping):
        return dict(value)
    return repr(value)


def _canonical(value: Any) -> bytes:
    """Canonical JSON bytes of ``value`` (sorted keys); never raises."""
    try:
        return orjson.dumps(value, default=_json_default, option=_OPTIONS)
    except (TypeError, ValueError):
        # Integers past 64 bits, circular structures: fall back to a sorted repr.
        return b"\x00" + _stable_repr(value, [10_000]).encode("utf-8", "backslashreplace")


def _stable_repr(value: Any, budget: list[int]) -> str:
    budget[0] -= 1
    if budget[0] < 0:
        return "..."
    if isinstance(value, Mapping):
        items = sorted(
            f"{_stable_repr(k, budget)}:{_stable_repr(v, budget)}" for k, v in value.items()
        )
        return "{" + ",".join(items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_stable_repr(item, budget) for item in value) + "]"
    return repr(value)


def _fingerprint(masked: Any) -> bytes:
    return hashlib.blake2b(_canonical(masked), digest_size=16).digest()


# -- field differences ---------------------------------------------------------------

_MAX_DEPTH: Final = 64
_PLAIN: Final = frozenset({str, int, bool, type(None)})


def _same(a: Any, b: Any) -> bool:
    """Equal as the fingerprint sees them (1 != 1.0 != True, NaN == NaN)."""
    if a is b:
        return True
    kind = type(a)
    if kind is type(b) and kind in _PLAIN:
        return bool(a == b)
    return _canonical(a) == _canonical(b)


def _field_diffs(legacy: Any, new: Any) -> tuple[FieldDiff, ...]:
    out: list[FieldDiff] = []
    _diff(legacy, new, [], out)
    if not out:
        # Fingerprints differ but no path does (exotic keys): report the whole event.
        out.append(FieldDiff("$", legacy, new))
    return tuple(out)


def _diff(a: Any, b: Any, path: list[str], out: list[FieldDiff]) -> None:
    if len(path) < _MAX_DEPTH and isinstance(a, Mapping) and isinstance(b, Mapping):
        keys = list(a) + [key for key in b if key not in a]
        for key in sorted(keys, key=str):
            here = [*path, str(key)]
            if key not in b:
                out.append(FieldDiff(".".join(here), a[key], ABSENT))
            elif key not in a:
                out.append(FieldDiff(".".join(here), ABSENT, b[key]))
            else:
                _diff(a[key], b[key], here, out)
        return
    if len(path) < _MAX_DEPTH and isinstance(a, list | tuple) and isinstance(b, list | tuple):
        if len(a) != len(b):
            out.append(FieldDiff(".".join(path) or "$", list(a), list(b)))
            return
        for index, (left, right) in enumerate(zip(a, b, strict=True)):
            _diff(left, right, [*path, str(index)], out)
        return
    if not _same(a, b):
        out.append(FieldDiff(".".join(path) or "$", a, b))


def _path_under(path: Sequence[str], pattern: Sequence[str]) -> bool:
    return len(path) >= len(pattern) and all(
        want in ("*", got) for want, got in zip(pattern, path, strict=False)
    )


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return str(value)


# -- alignment -----------------------------------------------------------------------

#: Past this many edits between the pending queues, Myers gives way to a greedy pairing.
_MAX_EDITS: Final = 128


def _align(a: Sequence[bytes], b: Sequence[bytes]) -> list[tuple[int, int]]:
    """Return index pairs of a longest common subsequence of ``a`` and ``b``, in order."""
    start = 0
    limit = min(len(a), len(b))
    while start < limit and a[start] == b[start]:
        start += 1
    pairs = [(i, i) for i in range(start)]
    rest_a, rest_b = a[start:], b[start:]
    middle = _myers(rest_a, rest_b, _MAX_EDITS)
    if middle is None:
        middle = _greedy(rest_a, rest_b)
    pairs += [(start + i, start + j) for i, j in middle]
    return pairs


def _myers(a: Sequence[bytes], b: Sequence[bytes], max_edits: int) -> list[tuple[int, int]] | None:
    """Myers' diff: the matched pairs of a shortest edit script, ``None`` past ``max_edits``."""
    n, m = len(a), len(b)
    if n == 0 or m == 0:
        return []
    furthest = {1: 0}
    trace: list[dict[int, int]] = []
    for edits in range(min(max_edits, n + m) + 1):
        trace.append(dict(furthest))
        for k in range(-edits, edits + 1, 2):
            if k == -edits or (k != edits and furthest[k - 1] < furthest[k + 1]):
                x = furthest[k + 1]
            else:
                x = furthest[k - 1] + 1
            y = x - k
            while x < n and y < m and a[x] == b[y]:
                x += 1
                y += 1
            furthest[k] = x
            if x >= n and y >= m:
                return _backtrack(trace, n, m)
    return None


def _backtrack(trace: list[dict[int, int]], n: int, m: int) -> list[tuple[int, int]]:
    x, y = n, m
    pairs: list[tuple[int, int]] = []
    for edits in range(len(trace) - 1, -1, -1):
        furthest = trace[edits]
        k = x - y
        down = k == -edits or (k != edits and furthest[k - 1] < furthest[k + 1])
        prev_k = k + 1 if down else k - 1
        prev_x = furthest[prev_k]
        prev_y = prev_x - prev_k
        while x > prev_x and y > prev_y:
            x -= 1
            y -= 1
            pairs.append((x, y))
        x, y = prev_x, prev_y
    pairs.reverse()
    return pairs


def _greedy(a: Sequence[bytes], b: Sequence[bytes]) -> list[tuple[int, int]]:
    """First-come first-matched pairs, cut down to their longest in-order subset."""
    waiting: dict[bytes, deque[int]] = {}
    for j, fp in enumerate(b):
        waiting.setdefault(fp, deque()).append(j)
    candidates: list[tuple[int, int]] = []
    for i, fp in enumerate(a):
        queue = waiting.get(fp)
        if queue:
            candidates.append((i, queue.popleft()))
    # Longest increasing subsequence of the j's (patience sorting), i already increasing.
    tails: list[int] = []
    tail_at: list[int] = []
    parent = [-1] * len(candidates)
    for at, (_, j) in enumerate(candidates):
        slot = bisect.bisect_left(tails, j)
        parent[at] = tail_at[slot - 1] if slot else -1
        if slot == len(tails):
            tails.append(j)
            tail_at.append(at)
        else:
            tails[slot] = j
            tail_at[slot] = at
    kept: list[tuple[int, int]] = []
    at = tail_at[-1] if tail_at else -1
    while at >= 0:
        kept.append(candidates[at])
        at = parent[at]
    kept.reverse()
    return kept


def _walk(
    legacy: list[_Entry], new: list[_Entry], pairs: list[tuple[int, int]]
) -> Iterable[tuple[_Entry | None, _Entry | None]]:
    """Yield the alignment in delivery order: pairs, and unaligned events in between."""
    i = j = 0
    for pi, pj in [*pairs, (len(legacy), len(new))]:
        while i < pi:
            yield legacy[i], None
            i += 1
        while j < pj:
            yield None, new[j]
            j += 1
        if pi < len(legacy):
            yield legacy[pi], new[pj]
            i, j = pi + 1, pj + 1
