"""spark-submit entry point for `cdp-spark standardize`: spark-submit jobs/standardize.py [--env cluster] [--set KEY=VALUE ...]."""

import sys

from cdp_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["standardize", *sys.argv[1:]]))
