"""spark-submit entry point for `cdp-spark erase`: spark-submit jobs/erase.py [--env cluster] [--set KEY=VALUE ...]."""

import sys

from cdp_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["erase", *sys.argv[1:]]))
