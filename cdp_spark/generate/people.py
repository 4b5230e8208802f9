"""People, their attributes and their latent behaviour, drawn Spark-natively from seeded hashes.

Every random number is ``uniform(seed, salt, keys...)``: a hash of the seed, a salt naming what is drawn
and the row's keys. The same seed gives the same data whatever the partitioning or cluster size, and
nothing per person ever reaches the driver, so 10^7 people work as well as 10^3.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.functions import pandas_udf
from pyspark.sql.types import DoubleType
from scipy import stats

from cdp_spark.config import SampleConfig
from cdp_spark.generate import vocab

_MASK = (1 << 53) - 1

# The latent buy-till-you-die process (BG/NBD) and spend (Gamma-Gamma), in days and dollars.
PURCHASE_RATE_SHAPE, PURCHASE_RATE_SCALE_DAYS = 0.9, 1 / 35.0  # lambda ~ Gamma(r, 1/alpha): ~1 purchase / 39 days
DROPOUT_A, DROPOUT_B = 1.2, 5.0  # p ~ Beta(a, b): dies after a purchase with probability p (mean 0.19)
SPEND_P, SPEND_Q, SPEND_GAMMA = 6.0, 3.7, 15.0  # amount ~ Gamma(p, nu), nu ~ Gamma(q, gamma): mean ~ $24
MAX_PURCHASES = 40


def uniform(seed: int, salt: str, *keys: Column | str) -> Column:
    """A uniform draw in [0, 1) from the seed, a salt and the row's keys: reproducible, partition-free."""
    columns = [F.col(k) if isinstance(k, str) else k for k in keys]
    return F.xxhash64(F.lit(seed), F.lit(salt), *columns).bitwiseAND(F.lit(_MASK)).cast("double") / float(1 << 53)


def pick(values: Sequence[str], u: Column) -> Column:
    """One of ``values``, chosen by the uniform ``u``."""
    array = F.array(*[F.lit(v) for v in values])
    return F.element_at(array, (F.floor(u * len(values)) + 1).cast("int"))


def hex_id(prefix: str, seed: int, salt: str, *keys: Column | str, length: int = 10) -> Column:
    columns = [F.col(k) if isinstance(k, str) else k for k in keys]
    digest = F.sha2(F.concat_ws(":", F.lit(seed), F.lit(salt), *[c.cast("string") for c in columns]), 256)
    return F.concat(F.lit(prefix), F.upper(F.substring(digest, 1, length)))


@pandas_udf(DoubleType())
def gamma_ppf(u: pd.Series, shape: pd.Series) -> pd.Series:
    """Inverse CDF of Gamma(shape, scale 1) at ``u``: turns a uniform draw into a gamma draw."""
    return pd.Series(stats.gamma.ppf(u.clip(1e-12, 1 - 1e-12), shape))


@pandas_udf(DoubleType())
def beta_ppf(u: pd.Series, a: pd.Series, b: pd.Series) -> pd.Series:
    return pd.Series(stats.beta.ppf(u.clip(1e-12, 1 - 1e-12), a, b))


def _ascii_lower(text: Column) -> Column:
    accented, plain = "áàâäãéèêëíìîïóòôöõúùûüñçøłšžßåæœ'", "aaaaaeeeeiiiiooooouuuuncolszsaaa "
    return F.regexp_replace(F.translate(F.lower(text), accented, plain), r"[^a-z]", "")


def window_start(sample: SampleConfig) -> Column:
    return F.to_timestamp(F.lit(sample.start_date.isoformat())) - F.make_interval(days=F.lit(sample.history_days))


def window_end(sample: SampleConfig, days: int) -> Column:
    """The first instant after the generated data: midnight after the last daily drop."""
    return F.to_timestamp(F.lit(sample.start_date.isoformat())) + F.make_interval(days=F.lit(days))


