"""Which connection is subscribed to which topic: a plain synchronous index.

The hub asks it two questions on the hot path (who subscribes to topic T, as a
ready mapping it iterates without copying ids) and updates it on
subscribe/unsubscribe/disconnect. Every update reports whether a topic gained its
first or lost its last local subscriber, which is when the broker subscription
must follow (reference counting stays here, in the core, not in the broker).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Generic, TypeVar

__all__ = ["TopicRegistry"]

T = TypeVar("T")

_EMPTY: Mapping[str, Any] = MappingProxyType({})


class TopicRegistry(Generic[T]):
    """Bidirectional index ``topic <-> connection id``, holding a value per connection.

    Invariant: ``cid in subscribers(t)`` if and only if ``t in topics_of(cid)``, and no
    topic is kept with an empty subscriber set.
    """

    def __init__(self) -> None:
        self._by_topic: dict[str, dict[str, T]] = {}
        # A tuple, not a set: most connections hold one or two topics, and a set
        # costs ~200 bytes more per connection (membership is bounded by the
        # service's max_subscriptions, and never checked on the broadcast path).
        self._by_connection: dict[str, tuple[str, ...]] = {}

    def subscribe(self, connection_id: str, value: T, topic: str) -> bool:
        """Subscribe; return True when ``topic`` just gained its first subscriber."""
        topics = self._by_connection.get(connection_id, ())
        if topic in topics:
            return False
        self._by_connection[connection_id] = (*topics, topic)
        members = self._by_topic.get(topic)
        if members is None:
            self._by_topic[topic] = {connection_id: value}
            return True
        members[connection_id] = value
        return False

    def unsubscribe(self, connection_id: str, topic: str) -> bool:
        """Unsubscribe; return True when ``topic`` just lost its last subscriber."""
        topics = self._by_connection.get(connection_id)
        if topics is None or topic not in topics:
            return False
        rest = tuple(t for t in topics if t != topic)
        if rest:
            self._by_connection[connection_id] = rest
        else:
            del self._by_connection[connection_id]
        members = self._by_topic[topic]
        del members[connection_id]
        if not members:
            del self._by_topic[topic]
            return True
        return False

    def remove(self, connection_id: str) -> list[str]:
        """Drop every subscription of a connection; return the topics left empty."""
        emptied = []
        for topic in self._by_connection.pop(connection_id, ()):
            members = self._by_topic[topic]
            del members[connection_id]
            if not members:
                del self._by_topic[topic]
                emptied.append(topic)
        return emptied

    def subscribers(self, topic: str) -> Mapping[str, T]:
        """Return the live mapping ``connection id -> value`` for ``topic``.

        The caller must not keep it across an ``await`` or mutate the registry while
        iterating it.
        """
        members = self._by_topic.get(topic)
        return _EMPTY if members is None else members

    def topics_of(self, connection_id: str) -> frozenset[str]:
        """Return the topics ``connection_id`` is subscribed to."""
        return frozenset(self._by_connection.get(connection_id, ()))

    def has_subscribers(self, topic: str) -> bool:
        return topic in self._by_topic

    def topics(self) -> list[str]:
        """Return every topic with at least one subscriber."""
        return list(self._by_topic)

    def subscription_count(self) -> int:
        return sum(len(topics) for topics in self._by_connection.values())

    def check_invariants(self) -> None:
        """Raise AssertionError if the two directions of the index disagree (for tests)."""
        for topic, members in self._by_topic.items():
            assert members, f"empty topic {topic!r} kept"
            for cid in members:
                assert topic in self._by_connection.get(cid, ()), (cid, topic)
        for cid, topics in self._by_connection.items():
            assert topics, f"connection {cid!r} kept with no topics"
            for topic in topics:
                assert cid in self._by_topic.get(topic, {}), (cid, topic)
