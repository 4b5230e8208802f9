"""spark-submit entry point for `cdp-spark resolve`: spark-submit jobs/resolve.py [--env cluster] [--set KEY=VALUE ...]."""

import sys

from cdp_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["resolve", *sys.argv[1:]]))
