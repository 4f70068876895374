from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from service.registry import TopicRegistry


def test_first_and_last_subscriber_are_reported() -> None:
    registry: TopicRegistry[str] = TopicRegistry()
    assert registry.subscribe("a", "A", "t") is True
    assert registry.subscribe("b", "B", "t") is False
    assert registry.subscribe("b", "B", "t") is False
    assert dict(registry.subscribers("t")) == {"a": "A", "b": "B"}
    assert registry.unsubscribe("a", "t") is False
    assert registry.unsubscribe("b", "t") is True
    assert dict(registry.subscribers("t")) == {}
    assert registry.unsubscribe("b", "t") is False


def test_remove_reports_emptied_topics() -> None:
    registry: TopicRegistry[str] = TopicRegistry()
    registry.subscribe("a", "A", "x")
    registry.subscribe("a", "A", "y")
    registry.subscribe("b", "B", "y")
    assert registry.remove("a") == ["x"]
    assert registry.topics_of("a") == frozenset()
    assert registry.topics() == ["y"]
    registry.check_invariants()


operations = st.lists(
    st.tuples(
        st.sampled_from(["subscribe", "unsubscribe", "remove"]),
        st.sampled_from(["c1", "c2", "c3", "c4"]),
        st.sampled_from(["t1", "t2", "t3"]),
    ),
    max_size=60,
)


@given(operations)
def test_random_sequences_keep_the_index_consistent(ops: list[tuple[str, str, str]]) -> None:
    registry: TopicRegistry[str] = TopicRegistry()
    model: dict[str, set[str]] = {}
    for op, cid, topic in ops:
        before = {t for topics in model.values() for t in topics}
        if op == "subscribe":
            first = registry.subscribe(cid, cid.upper(), topic)
            model.setdefault(cid, set()).add(topic)
            assert first == (topic not in before)
        elif op == "unsubscribe":
            last = registry.unsubscribe(cid, topic)
            model.get(cid, set()).discard(topic)
            after = {t for topics in model.values() for t in topics}
            assert last == (topic in before and topic not in after)
        else:
            emptied = registry.remove(cid)
            model.pop(cid, None)
            after = {t for topics in model.values() for t in topics}
            assert set(emptied) == before - after
        registry.check_invariants()
        for c in ("c1", "c2", "c3", "c4"):
            assert registry.topics_of(c) == frozenset(model.get(c, set()))
        assert registry.subscription_count() == sum(len(t) for t in model.values())
