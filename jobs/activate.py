"""spark-submit entry point for `cdp-spark activate`: spark-submit jobs/activate.py [--env cluster] [--set KEY=VALUE ...]."""

import sys

from cdp_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["activate", *sys.argv[1:]]))
