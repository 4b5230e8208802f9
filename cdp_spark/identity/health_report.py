"""The run report's section on identity health: the main numbers against the last run, the checks, and a chart of
the cluster-size distribution (this run beside the last)."""

from __future__ import annotations

import io

from cdp_spark.identity.health import BUCKETS, CHECKS, FAIL, WARN, Breach
from cdp_spark.ops import ReportSection

CHART = "identity-health.png"
# The metrics shown in the section's table, in order (the rest are in ops.identity_health).
SHOWN = (
    "records",
    "cdp_ids",
    "cluster_size_max",
    "cluster_size_p99",
    "records_share_over_20",
    "bridged_clusters",
    "bridged_share",
    "links",
    "hot_values",
    "hot_values_new",
    "weight_change_max",
    "link_share_change_max",
)


def _fmt(value: float | None) -> str:
    if value is None:
        return ""
    return f"{int(value):,}" if float(value).is_integer() else f"{value:.4g}"


def cluster_size_chart(metrics: dict[str, float], previous: dict[str, float]) -> bytes:
    """A PNG: the share of clusters per size bucket, this run's bars beside the last run's (when there is one)."""
    import matplotlib

    matplotlib.use("Agg")  # no display: the report is written by a batch job
    from matplotlib.figure import Figure

    labels = [label.replace("_", "-").replace("over-20", ">20") for label, _, _ in BUCKETS]
    positions = range(len(BUCKETS))
    figure = Figure(figsize=(6, 3.2))
    axes = figure.add_subplot()
    width = 0.4 if previous else 0.8
    if previous:
        axes.bar(
            [p - width / 2 for p in positions],
            [previous.get(f"clusters_{label}", 0.0) for label, _, _ in BUCKETS],
            width,
            label="last run",
            color="#bbbbbb",
        )
    axes.bar(
        [p + (width / 2 if previous else 0) for p in positions],
        [metrics.get(f"clusters_{label}", 0.0) for label, _, _ in BUCKETS],
        width,
        label="this run",
        color="#3b75af",
    )
    axes.set_xticks(list(positions), labels)
    axes.set_yscale("log")  # the large buckets are what matters, and they are a sliver of the clusters
    axes.set_xlabel("records per cluster")
    axes.set_ylabel("share of clusters")
    axes.legend()
    figure.tight_layout()
    out = io.BytesIO()
    figure.savefig(out, format="png", dpi=100)
    return out.getvalue()


def health_section(metrics: dict[str, float], previous: dict[str, float], found: list[Breach]) -> ReportSection:
    """The section: verdict, checks broken, the main metrics (this run, last run, change) and the chart."""
    failed = [str(b) for b in found if b.level == FAIL]
    warned = [str(b) for b in found if b.level == WARN]
    evaluated = [c for c in CHECKS if f"check:{c}" in metrics]
    verdict = "failed" if failed else "warnings" if warned else "ok"
    lines = [f"Verdict: **{verdict}** ({len(evaluated)} checks evaluated, thresholds in conf/identity.yaml `health`)."]
    lines += [f"- fail: {text}" for text in failed] + [f"- warn: {text}" for text in warned]
    lines += ["", "| metric | this run | last run | change |", "| --- | ---: | ---: | ---: |"]
    for name in SHOWN:
        if name not in metrics:
            continue
        now, before = metrics[name], previous.get(name)
        change = None if before is None else now - before
        lines.append(f"| {name} | {_fmt(now)} | {_fmt(before)} | {_fmt(change)} |")
    for name in sorted(n for n in metrics if n.startswith("link_share:")):
        now, before = metrics[name], previous.get(name)
        lines.append(f"| {name} | {_fmt(now)} | {_fmt(before)} | {_fmt(metrics.get('drift:' + name))} |")
    return ReportSection("identity health", "\n".join(lines), {CHART: cluster_size_chart(metrics, previous)})
