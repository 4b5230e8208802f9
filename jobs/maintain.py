"""spark-submit entry point for `cdp-spark maintain`: spark-submit jobs/maintain.py [--env cluster] [--set KEY=VALUE ...]."""

import sys

from cdp_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["maintain", *sys.argv[1:]]))
