"""Turn raw session results into rows, ratios vs legacy, target verdicts, JSON and a PNG.

Every ratio compares medians from the same run: a variant against ``legacy`` at
the same N and compression setting (or against the named same-stack baseline for
the targets that ask for one).
"""

from __future__ import annotations

import contextlib
import math
import platform
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .stats import Summary, json_float, ratio, summarize
from .variants import BASELINE, STACKS, VARIANTS

__all__ = [
    "Row",
    "Target",
    "aggregate",
    "evaluate_targets",
    "machine_info",
    "render_table",
    "render_targets",
    "to_json",
    "write_png",
]

Key = tuple[str, int, bool]

#: A client busier than this share of one core may itself have been the limit.
CLIENT_BOUND = 0.85


@dataclass(frozen=True)
class Row:
    """One variant at one N and compression setting, over all its repetitions."""

    variant: str
    n: int
    deflate: bool
    sessions: int
    bursts: int
    expected: int
    delivered: tuple[int, ...]
    complete: bool
    throughput: Summary
    p50: Summary
    p99: Summary
    cpu_per_msg: Summary
    capacity: Summary
    memory: Summary
    stall_p99: Summary
    stall_delivered: float | None
    stall_filled: float | None
    stall_runs: int
    client_cpu_share: float | None
    server_cpu_share: float | None
    negotiated_deflate: float
    mean_bytes: float | None
    mean_wire_bytes: float | None
    errors: tuple[str, ...]

    @property
    def key(self) -> Key:
        return (self.variant, self.n, self.deflate)

    @property
    def client_bound(self) -> bool:
        """True when the client used most of a core: the server may not have been the limit."""
        return self.client_cpu_share is not None and self.client_cpu_share >= CLIENT_BOUND

    @property
    def stall_ratio(self) -> float:
        return ratio(self.stall_p99.median, self.p99.median)

    def to_dict(self) -> dict[str, Any]:
        variant = VARIANTS[self.variant]
        return {
            "variant": self.variant,
            "kind": variant.kind,
            "route": variant.route,
            "stack": variant.stack,
            "stage": variant.stage,
            "n": self.n,
            "deflate_offered": self.deflate,
            "deflate_negotiated_share": self.negotiated_deflate,
            "sessions": self.sessions,
            "bursts": self.bursts,
            "expected_per_burst": self.expected,
            "delivered": list(self.delivered),
            "complete": self.complete,
            "throughput_msgs_per_s": self.throughput.to_dict(),
            "latency_p50_s": self.p50.to_dict(),
            "latency_p99_s": self.p99.to_dict(),
            "server_cpu_per_msg_s": self.cpu_per_msg.to_dict(),
            "server_capacity_msgs_per_s": self.capacity.to_dict(),
            "rss_per_connection_bytes": self.memory.to_dict(),
            "stall_p99_s": self.stall_p99.to_dict(),
            "stall_delivered_fraction": self.stall_delivered,
            "stall_backpressured_fraction": self.stall_filled,
            "stall_runs": self.stall_runs,
            "stall_p99_vs_no_stall": json_float(self.stall_ratio),
            "client_cpu_share_max": self.client_cpu_share,
            "client_bound": self.client_bound,
            "server_cpu_share_median": self.server_cpu_share,
            "mean_message_bytes": self.mean_bytes,
            "mean_wire_bytes_per_message": self.mean_wire_bytes,
            "errors": list(self.errors),
        }


def _num(value: Any) -> float | None:
    if value is None:
        return None
    if value == "inf":
        return math.inf
    return float(value)


