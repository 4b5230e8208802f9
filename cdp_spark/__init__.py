"""cdp-spark: an open-source customer data platform as Spark batch jobs over Delta Lake."""

__version__ = "0.1.0"
