"""spark-submit entry point for `cdp-spark profiles`: spark-submit jobs/profiles.py [--env cluster] [--set KEY=VALUE ...]."""

import sys

from cdp_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["profiles", *sys.argv[1:]]))