def aggregate(results: Iterable[dict[str, Any]]) -> list[Row]:
    """Group per-session results by (variant, N, compression) and summarize them."""
    groups: dict[Key, list[dict[str, Any]]] = {}
    for result in results:
        groups.setdefault((result["variant"], result["n"], result["deflate"]), []).append(result)
    rows = []
    for (variant, n, deflate), group in groups.items():
        bursts = [b for r in group for b in r.get("bursts") or []]
        stalls = [s for r in group for s in r.get("stalls") or []]
        memories = [r["memory"]["per_connection"] for r in group if "memory" in r]
        shares = [b["client_cpu_share"] for b in bursts if b.get("client_cpu_share") is not None]
        server_shares = [b["server_cpu_share"] for b in bursts if b.get("server_cpu_share")]
        sizes = [b["mean_bytes"] for b in bursts if b.get("mean_bytes")]
        wires = [b["mean_wire_bytes"] for b in bursts if b.get("mean_wire_bytes")]
        stall_fractions = [s["delivered"] / s["expected"] for s in stalls if s["expected"]]
        filled = [
            s["fill"]["paused"] / s["fill"]["sockets"] for s in stalls if s["fill"]["sockets"]
        ]
        cpu = [_num(b.get("server_cpu_per_msg")) for b in bursts]
        negotiated = [r.get("negotiated_deflate", 0) / n for r in group]
        rows.append(
            Row(
                variant=variant,
                n=n,
                deflate=deflate,
                sessions=len(group),
                bursts=len(bursts),
                expected=bursts[0]["expected"] if bursts else 0,
                delivered=tuple(b["delivered"] for b in bursts),
                complete=bool(bursts) and all(b["complete"] for b in bursts),
                throughput=summarize(_num(b.get("throughput")) for b in bursts),
                p50=summarize(_num(b.get("p50")) for b in bursts),
                p99=summarize(_num(b.get("p99")) for b in bursts),
                cpu_per_msg=summarize(cpu),
                capacity=summarize(1 / c if c else None for c in cpu),
                memory=summarize(memories),
                stall_p99=summarize(_num(s.get("p99")) for s in stalls),
                stall_delivered=min(stall_fractions) if stall_fractions else None,
                stall_filled=min(filled) if filled else None,
                stall_runs=len(stalls),
                client_cpu_share=max(shares) if shares else None,
                server_cpu_share=summarize(server_shares).median if server_shares else None,
                negotiated_deflate=sum(negotiated) / len(negotiated) if negotiated else 0.0,
                mean_bytes=sum(sizes) / len(sizes) if sizes else None,
                mean_wire_bytes=sum(wires) / len(wires) if wires else None,
                errors=tuple(e for r in group for e in r.get("errors", [])),
            )
        )
    order = {name: i for i, name in enumerate(VARIANTS)}
    rows.sort(key=lambda r: (r.n, r.deflate, order.get(r.variant, 99)))
    return rows


# -- targets ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One promise of the migration guide, checked on one pair of variants."""

    name: str
    subject: str
    baseline: str
    metric: str
    value: float
    threshold: float
    higher_is_better: bool
    n: int
    deflate: bool
    note: str = ""

    @property
    def met(self) -> bool | None:
        if math.isnan(self.value):
            return None
        if self.higher_is_better:
            return self.value >= self.threshold
        return self.value <= self.threshold

    @property
    def gap(self) -> str:
        """How far from the threshold, in words (empty when met)."""
        if self.met is not False:
            return ""
        if math.isinf(self.value):
            return "unbounded: the others' messages did not arrive"
        if self.higher_is_better:
            return f"needs {self.threshold / self.value:.2f}x more"
        return f"{self.value / self.threshold:.2f}x over"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "subject": self.subject,
            "baseline": self.baseline,
            "metric": self.metric,
            "value": json_float(self.value),
            "threshold": self.threshold,
            "higher_is_better": self.higher_is_better,
            "met": self.met,
            "gap": self.gap,
            "n": self.n,
            "deflate_offered": self.deflate,
            "note": self.note,
        }


def _target_n(rows: Sequence[Row], deflate: bool) -> int | None:
    ns = sorted({r.n for r in rows if r.deflate is deflate})
    if not ns:
        return None
    return 5000 if 5000 in ns else ns[-1]


