"""The run report of `cdp-spark run`: one Markdown file per run with every stage's status and numbers."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cdp_spark.ops import StageRun
from cdp_spark.redact import redact

# Metrics worth a column of the summary table; every metric still appears in the stage's detail.
_SUMMARY = ("rows_read", "rows_written", "rows_quarantined")


@dataclass
class StageOutcome:
    name: str
    run: StageRun | None
    status: str  # "ok", "failed", "not run"
    error: str | None = None


@dataclass
class RunReport:
    run_id: str
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    outcomes: list[StageOutcome] = field(default_factory=list)

    def add(self, outcome: StageOutcome) -> None:
        self.outcomes.append(outcome)

    def markdown(self) -> str:
        finished = datetime.now(UTC)
        failed = [o.name for o in self.outcomes if o.status == "failed"]
        verdict = f"**{failed[0]} failed**; rerun `cdp-spark run` to resume." if failed else "**all stages succeeded**."
        lines = [
            f"# cdp-spark run {self.run_id}",
            "",
            f"Started {self.started_at:%Y-%m-%d %H:%M:%S} UTC, finished {finished:%H:%M:%S} UTC: {verdict}",
            "",
            "| stage | status | seconds | " + " | ".join(_SUMMARY) + " |",
            "| --- | --- | ---: | " + " | ".join("---:" for _ in _SUMMARY) + " |",
        ]
        for outcome in self.outcomes:
            totals = _totals(outcome.run)
            cells = [_fmt(totals.get(m)) for m in _SUMMARY]
            lines.append(
                f"| {outcome.name} | {outcome.status} | {_fmt(totals.get('seconds'))} | " + " | ".join(cells) + " |"
            )
        for outcome in self.outcomes:
            lines += ["", f"## {outcome.name}: {outcome.status}"]
            if outcome.error:
                lines += ["", f"Error: `{redact(outcome.error)}`"]
            if outcome.run is None:
                continue
            for section in outcome.run.sections:
                lines += ["", f"### {section.title}", "", section.markdown.rstrip("\n")]
                lines += ["", *(f"![{name}]({self.image_name(name)})" for name in section.images)]
            if outcome.run.metrics:
                lines += ["", "| step | metric | value |", "| --- | --- | ---: |"]
                lines += [f"| {step} | {metric} | {_fmt(value)} |" for step, metric, value in outcome.run.metrics]
        return "\n".join(lines) + "\n"

    def image_name(self, name: str) -> str:
        """The file a section's image is written to, beside the report: one per run, so latest-run.md links too."""
        return f"run-{self.run_id}-{name}"

    def write(self, reports_dir: str) -> Path:
        path = Path(reports_dir) / f"run-{self.run_id}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        for outcome in self.outcomes:
            for section in outcome.run.sections if outcome.run else []:
                for name, image in section.images.items():
                    (path.parent / self.image_name(name)).write_bytes(image)
        path.write_text(self.markdown())
        (path.parent / "latest-run.md").write_text(self.markdown())
        return path


def _totals(run: StageRun | None) -> dict[str, float]:
    totals: dict[str, float] = {}
    for _, metric, value in run.metrics if run else []:
        if value is not None and (metric in _SUMMARY or metric == "seconds"):
            totals[metric] = totals.get(metric, 0.0) + value
    return totals


def _fmt(value: float | None) -> str:
    if value is None:
        return ""
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.3f}"
