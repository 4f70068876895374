"""Which publications coming back from the broker were published by this process.

With several workers on one broker, every worker receives every publication of
the topics it follows, its own included (Redis pub/sub echoes them). A fan-out
listener that does per-process work only for *other* workers' events (the
migration shim's legacy side, which the publishing worker has already run)
needs to tell the two apart without changing what goes over the broker.

The hub notes the encoded payload of each broadcast it is about to publish on a
topic it follows; the publication that comes back with the same bytes is its
own. Identical bytes from two workers are interchangeable, so matching by value
keeps the count right. The record is bounded: a publication the broker never
echoes (it lost it) is forgotten once :data:`MAX_PENDING` newer ones wait.
"""

from __future__ import annotations

from collections import OrderedDict

__all__ = ["MAX_PENDING", "OwnPublications"]

#: Publications of this process awaiting their echo, at most.
MAX_PENDING = 4096


class OwnPublications:
    """A bounded multiset of payloads this process published and has not seen back."""

    __slots__ = ("_pending", "_size")

    def __init__(self) -> None:
        self._pending: OrderedDict[bytes, int] = OrderedDict()
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def expect(self, payload: bytes) -> None:
        """``payload`` is about to be published by this process."""
        self._pending[payload] = self._pending.get(payload, 0) + 1
        self._size += 1
        while self._size > MAX_PENDING:
            _oldest, count = self._pending.popitem(last=False)
            self._size -= count

    def forget(self, payload: bytes) -> None:
        """The publish of ``payload`` failed: no echo will come."""
        self.take(payload)

    def take(self, payload: bytes) -> bool:
        """True (once per :meth:`expect`) when ``payload`` is this process's own."""
        if not self._size:
            return False
        count = self._pending.get(payload)
        if count is None:
            return False
        if count == 1:
            del self._pending[payload]
        else:
            self._pending[payload] = count - 1
        self._size -= 1
        return True
