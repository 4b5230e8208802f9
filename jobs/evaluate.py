"""spark-submit entry point for `cdp-spark evaluate`: spark-submit jobs/evaluate.py [--env cluster] [--set KEY=VALUE ...]."""

import sys

from cdp_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