def evaluate_targets(rows: Sequence[Row]) -> list[Target]:
    """The issue's targets at N = 5,000 (else the largest N run), compression off."""
    targets: list[Target] = []
    by_key = {r.key: r for r in rows}
    for deflate in (False, True):
        n = _target_n(rows, deflate)
        if n is None:
            continue

        def get(name: str, n: int = n, deflate: bool = deflate) -> Row | None:
            return by_key.get((name, n, deflate))

        def pair(
            name: str,
            subject: str,
            baseline: str,
            metric: str,
            threshold: float,
            higher: bool,
            note: str = "",
            n: int = n,
            deflate: bool = deflate,
        ) -> None:
            a, b = get(subject), get(baseline)
            if a is None or b is None:
                return
            value = ratio(_metric(a, metric).median, _metric(b, metric).median)
            if metric == "throughput":
                capacity = ratio(a.capacity.median, b.capacity.median)
                bound = [r.variant for r in (a, b) if r.client_bound]
                note = f"server-CPU capacity ratio {_x(capacity)}"
                if bound:
                    note += f"; client-bound: {', '.join(bound)} (so the measured ratio is not"
                    note += " the servers')"
            targets.append(
                Target(name, subject, baseline, metric, value, threshold, higher, n, deflate, note)
            )

        if not deflate:
            for subject, baseline in (
                ("service", "legacy"),
                ("service-lean", "legacy"),
                ("service-tuned", "legacy-tuned"),
            ):
                pair(
                    "throughput >= 1.6x same-stack legacy",
                    subject,
                    baseline,
                    "throughput",
                    1.6,
                    True,
                )
            for subject in ("service", "service-tuned"):
                pair("throughput >= 0.9x raw websockets", subject, "raw", "throughput", 0.9, True)
            pair(
                "shadow CPU/msg <= 1.3x legacy (differ at 100 %)",
                "shim-shadow",
                "legacy",
                "cpu_per_msg",
                1.3,
                False,
            )
            for subject in ("service", "service-lean", "service-tuned"):
                row = get(subject)
                if row is not None and row.stall_runs:
                    targets.append(
                        Target(
                            "10 % stalled: others' p99 <= 1.5x no-stall",
                            subject,
                            subject,
                            "p99",
                            row.stall_ratio,
                            1.5,
                            False,
                            n,
                            deflate,
                        )
                    )
            pair(
                "the guide's endpoint: throughput >= 1.6x legacy",
                "service-guide",
                "legacy",
                "throughput",
                1.6,
                True,
            )
            for subject in ("service", "service-lean", "service-tuned"):
                pair(
                    "memory per idle connection <= 0.6x legacy",
                    subject,
                    "legacy",
                    "memory",
                    0.6,
                    False,
                )
        else:
            # Clients offer permessage-deflate as browsers do, server defaults otherwise.
            for subject in ("service", "service-lean", "service-guide"):
                pair(
                    "deflate: throughput >= 2.5x legacy", subject, "legacy", "throughput", 2.5, True
                )
                pair(
                    "deflate: throughput >= 1.5x raw websockets",
                    subject,
                    "raw",
                    "throughput",
                    1.5,
                    True,
                )
            pair(
                "deflate: memory per idle connection <= 0.5x legacy",
                "service-lean",
                "legacy",
                "memory",
                0.5,
                False,
            )
            for subject in ("service", "service-lean"):
                targets.extend(_compressed_cpu_target(by_key, subject, n))
    return targets


def _compressed_cpu_target(by_key: dict[Key, Row], subject: str, n: int) -> list[Target]:
    """Server CPU per message with deflate negotiated over the same variant without it."""
    compressed, plain = by_key.get((subject, n, True)), by_key.get((subject, n, False))
    if compressed is None or plain is None:
        return []
    value = ratio(compressed.cpu_per_msg.median, plain.cpu_per_msg.median)
    return [
        Target(
            "deflate: CPU/msg <= 1.3x the uncompressed fast path",
            subject,
            f"{subject} (compression off)",
            "cpu_per_msg",
            value,
            1.3,
            False,
            n,
            True,
        )
    ]


def _metric(row: Row, metric: str) -> Summary:
    summary: Summary = getattr(row, metric)
    return summary


# -- rendering ---------------------------------------------------------------------------


