"""Prometheus metrics for ``/metrics``, read from ``stats()`` at scrape time.

Used by :func:`shim.ops.migration_router`; apps that serve metrics their own way
can register :class:`MigrationCollector` in their own registry.

Nothing here runs on the delivery path: a custom collector turns the service's and
the shim's counters into metric families when Prometheus scrapes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

__all__ = ["MigrationCollector", "make_registry"]


class MigrationCollector(Collector):
    """Collects from ``service_stats()`` and ``shim_stats()`` callables."""

    def __init__(
        self, service_stats: Callable[[], dict[str, Any]], shim_stats: Callable[[], dict[str, Any]]
    ) -> None:
        self._service_stats = service_stats
        self._shim_stats = shim_stats

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        service = self._service_stats()
        shim = self._shim_stats()

        connections = GaugeMetricFamily(
            "ws_connections",
            "Open WebSocket connections by endpoint and delivering path",
            labels=["endpoint", "path"],
        )
        for endpoint, info in shim.get("endpoints", {}).items():
            for path in ("legacy", "new"):
                connections.add_metric([endpoint, path], info["delivered_by"].get(path, 0))
        yield connections

        per_path = CounterMetricFamily(
            "ws_messages",
            "Frames handed to client sockets, by delivering path and outcome",
            labels=["path", "outcome"],
        )
        for path, outcomes in shim.get("delivered", {}).items():
            for outcome, value in outcomes.items():
                per_path.add_metric([path, outcome], value)
        per_path.add_metric(["new", "dropped"], service["messages_dropped"])
        yield per_path

        yield GaugeMetricFamily(
            "ws_service_connections",
            "Connections registered with the new service",
            value=service["connections"],
        )
        sent = CounterMetricFamily(
            "ws_service_messages",
            "Messages handed to sockets by the new service",
            labels=["outcome"],
        )
        sent.add_metric(["sent"], service["messages_sent"])
        sent.add_metric(["dropped"], service["messages_dropped"])
        sent.add_metric(["failed"], service["messages_failed"])
        yield sent
        yield CounterMetricFamily(
            "ws_service_published", "Broadcasts published", value=service["messages_published"]
        )
        broker = service.get("broker", {})
        yield GaugeMetricFamily(
            "ws_broker_healthy",
            "1 while the broker backend is reachable",
            value=1.0 if broker.get("healthy", True) else 0.0,
        )

        mismatches = CounterMetricFamily(
            "ws_diff_events", "Differ results by endpoint and kind", labels=["endpoint", "kind"]
        )
        for endpoint, counters in shim.get("diff", {}).items():
            for kind, value in counters.items():
                mismatches.add_metric([endpoint, kind], value)
        yield mismatches

        counters = shim.get("counters", {})
        yield CounterMetricFamily(
            "ws_flag_changes",
            "Flag changes seen by the shim",
            value=counters.get("flag_changes", 0),
        )
        yield CounterMetricFamily(
            "ws_rerouted_connections",
            "Connections moved to another stage",
            value=counters.get("rerouted_connections", 0),
        )
        untranslated = shim.get("translation", {}).get("untranslated", 0)
        yield CounterMetricFamily(
            "ws_untranslated_payloads", "Legacy payloads no rule matched", value=untranslated
        )


def make_registry(collector: MigrationCollector) -> CollectorRegistry:
    """A registry holding only ``collector`` (no process or platform collectors)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry
