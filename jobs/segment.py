"""spark-submit entry point for `cdp-spark segment`: spark-submit jobs/segment.py [--env cluster] [--set KEY=VALUE ...]."""

import sys

from cdp_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["segment", *sys.argv[1:]]))