def _fmt(summary: Summary, scale: float, digits: int) -> str:
    if summary.n == 0:
        return "-"

    def one(value: float) -> str:
        if math.isinf(value):
            return "∞"
        return f"{value * scale:,.{digits}f}"

    if summary.n == 1 or summary.low == summary.high:
        return one(summary.median)
    return f"{one(summary.median)} [{one(summary.low)}..{one(summary.high)}]"


def _x(value: float) -> str:
    if math.isnan(value):
        return "-"
    if math.isinf(value):
        return "∞"
    return f"{value:.2f}x"


def render_table(rows: Sequence[Row]) -> str:
    """A Markdown table: medians [min-max] and ratios vs legacy at the same N/compression."""
    by_key = {r.key: r for r in rows}
    header = (
        "| variant | N | deflate | delivered | msgs/s | x legacy | p50 ms | p99 ms "
        "| RSS/conn KiB | x legacy | server CPU µs/msg | x legacy | 10 % stalled: p99 ms "
        "| stalled/no-stall | bytes/msg: wire (payload) | client CPU |"
    )
    lines = [header, _separator(header)]
    for row in rows:
        base = by_key.get((BASELINE, row.n, row.deflate))
        deflate = "offered" if row.deflate else "off"
        if row.deflate and row.negotiated_deflate < 0.5:
            deflate = "declined"
        delivered = "/".join(str(d) for d in sorted(set(row.delivered))) or "-"
        expected = f"{delivered} of {row.expected}" if row.expected else "-"
        if row.stall_runs and row.stall_delivered is not None and row.stall_delivered < 0.99:
            stall = f"blocked ({row.stall_delivered:.1%} delivered)"
        else:
            stall = _fmt(row.stall_p99, 1e3, 1)
        if row.stall_filled is not None and row.stall_filled < 1:
            stall += " †"
        client = f"{row.client_cpu_share:.0%}" if row.client_cpu_share is not None else "-"
        if row.client_bound:
            client += " *"
        lines.append(
            "| "
            + " | ".join(
                [
                    row.variant,
                    f"{row.n:,}",
                    deflate,
                    expected,
                    _fmt(row.throughput, 1, 0),
                    _x(ratio(row.throughput.median, base.throughput.median)) if base else "-",
                    _fmt(row.p50, 1e3, 1),
                    _fmt(row.p99, 1e3, 1),
                    _fmt(row.memory, 1 / 1024, 1),
                    _x(ratio(row.memory.median, base.memory.median)) if base else "-",
                    _fmt(row.cpu_per_msg, 1e6, 2),
                    _x(ratio(row.cpu_per_msg.median, base.cpu_per_msg.median)) if base else "-",
                    stall,
                    _x(row.stall_ratio) if row.stall_runs else "-",
                    _bytes(row),
                    client,
                ]
            )
            + " |"
        )
    lines += ["", LEGEND]
    return "\n".join(lines)


def _bytes(row: Row) -> str:
    if row.mean_bytes is None:
        return "-"
    wire = "-" if row.mean_wire_bytes is None else f"{row.mean_wire_bytes:,.0f}"
    return f"{wire} ({row.mean_bytes:,.0f})"


LEGEND = (
    "Medians over the repetitions, [min-max] when they differ; ratios are medians over "
    "legacy's at the same N and compression. deflate: off (not offered), offered and "
    "accepted, or declined by the server. Latency = receive time - sent_at, ms. "
    "RSS/conn: server RSS growth over N idle subscribed connections. "
    "Stalled: 10 % of clients stop reading with full buffers; p99 of the other 90 % "
    "(blocked: fewer than 99 % of their messages arrived before the deadline). "
    "bytes/msg: what one delivered message took on the wire (frame header and payload, "
    "compressed when deflate was negotiated), then its payload uncompressed. "
    "† the fill did not bring every stalled connection into backpressure. "
    f"* client above {CLIENT_BOUND:.0%} of a core: msgs/s may be the client's limit; "
    "compare server CPU µs/msg instead."
)


