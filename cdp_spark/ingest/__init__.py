"""Bronze: incremental, exactly-once ingest of every configured source."""
