"""spark-submit entry point for `cdp-spark run`: spark-submit jobs/run.py [--env cluster] [--set KEY=VALUE ...]."""

import sys

from cdp_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
