"""`cdp-spark`: one subcommand per stage, and `run` for the whole pipeline in order."""

from __future__ import annotations

import argparse
import logging
import sys

from cdp_spark.config import ConfigError, load_config
from cdp_spark.lease import LakehouseBusy
from cdp_spark.ops import configure_logging, failure_reason
from cdp_spark.pipeline import PIPELINE, STAGES, Context, PipelineFailed, run_pipeline, run_stage
from cdp_spark.redact import redact
from cdp_spark.session import JarsUnavailableError

log = logging.getLogger("cdp_spark")

# 3: another run holds the lakehouse (a scheduler may retry later).
EXIT_FAILED, EXIT_CONFIG, EXIT_BUSY = 1, 2, 3


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--conf-dir", default=argparse.SUPPRESS, help="folder with base.yaml and env/ (default: conf)")
    parser.add_argument("--env", default=argparse.SUPPRESS, help="environment overlay conf/env/<ENV>.yaml, e.g. local")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=argparse.SUPPRESS,
        metavar="KEY=VALUE",
        help="override one config key, e.g. --set spark.shuffle_partitions=4 (repeatable)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging")


def _stage_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    if name == "generate":
        parser.add_argument("--people", type=int, help="number of people (default: sample.people)")
        parser.add_argument("--days", type=int, help="number of daily drops (default: sample.days)")
        parser.add_argument("--seed", type=int, help="random seed (default: sample.seed)")
        parser.add_argument("--out", help="output folder (default: sample.path, else landing: where the sources read)")
    elif name == "resolve":
        parser.add_argument("--records", help="resolve any Parquet/CSV file of person records instead of silver")
        parser.add_argument("--id-column", help="with --records: the column that identifies a record")
        parser.add_argument("--config", help="with --records: identity YAML naming the attributes to match on")
        parser.add_argument("--out", help="with --records: output folder for record_id,cdp_id and the edges")
        parser.add_argument(
            "--model",
            metavar="NAME|PATH",
            help="score with a trained identity model instead of training one: a registered model NAME (its champion), "
            "NAME@alias, models:/NAME/<version>, or the path of a model JSON written by resolve",
        )
        _full(parser)
    elif name == "evaluate":
        parser.add_argument("what", nargs="?", default="identity", choices=["identity"])
        parser.add_argument(
            "--truth",
            help="ground-truth records (default: the generated sample's <sample.path or landing>/_truth/records)",
        )
    elif name == "erase":
        parser.add_argument(
            "--requests",
            help="CSV/JSON-lines file, or folder of them, of erasure requests (identifier_type, value) "
            "(default: privacy.requests)",
        )
    elif name == "maintain":
        parser.add_argument(
            "--retention-hours", type=int, help="VACUUM retention for this run (default: maintenance.retention_hours)"
        )
    elif name in ("profiles", "score", "segment", "activate", "train"):
        parser.add_argument("--as-of", help="as-of date YYYY-MM-DD (default: the latest data date)")
    if name in SKIPPING:
        _force(parser)


# The stages that do nothing when they find what their last successful run left (cdp_spark.stage_inputs).
SKIPPING = ("resolve", "profiles")


def _force(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--force",
        action="store_true",
        help=f"{' and '.join(SKIPPING)} recompute even when their inputs, config, code and own tables are as their "
        "last successful run left them (they skip then); resolve recomputes everything, as with --full",
    )


def _full(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--full",
        action="store_true",
        help="resolve every record again and retrain the identity model (default: only the records new, changed or "
        "removed since the last successful resolve, and what they link to, scored by the model that run used)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cdp-spark",
        description="Customer data platform on Spark + Delta Lake. Stages run alone or all in order with `run`.",
    )
    parser.add_argument("--conf-dir", default="conf", help="folder with base.yaml and env/ (default: conf)")
    parser.add_argument("--env", default=None, help="environment overlay conf/env/<ENV>.yaml, e.g. local or cluster")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="stage", required=True, metavar="STAGE")
    for name, stage in STAGES.items():
        stage_parser = sub.add_parser(name, help=stage.help)
        _common(stage_parser)
        _stage_arguments(name, stage_parser)
    run_parser = sub.add_parser("run", help="run the whole pipeline in order: " + " -> ".join(PIPELINE))
    _common(run_parser)
    run_parser.add_argument("--as-of", help="as-of date YYYY-MM-DD for profiles/scores/segments")
    run_parser.add_argument("--from", dest="from_stage", metavar="STAGE", help="start at this stage (default: ingest)")
    run_parser.add_argument("--to", dest="to_stage", metavar="STAGE", help="stop after this stage (default: activate)")
    _force(run_parser)
    _full(run_parser)
    check_parser = sub.add_parser("check", help="validate every config file and their cross-references, without Spark")
    _common(check_parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(logging.DEBUG if args.verbose else logging.INFO)
    try:
        config = load_config(args.conf_dir, args.env, args.overrides)
    except ConfigError as exc:
        print(f"cdp-spark: config error:\n{redact(str(exc))}", file=sys.stderr)
        return EXIT_CONFIG
    ctx = Context(config=config, args=args)
    try:
        if args.stage == "check":
            from cdp_spark.check import checked_files  # imports every stage's config: only for this command

            ctx.check_config()
            print(f"config ok: {len(checked_files(config))} files checked")
        elif args.stage == "run":
            run_pipeline(ctx)
        else:
            run_stage(args.stage, ctx)
    except PipelineFailed as failed:
        # One line for the scheduler's log: the stage, the reason, the report; the traceback with -v.
        log.debug("traceback", exc_info=True)
        exc = failed.__cause__ or failed
        if isinstance(exc, ConfigError):
            print(f"cdp-spark run: config error at stage {failed.stage}:\n{redact(str(exc))}", file=sys.stderr)
            return EXIT_CONFIG
        print(
            f"cdp-spark run failed at stage {failed.stage}: {type(exc).__name__}: {failure_reason(exc)} "
            f"(report: {failed.report}; rerun `cdp-spark run` to resume, -v for the traceback)",
            file=sys.stderr,
        )
        return EXIT_FAILED
    except ConfigError as exc:
        print(f"cdp-spark {args.stage}: config error:\n{redact(str(exc))}", file=sys.stderr)
        return EXIT_CONFIG
    except LakehouseBusy as exc:
        print(f"cdp-spark {args.stage}: {exc}", file=sys.stderr)
        return EXIT_BUSY
    except JarsUnavailableError as exc:
        print(f"cdp-spark {args.stage}: {redact(str(exc))}", file=sys.stderr)
        return EXIT_FAILED
    except Exception as exc:
        log.debug("traceback", exc_info=True)
        reason = failure_reason(exc)
        print(
            f"cdp-spark {args.stage} failed: {type(exc).__name__}: {reason} (rerun with -v for the traceback)",
            file=sys.stderr,
        )
        return EXIT_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())