def _separator(header: str) -> str:
    return "|" + "---|" * (header.count("|") - 1)


def render_targets(targets: Sequence[Target]) -> str:
    """A Markdown table of the targets with met/missed and the gap."""
    lines = [
        "| target | N | deflate | subject | vs | ratio | threshold | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for t in targets:
        verdict = {True: "met", False: f"MISSED ({t.gap})", None: "not measured"}[t.met]
        if t.note:
            verdict += f"; {t.note}"
        vs = "no stall" if t.subject == t.baseline else t.baseline
        lines.append(
            f"| {t.name} | {t.n:,} | {'offered' if t.deflate else 'off'} | {t.subject} | {vs} "
            f"| {_x(t.value)} | {'≥' if t.higher_is_better else '≤'} {t.threshold}x "
            f"| {verdict} |"
        )
    return "\n".join(lines)


def machine_info() -> dict[str, Any]:
    import os

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }
    with contextlib.suppress(OSError):
        info["loadavg"] = os.getloadavg()
    for module in ("uvicorn", "websockets", "starlette", "fastapi", "picows", "uvloop"):
        try:
            from importlib.metadata import version

            info[module] = version(module)
        except Exception:
            info[module] = None
    return info


def to_json(
    rows: Sequence[Row],
    targets: Sequence[Target],
    results: Sequence[dict[str, Any]],
    meta: dict[str, Any],
) -> dict[str, Any]:
    return {
        "meta": meta,
        "stacks": {
            name: {"flags": stack.cli_flags(), "note": stack.note} for name, stack in STACKS.items()
        },
        "variants": {
            name: {"kind": v.kind, "route": v.route, "stack": v.stack, "stage": v.stage}
            for name, v in VARIANTS.items()
        },
        "rows": [row.to_dict() for row in rows],
        "targets": [t.to_dict() for t in targets],
        "sessions": list(results),
    }


def write_png(rows: Sequence[Row], path: Path) -> bool:
    """Throughput, server CPU, latency and memory per variant; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    combos = sorted({(r.n, r.deflate) for r in rows})
    variants = [v for v in VARIANTS if any(r.variant == v for r in rows)]
    by_key = {r.key: r for r in rows}
    fig, axes = plt.subplots(4, 1, figsize=(max(8, 1.1 * len(variants) + 3), 14))
    width = 0.8 / max(1, len(combos))
    panels = [
        ("throughput", 1.0, "delivered msgs/s (median, min-max)", False),
        ("cpu_per_msg", 1e6, "server CPU per delivered message, µs", False),
        ("p99", 1e3, "p99 delivery latency, ms (dots: p50)", True),
        ("memory", 1 / 1024, "server RSS per idle connection, KiB", False),
    ]
    for ax, (metric, scale, title, log) in zip(axes, panels, strict=True):
        for i, (n, deflate) in enumerate(combos):
            xs, heights, lows, highs, p50s = [], [], [], [], []
            for j, variant in enumerate(variants):
                row = by_key.get((variant, n, deflate))
                if row is None:
                    continue
                summary: Summary = getattr(row, metric)
                if summary.n == 0 or not math.isfinite(summary.median):
                    continue
                x = j + (i - (len(combos) - 1) / 2) * width
                xs.append(x)
                heights.append(summary.median * scale)
                high = summary.high if math.isfinite(summary.high) else summary.median
                lows.append((summary.median - summary.low) * scale)
                highs.append((high - summary.median) * scale)
                if metric == "p99" and math.isfinite(row.p50.median):
                    p50s.append((x, row.p50.median * scale))
            label = f"N={n:,} deflate {'offered' if deflate else 'off'}"
            ax.bar(xs, heights, width, yerr=[lows, highs], capsize=2, label=label)
            if p50s:
                ax.scatter([p[0] for p in p50s], [p[1] for p in p50s], s=8, color="black")
        ax.set_title(title)
        ax.set_xticks(range(len(variants)))
        ax.set_xticklabels(variants, rotation=30, ha="right")
        if log:
            ax.set_yscale("log")
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
