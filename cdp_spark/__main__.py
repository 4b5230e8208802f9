import sys

from cdp_spark.cli import main

sys.exit(main())
