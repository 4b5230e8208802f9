"""Sources as data (`conf/sources.yaml`): where each source lives, how to read it, and where its rows go in silver.

Read by ingest (how to read), standardize (the silver mappings and rules) and privacy (which bronze rows are whose).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from cdp_spark.config import ConfigError, Strict, load_model_file
from cdp_spark.normalize.rules import StandardizeRules

SILVER_TABLES = ("customer_records", "orders", "events", "support_tickets", "email_engagement", "consent")


# Maven coordinates of the JDBC drivers the runtime adds by itself for the driver class a source names.
KNOWN_JDBC_DRIVERS = {"org.postgresql.Driver": "org.postgresql:postgresql:42.7.4"}


# Replaced in a source path by the ``landing`` setting of conf/base.yaml (where files arrive).
LANDING = "{landing}"


class JdbcConfig(Strict):
    url: str
    table: str
    user: str | None = None
    password: str | None = None
    driver: str = "org.postgresql.Driver"
    package: str | None = Field(
        None,
        description="Maven coordinates of the driver's jar, added to the Spark session "
        "(default: known for org.postgresql.Driver; required for other drivers unless the jar is on the classpath)",
    )
    fetch_size: int = Field(10_000, gt=0)
    num_partitions: int = Field(
        1, gt=0, description="parallel reads: each batch's updated-at range is read as this many slices"
    )
    lookback_seconds: int = Field(
        0,
        ge=0,
        description="re-read rows updated up to this long before the watermark, for rows committed late with an "
        "older updated-at; rows bronze already holds unchanged are dropped",
    )
    null_updated_at: Literal["ingest_once", "skip"] = Field(
        "ingest_once",
        description="rows whose updated-at is NULL: read with every batch and kept when bronze does not hold them "
        "unchanged yet (ingest_once), or left out with a warning (skip)",
    )

    def driver_package(self) -> str | None:
        return self.package or KNOWN_JDBC_DRIVERS.get(self.driver)


class SilverTarget(Strict):
    """One silver table fed by a source: which bronze columns become which standard columns."""

    table: Literal[SILVER_TABLES]  # type: ignore[valid-type]
    key: list[str] = Field(
        min_length=1,
        description="columns identifying a row of this source in the table (customer_records: the source key), "
        "read after standardization: a standard column gives its standardized value, another name a bronze column",
    )
    columns: dict[str, str] = Field(
        default_factory=dict, description="standard column -> SQL expression over the bronze row"
    )
    updated_at: str | None = Field(None, description="SQL expression: when the row was last changed (latest wins)")
    where: str | None = Field(None, description="SQL condition: only rows meeting it belong to this table")


class SourceConfig(Strict):
    name: str
    format: Literal["csv", "json", "parquet", "jdbc"]
    path: str | None = None
    options: dict[str, str] = Field(default_factory=dict)
    schema_ddl: str | None = Field(None, alias="schema")
    schema_hints: dict[str, str] = Field(default_factory=dict)
    business_key: list[str] = Field(min_length=1)
    updated_at: str | None = None
    event_time: str | None = None
    jdbc: JdbcConfig | None = None
    allow_missing: bool = Field(
        False, description="a path that does not exist yet is nothing to ingest, not an error (a mistyped path!)"
    )
    silver: list[SilverTarget] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _identifier(cls, name: str) -> str:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
            raise ValueError("must be lower_snake_case (it names a bronze table)")
        return name

    @model_validator(mode="after")
    def _location(self) -> SourceConfig:
        if self.format == "jdbc":
            if self.jdbc is None:
                raise ValueError("a jdbc source needs a jdbc: {url, table, ...} section")
            if not self.updated_at:
                raise ValueError("a jdbc source needs updated_at: the watermark column of incremental extraction")
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.updated_at):
                raise ValueError("a jdbc source's updated_at must name a timestamp column of the table")
        elif not self.path:
            raise ValueError(f"a {self.format} source needs a path")
        elif "{sample}" in self.path:
            raise ValueError(f'"{{sample}}" in a path is now "{LANDING}" (the landing setting of conf/base.yaml)')
        if self.format in ("csv",) and not self.schema_ddl:
            raise ValueError("a csv source needs a schema (DDL, e.g. 'id string, name string')")
        return self

    def location(self, landing: str) -> str:
        """The path with ``{landing}`` (the ``landing`` setting of conf/base.yaml) filled in."""
        return (self.path or "").replace(LANDING, landing.rstrip("/"))


class SourcesConfig(Strict):
    sources: list[SourceConfig]
    standardize: StandardizeRules = Field(default_factory=StandardizeRules)

    @model_validator(mode="after")
    def _unique(self) -> SourcesConfig:
        names = [s.name for s in self.sources]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"source names must be unique, repeated: {', '.join(dupes)}")
        return self

    def get(self, name: str) -> SourceConfig:
        for source in self.sources:
            if source.name == name:
                return source
        raise ConfigError(f"no source named {name!r}; known: {', '.join(s.name for s in self.sources)}")


def jdbc_packages(sources: SourcesConfig) -> list[str]:
    """The JDBC driver jars the sources need, as Maven coordinates."""
    return sorted({p for s in sources.sources if s.jdbc is not None and (p := s.jdbc.driver_package())})


def load_sources(path: str) -> SourcesConfig:
    return load_model_file(SourcesConfig, path)