def people(spark: SparkSession, n: int, days: int, seed: int, sample: SampleConfig) -> DataFrame:
    """One row per person: identity attributes, household, identifiers and latent behaviour parameters."""
    mess = sample.mess
    df = spark.range(n).withColumnRenamed("id", "person_id")

    def u(salt: str, key: str = "person_id") -> Column:
        return uniform(seed, salt, key)

    pair = F.floor(F.col("person_id") / 2)
    # Pairs of people share a home (address, landline, surname) with probability `household`.
    in_household = (uniform(seed, "household", pair) < mess.household) & (F.col("person_id") < n - n % 2)
    df = df.withColumn("head", F.when(in_household, pair * 2).otherwise(F.col("person_id")))
    df = df.withColumn("household_id", F.concat(F.lit("hh-"), F.col("head").cast("string")))
    df = df.withColumn("household_size", F.when(in_household, 2).otherwise(1))

    gb = u("country", "head") < 0.05
    city_index = F.floor(u("city", "head") * len(vocab.US_CITIES)).cast("int") + 1
    gb_index = F.floor(u("city", "head") * len(vocab.GB_CITIES)).cast("int") + 1
    us_city = F.element_at(F.array(*[F.lit(c) for c, _ in vocab.US_CITIES]), city_index)
    us_zip = F.lpad(
        (
            F.element_at(F.array(*[F.lit(p) for _, p in vocab.US_CITIES]), city_index) * 100
            + F.floor(u("zip", "head") * 100)
        )
        .cast("int")
        .cast("string"),
        5,
        "0",
    )
    gb_city = F.element_at(F.array(*[F.lit(c) for c, _ in vocab.GB_CITIES]), gb_index)
    gb_postcode = F.concat(
        F.element_at(F.array(*[F.lit(p) for _, p in vocab.GB_CITIES]), gb_index),
        F.lit(" "),
        F.floor(u("gbpc", "head") * 9 + 1).cast("int").cast("string"),
        pick(list("ABDEFGHJLNPQRSTUWXYZ"), u("gbpc1", "head")),
        pick(list("ABDEFGHJLNPQRSTUWXYZ"), u("gbpc2", "head")),
    )
    suffix_index = F.floor(u("suffix", "head") * len(vocab.STREET_SUFFIXES)).cast("int") + 1
    df = df.withColumns(
        {
            "first_name": pick(vocab.FIRST_NAMES, u("first")),
            "last_name": pick(vocab.LAST_NAMES, u("last", "head")),
            "birth_date": F.date_add(F.lit("1950-01-01").cast("date"), F.floor(u("birth") * 20_000).cast("int")),
            "country": F.when(gb, F.lit("GB")).otherwise(F.lit("US")),
            "house_number": (F.floor(u("house", "head") * 9_998) + 1).cast("int"),
            "street": pick(vocab.STREETS, u("street", "head")),
            "street_suffix": F.element_at(F.array(*[F.lit(full) for full, _ in vocab.STREET_SUFFIXES]), suffix_index),
            "street_suffix_short": F.element_at(
                F.array(*[F.lit(short) for _, short in vocab.STREET_SUFFIXES]), suffix_index
            ),
            "city": F.when(gb, gb_city).otherwise(us_city),
            "postcode": F.when(gb, gb_postcode).otherwise(us_zip),
        }
    )
    # Ten-digit national numbers with real area codes and exchanges 201..989 (never the 555 range).
    area = pick([str(a) for a in vocab.AREA_CODES], u("area"))
    exchange = (F.floor(u("exchange") * 789) + 201).cast("int").cast("string")
    line = F.lpad(F.floor(u("line") * 10_000).cast("int").cast("string"), 4, "0")
    home_area = pick([str(a) for a in vocab.AREA_CODES], u("home_area", "head"))
    home_exchange = (F.floor(u("home_exchange", "head") * 789) + 201).cast("int").cast("string")
    home_line = F.lpad(F.floor(u("home_line", "head") * 10_000).cast("int").cast("string"), 4, "0")
    gb_mobile = F.concat(F.lit("7911"), F.lpad(F.floor(u("gb_mobile") * 1_000_000).cast("int").cast("string"), 6, "0"))
    df = df.withColumn(
        "phone_digits",
        F.when(gb, gb_mobile)
        .when(in_household, F.concat(home_area, home_exchange, home_line))
        .otherwise(F.concat(area, exchange, line)),
    )
    first, last = _ascii_lower(F.col("first_name")), _ascii_lower(F.col("last_name"))
    number = F.pmod(F.xxhash64(F.lit(seed), F.lit("email_number"), F.col("person_id")), F.lit(100_000)).cast("string")
    locals_ = [
        F.concat(first, F.lit("."), last, number),
        F.concat(first, last, number),
        F.concat(F.substring(first, 1, 1), F.lit("."), last, number),
        F.concat(first, F.lit("_"), last, number),
    ]
    pattern = F.floor(u("email_pattern") * len(locals_)).cast("int")
    second_pattern = F.pmod(pattern + 1, F.lit(len(locals_)))
    primary_local = F.element_at(F.array(*locals_), pattern + 1)
    second_local = F.element_at(F.array(*locals_), second_pattern + 1)
    df = df.withColumns(
        {
            "email": F.concat(primary_local, F.lit("@"), pick(vocab.EMAIL_DOMAINS, u("domain"))),
            "second_email": F.when(
                u("second_email") < mess.second_email,
                F.concat(second_local, F.lit("x@"), pick(vocab.EMAIL_DOMAINS, u("domain2"))),
            ),
            "account_id": F.when(u("has_account") < 0.7, hex_id("A", seed, "account", "person_id")),
            "loyalty_id": F.when(u("has_loyalty") < 0.6, hex_id("L", seed, "loyalty", "person_id")),
            "device_id": F.when(u("has_device") < 0.5, hex_id("D", seed, "device", "person_id", length=12)),
        }
    )
    device_only = (
        F.col("device_id").isNotNull() & F.col("account_id").isNotNull() & (u("device_only") < mess.device_only)
    )
    df = df.withColumns(
        {
            "has_crm": F.col("loyalty_id").isNotNull() | (u("has_crm") < 0.8),
            "device_only": device_only,
            "cookies": F.when(F.col("account_id").isNull(), 0)
            .when(device_only, 2)
            .otherwise((F.floor(u("cookies") * 3) + 1).cast("int")),
        }
    )
    # Latent behaviour: acquisition time, purchase rate, dropout probability, spend level.
    length_days = sample.history_days + days
    df = df.withColumns(
        {
            "acquired_at": window_start(sample)
            + F.make_interval(secs=(u("acquired") * length_days * 86_400).cast("decimal(18,6)")),
            "purchase_rate": gamma_ppf(u("rate"), F.lit(PURCHASE_RATE_SHAPE)) * PURCHASE_RATE_SCALE_DAYS,
            "dropout_probability": beta_ppf(u("dropout"), F.lit(DROPOUT_A), F.lit(DROPOUT_B)),
            "spend_nu": gamma_ppf(u("spend"), F.lit(SPEND_Q)) / SPEND_GAMMA,
        }
    )
    return df
