"""spark-submit entry point for `cdp-spark ingest`: spark-submit jobs/ingest.py [--env cluster] [--set KEY=VALUE ...]."""

import sys

from cdp_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["ingest", *sys.argv[1:]]))
