"""The seven sources, as each system would export them: one DataFrame per source with a ``day`` column.

Each fact is a function of the people table and seeded hashes of its own keys; the realistic mess
(typos, email variants, missing fields, junk values, phone formats) is applied per record at the rates
of ``SampleConfig.mess``. ``ts`` columns are UTC timestamps; ``day`` is the daily drop the row ships in.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from cdp_spark.config import MessRates, SampleConfig
from cdp_spark.generate import vocab
from cdp_spark.generate.people import (
    MAX_PURCHASES,
    SPEND_P,
    gamma_ppf,
    hex_id,
    pick,
    uniform,
    window_end,
)

ISO = "yyyy-MM-dd'T'HH:mm:ss'Z'"


def with_day(df: DataFrame, ts: str, sample: SampleConfig, days: int) -> DataFrame:
    """Rows up to the end of the last drop; day 1 carries the whole history (the backfill)."""
    start = F.lit(sample.start_date.isoformat()).cast("date")
    return df.where(F.col(ts) < window_end(sample, days)).withColumn(
        "day", F.date_format(F.greatest(F.to_date(ts), start), "yyyy-MM-dd")
    )


def _random_time(seed: int, salt: str, low: Column, high: Column, *keys: Column | str) -> Column:
    span = F.unix_timestamp(high) - F.unix_timestamp(low)
    return F.timestamp_seconds(F.unix_timestamp(low) + F.floor(uniform(seed, salt, *keys) * span))


# ------------------------------------------------------------------------------------------------
# Mess
# ------------------------------------------------------------------------------------------------


def typo(name: Column, u: Column, u_position: Column, rate: float) -> Column:
    """With probability ``rate`` drop or double one inner letter (Jonathan -> Jonathn / Joonathan)."""
    position = (F.floor(u_position * F.greatest(F.length(name) - 2, F.lit(1))) + 2).cast("int")
    head, rest = F.substring(name, 1, position - 1), F.substring(name, position + 1, 1 << 20)
    letter = F.substring(name, position, 1)
    changed = F.when(u < rate / 2, F.concat(head, rest)).otherwise(F.concat(head, letter, letter, rest))
    return F.when((u < rate) & (F.length(name) > 3), changed).otherwise(name)


def email_variant(email: Column, u: Column, u_kind: Column, rate: float) -> Column:
    """Case changes, surrounding spaces, Gmail dots and +tags: the same mailbox written differently."""
    local, domain = F.substring_index(email, "@", 1), F.substring_index(email, "@", -1)
    gmail = domain == "gmail.com"
    variants = F.when(u_kind < 0.3, F.upper(email)).when(u_kind < 0.5, F.concat(F.lit("  "), email, F.lit(" ")))
    variants = variants.when(gmail & (u_kind < 0.75), F.concat(local, F.lit("+shop@"), domain))
    variants = variants.when(gmail, F.concat(F.regexp_replace(local, r"^(.)", "$1."), F.lit("@googlemail.com")))
    variants = variants.otherwise(F.initcap(email))
    return F.when(u < rate, variants).otherwise(email)


def phone_format(digits: Column, country: Column, u: Column) -> Column:
    """National digits written the ways people write them."""
    a, e, line = F.substring(digits, 1, 3), F.substring(digits, 4, 3), F.substring(digits, 7, 4)
    us = (
        F.when(u < 0.25, F.concat(F.lit("("), a, F.lit(") "), e, F.lit("-"), line))
        .when(u < 0.45, F.concat_ws(".", a, e, line))
        .when(u < 0.65, F.concat(F.lit("+1 "), a, F.lit(" "), e, F.lit(" "), line))
        .when(u < 0.85, digits)
        .otherwise(F.concat_ws("-", F.lit("1"), a, e, line))
    )
    gb = F.when(u < 0.5, F.concat(F.lit("0"), F.substring(digits, 1, 4), F.lit(" "), F.substring(digits, 5, 6)))
    gb = gb.otherwise(F.concat(F.lit("+44 "), F.substring(digits, 1, 4), F.lit(" "), F.substring(digits, 5, 6)))
    return F.when(country == "GB", gb).otherwise(us)


def missing(value: Column, u: Column, rate: float) -> Column:
    return F.when(u >= rate, value)


def junk(email: Column, u: Column, u_which: Column, rate: float) -> Column:
    return F.when(u < rate, pick(vocab.JUNK_EMAILS, u_which)).otherwise(email)


def _address(u: Column) -> Column:
    """Street names written in full or abbreviated."""
    suffix = F.when(u < 0.5, F.col("street_suffix")).otherwise(F.col("street_suffix_short"))
    return F.concat_ws(" ", F.col("house_number").cast("string"), F.col("street"), suffix)


def _messy_identity(df: DataFrame, seed: int, salt: str, key: str, mess: MessRates, email: Column) -> DataFrame:
    """Name, email, phone, address columns of one source record, each with its own mess."""

    def u(what: str) -> Column:
        return uniform(seed, f"{salt}:{what}", key)

    messy_email = junk(email_variant(email, u("email_variant"), u("email_kind"), mess.email_variant), u("junk"),
                       u("junk_which"), mess.junk_email)  # fmt: skip
    return df.withColumns(
        {
            "r_first_name": typo(F.col("first_name"), u("typo_first"), u("typo_first_at"), mess.name_typo),
            "r_last_name": typo(F.col("last_name"), u("typo_last"), u("typo_last_at"), mess.name_typo),
            "r_email": missing(messy_email, u("missing_email"), mess.missing_field),
            "r_phone": missing(
                phone_format(F.col("phone_digits"), F.col("country"), u("phone_format")),
                u("missing_phone"),
                mess.missing_field,
            ),  # fmt: skip
            "r_address": missing(_address(u("address")), u("missing_address"), mess.missing_field),
            "r_birth_date": missing(F.col("birth_date").cast("string"), u("missing_birth"), mess.missing_field),
        }
    )


# ------------------------------------------------------------------------------------------------
# Behaviour
# ------------------------------------------------------------------------------------------------


def purchases(people: DataFrame, seed: int, sample: SampleConfig, days: int) -> DataFrame:
    """Latent BG/NBD purchases: exponential gaps at the person's rate; after each, dropout with prob p.

    Out: person_id, k, ts, amount, channel (online/store) and each person's dropout_at (null if alive).
    """
    end = window_end(sample, days)
    rows = people.select(
        "person_id", "acquired_at", "purchase_rate", "dropout_probability", "spend_nu", "account_id", "loyalty_id",
        F.explode(F.sequence(F.lit(0), F.lit(MAX_PURCHASES - 1))).alias("k"),
    )  # fmt: skip
    u_gap = uniform(seed, "gap", "person_id", "k")
    gap_days = F.when(F.col("k") == 0, F.lit(0.0)).otherwise(-F.log(1 - u_gap) / F.col("purchase_rate"))
    died = uniform(seed, "die", "person_id", "k") < F.col("dropout_probability")
    order = Window.partitionBy("person_id").orderBy("k")
    rows = rows.withColumns(
        {
            "offset_days": F.sum(gap_days).over(order.rowsBetween(Window.unboundedPreceding, 0)),
            "died_after": died,
            "dead_before": F.coalesce(
                F.max(died.cast("int")).over(order.rowsBetween(Window.unboundedPreceding, -1)), F.lit(0)
            )
            == 1,
        }
    )
    # Past the window nothing is kept: cap the offset so a tiny rate cannot overflow the interval.
    offset = F.least(F.col("offset_days"), F.lit(float(sample.history_days + days + 1)))
    rows = rows.withColumn("ts", F.col("acquired_at") + F.make_interval(secs=(offset * 86_400).cast("decimal(18,6)")))
    rows = rows.where(~F.col("dead_before") & (F.col("ts") < end))
    both = F.col("account_id").isNotNull() & F.col("loyalty_id").isNotNull()
    channel = (
        F.when(both, F.when(uniform(seed, "channel", "person_id", "k") < 0.6, "online").otherwise("store"))
        .when(F.col("account_id").isNotNull(), "online")
        .otherwise("store")
    )
    amount = gamma_ppf(uniform(seed, "amount", "person_id", "k"), F.lit(SPEND_P)) / F.col("spend_nu")
    return rows.select(
        "person_id",
        "k",
        "ts",
        F.round(F.least(amount, F.lit(5_000.0)), 2).alias("amount"),
        channel.alias("channel"),
        F.when(F.col("died_after"), F.col("ts")).alias("died_at"),
    )


def dropout(purchases_df: DataFrame) -> DataFrame:
    """person_id, dropout_at (the purchase after which the person left; null if still alive), purchases."""
    return purchases_df.groupBy("person_id").agg(F.min("died_at").alias("dropout_at"), F.count("*").alias("purchases"))


# ------------------------------------------------------------------------------------------------
# Sources
# ------------------------------------------------------------------------------------------------


def crm(people: DataFrame, seed: int, sample: SampleConfig, days: int) -> DataFrame:
    """CRM customers: one record per customer, ~10% entered twice, and later updates as new rows."""
    mess = sample.mess
    base = people.where("has_crm")
    duplicate = uniform(seed, "crm_duplicate", "person_id") < 0.1
    updated = uniform(seed, "crm_update", "person_id") < 0.3
    versions = base.select(
        "*",
        F.explode(
            F.filter(
                F.array(
                    F.struct(F.lit(0).alias("copy"), F.lit(0).alias("version")),
                    F.struct(F.lit(1).alias("copy"), F.lit(0).alias("version")),
                    F.struct(F.lit(0).alias("copy"), F.lit(1).alias("version")),
                ),
                lambda v: (v.copy == 0) & (v.version == 0) | ((v.copy == 1) & duplicate) | ((v.version == 1) & updated),
            )
        ).alias("v"),
    ).select("*", "v.copy", "v.version")
    key = F.concat_ws(":", F.col("person_id").cast("string"), F.col("copy").cast("string"))
    versions = versions.withColumn("crm_key", key)
    signup = F.col("acquired_at") - F.make_interval(days=F.floor(uniform(seed, "signup", "crm_key") * 30).cast("int"))
    update_at = _random_time(seed, "crm_update_at", F.col("acquired_at"), window_end(sample, days), "crm_key")
    email = F.when((F.col("copy") == 1) & F.col("second_email").isNotNull(), F.col("second_email")).otherwise(
        F.col("email")
    )
    rows = versions.withColumn("rec_key", F.concat_ws(":", "crm_key", F.col("version").cast("string")))
    rows = _messy_identity(rows, seed, "crm", "rec_key", mess, email)
    return rows.select(
        "person_id",
        hex_id("C", seed, "crm", "crm_key").alias("customer_id"),
        F.col("r_first_name").alias("first_name"),
        F.col("r_last_name").alias("last_name"),
        F.col("r_email").alias("email"),
        F.col("r_phone").alias("phone"),
        F.col("r_address").alias("address"),
        "city",
        "postcode",
        F.when(uniform(seed, "crm_country", "rec_key") < 0.5, F.col("country"))
        .when(F.col("country") == "US", F.lit("USA"))
        .otherwise(F.lit("United Kingdom"))
        .alias("country"),
        F.col("r_birth_date").alias("birth_date"),
        F.when(F.col("copy") == 0, F.col("loyalty_id")).alias("loyalty_id"),
        F.when(F.col("version") == 1, update_at).otherwise(signup).alias("ts"),
    ).withColumn("updated_at", F.date_format("ts", ISO))


def orders(people: DataFrame, bought: DataFrame, seed: int, sample: SampleConfig) -> DataFrame:
    """Online orders of people with an account; name, email and phone as typed at checkout."""
    rows = bought.where("channel = 'online'").join(people, "person_id")
    rows = rows.withColumn("order_key", F.concat_ws(":", F.col("person_id").cast("string"), F.col("k").cast("string")))
    rows = _messy_identity(rows, seed, "orders", "order_key", sample.mess, F.col("email"))
    return rows.select(
        "person_id",
        hex_id("O", seed, "order", "order_key", length=12).alias("order_id"),
        "account_id",
        F.col("r_email").alias("email"),
        F.col("r_first_name").alias("first_name"),
        F.col("r_last_name").alias("last_name"),
        F.col("r_phone").alias("phone"),
        "postcode",
        F.col("ts").alias("order_ts"),
        "ts",
        "amount",
        F.when(F.col("country") == "GB", "GBP").otherwise("USD").alias("currency"),
        (F.floor(uniform(seed, "items", "order_key") * 4) + 1).cast("int").alias("items"),
    )


def pos(people: DataFrame, bought: DataFrame, seed: int) -> DataFrame:
    """Store purchases: by loyalty card, or anonymous (no card) for people without one."""
    rows = bought.where("channel = 'store'").join(people.select("person_id", "loyalty_id"), "person_id")
    key = F.concat_ws(":", F.col("person_id").cast("string"), F.col("k").cast("string"))
    return rows.select(
        "person_id",
        hex_id("T", seed, "pos", key, length=12).alias("transaction_id"),
        pick(vocab.STORES, uniform(seed, "store", key)).alias("store_id"),
        F.coalesce("loyalty_id", F.lit("")).alias("loyalty_id"),
        F.format_number("amount", 2).alias("amount_text"),
        "ts",
    ).withColumns(
        {
            "amount": F.regexp_replace("amount_text", ",", ""),
            "transaction_ts": F.date_format("ts", "yyyy-MM-dd HH:mm:ss"),
        }
    )


def events(people: DataFrame, dropout_at: DataFrame, seed: int, sample: SampleConfig, days: int) -> DataFrame:
    """Web and app events per cookie; logins tie a cookie to the account (and sometimes an email).

    Device-only people never log in on their first cookie; it shares a device id with the second one.
    """
    end = window_end(sample, days)
    cookies = people.where("cookies > 0").select("*", F.explode(F.sequence(F.lit(0), F.col("cookies") - 1)).alias("c"))
    cookies = cookies.join(dropout_at, "person_id", "left").withColumn(
        "cookie_key", F.concat_ws(":", F.col("person_id").cast("string"), F.col("c").cast("string"))
    )
    active_until = F.least(end, F.coalesce(F.col("dropout_at") + F.make_interval(days=F.lit(60)), end))
    cookies = cookies.withColumns(
        {
            "cookie_id": hex_id("K", seed, "cookie", "cookie_key", length=16),
            "active_until": F.greatest(active_until, F.col("acquired_at") + F.make_interval(days=F.lit(1))),
            "n_events": (F.floor(uniform(seed, "n_events", "cookie_key") * 10) + 3).cast("int"),
            "on_device": F.col("device_id").isNotNull() & ((F.col("c") == 0) | F.col("device_only")),
        }
    )
    rows = cookies.select("*", F.explode(F.sequence(F.lit(0), F.col("n_events") - 1)).alias("e"))
    rows = rows.withColumn("event_key", F.concat_ws(":", "cookie_key", F.col("e").cast("string")))
    login = (F.col("e") == 0) & ~(F.col("device_only") & (F.col("c") == 0))
    ts = _random_time(seed, "event_ts", F.col("acquired_at"), F.col("active_until"), "event_key")
    event_type = F.when(login, "login").when(
        F.col("on_device") & (uniform(seed, "app_open", "event_key") < 0.3), "app_open"
    )
    rows = rows.select(
        "person_id",
        hex_id("E", seed, "event", "event_key", length=16).alias("event_id"),
        ts.alias("ts"),
        event_type.otherwise(pick(vocab.EVENT_TYPES, uniform(seed, "event_type", "event_key"))).alias("event_type"),
        "cookie_id",
        F.when(F.col("on_device"), F.col("device_id")).alias("device_id"),
        F.when(login, F.col("account_id")).alias("user_id"),
        F.when(login & (uniform(seed, "login_email", "event_key") < 0.5), F.col("email")).alias("email"),
        pick(vocab.CAMPAIGNS, uniform(seed, "utm", "event_key")).alias("campaign"),
        (uniform(seed, "utm_present", "event_key") < 0.4).alias("has_campaign"),
        uniform(seed, "malformed", "event_key").alias("u_malformed"),
    )
    return rows.withColumn("event_ts", F.date_format("ts", ISO))


def support(people: DataFrame, seed: int, sample: SampleConfig, days: int) -> DataFrame:
    """Support tickets: requester's name (with titles and suffixes), email or phone, topic, satisfaction."""
    mess = sample.mess
    n_tickets = F.when(uniform(seed, "has_tickets", "person_id") < 0.3,
                       F.floor(uniform(seed, "tickets", "person_id") * 3) + 1).otherwise(0)  # fmt: skip
    rows = people.withColumn("n_tickets", n_tickets.cast("int")).where("n_tickets > 0")
    rows = rows.select("*", F.explode(F.sequence(F.lit(0), F.col("n_tickets") - 1)).alias("t"))
    rows = rows.withColumn("ticket_key", F.concat_ws(":", F.col("person_id").cast("string"), F.col("t").cast("string")))
    rows = _messy_identity(rows, seed, "support", "ticket_key", mess, F.col("email"))
    title = F.when(
        uniform(seed, "title", "ticket_key") < 0.15, pick(vocab.TITLES, uniform(seed, "which_title", "ticket_key"))
    )
    suffix = F.when(
        uniform(seed, "suffix", "ticket_key") < 0.03, pick(vocab.SUFFIXES, uniform(seed, "which_suffix", "ticket_key"))
    )
    satisfaction = F.when(uniform(seed, "rated", "ticket_key") < 0.7,
                          (F.floor(uniform(seed, "satisfaction", "ticket_key") * 5) + 1).cast("int"))  # fmt: skip
    return rows.select(
        "person_id",
        hex_id("S", seed, "ticket", "ticket_key").alias("ticket_id"),
        F.concat_ws(" ", title, F.col("r_first_name"), F.col("r_last_name"), suffix).alias("name"),
        F.col("r_email").alias("email"),
        F.col("r_phone").alias("phone"),
        pick(vocab.SUPPORT_TOPICS, uniform(seed, "topic", "ticket_key")).alias("topic"),
        satisfaction.alias("satisfaction"),
        _random_time(seed, "ticket_ts", F.col("acquired_at"), window_end(sample, days), "ticket_key").alias("ts"),
    ).withColumn("created_at", F.date_format("ts", ISO))


def email_engagement(people: DataFrame, dropout_at: DataFrame, seed: int, sample: SampleConfig, days: int) -> DataFrame:
    """Campaign sends to the person's clean address, with opens and clicks (fewer after dropout)."""
    end = window_end(sample, days)
    sends = people.join(dropout_at, "person_id", "left").select(
        "*", F.explode(F.sequence(F.lit(0), (F.floor(uniform(seed, "sends", "person_id") * 12)).cast("int"))).alias("s")
    )
    sends = sends.withColumn("send_key", F.concat_ws(":", F.col("person_id").cast("string"), F.col("s").cast("string")))
    sent_at = _random_time(seed, "send_ts", F.col("acquired_at"), end, "send_key")
    sends = sends.withColumn("sent_at", sent_at)
    engaged = F.col("dropout_at").isNull() | (F.col("sent_at") < F.col("dropout_at"))
    opened = uniform(seed, "open", "send_key") < F.when(engaged, 0.45).otherwise(0.08)
    clicked = opened & (uniform(seed, "click", "send_key") < 0.3)
    unsubscribed = uniform(seed, "unsubscribe", "send_key") < F.when(engaged, 0.005).otherwise(0.03)
    kinds = F.filter(
        F.array(
            F.struct(F.lit("send").alias("event_type"), F.lit(0).alias("minutes")),
            F.when(opened, F.struct(F.lit("open").alias("event_type"), F.lit(90).alias("minutes"))),
            F.when(clicked, F.struct(F.lit("click").alias("event_type"), F.lit(95).alias("minutes"))),
            F.when(unsubscribed, F.struct(F.lit("unsubscribe").alias("event_type"), F.lit(100).alias("minutes"))),
        ),
        lambda x: x.isNotNull(),
    )
    rows = sends.select("*", F.explode(kinds).alias("kind"))
    ts = F.col("sent_at") + F.make_interval(mins=F.col("kind.minutes"))
    return rows.select(
        "person_id",
        hex_id("M", seed, "message", F.concat_ws(":", "send_key", F.col("kind.event_type")), length=16).alias(
            "message_id"
        ),
        "email",
        F.col("kind.event_type").alias("event_type"),
        ts.alias("ts"),
        pick(vocab.CAMPAIGNS, uniform(seed, "campaign", "send_key")).alias("campaign_id"),
    ).withColumn("event_ts", F.date_format("ts", ISO))


def consent(people: DataFrame, seed: int, sample: SampleConfig, days: int) -> DataFrame:
    """Consent statements per identifier and channel at sign-up; ~10% withdraw email consent later."""
    end = window_end(sample, days)
    statements = F.array(
        F.struct(F.lit("email").alias("identifier_type"), F.col("email").alias("identifier"),
                 F.lit("email").alias("channel"), F.lit(True).alias("granted"), F.col("acquired_at").alias("ts")),
        F.struct(F.lit("email").alias("identifier_type"), F.col("email").alias("identifier"),
                 F.lit("ads").alias("channel"), (uniform(seed, "ads", "person_id") < 0.7).alias("granted"),
                 F.col("acquired_at").alias("ts")),
        F.struct(F.lit("phone").alias("identifier_type"), F.col("phone_digits").alias("identifier"),
                 F.lit("sms").alias("channel"), (uniform(seed, "sms", "person_id") < 0.5).alias("granted"),
                 F.col("acquired_at").alias("ts")),
        F.when(uniform(seed, "withdraw", "person_id") < 0.1,
               F.struct(F.lit("email").alias("identifier_type"), F.col("email").alias("identifier"),
                        F.lit("email").alias("channel"), F.lit(False).alias("granted"),
                        _random_time(seed, "withdraw_at", F.col("acquired_at"), end, "person_id").alias("ts"))),
    )  # fmt: skip
    rows = people.select("person_id", "country", F.explode(F.filter(statements, lambda s: s.isNotNull())).alias("s"))
    identifier = F.when(
        F.col("s.identifier_type") == "phone",
        F.when(F.col("country") == "GB", F.concat(F.lit("+44"), F.col("s.identifier"))).otherwise(
            F.concat(F.lit("+1"), F.col("s.identifier"))
        ),
    ).otherwise(F.col("s.identifier"))
    return rows.select(
        "person_id",
        F.col("s.identifier_type").alias("identifier_type"),
        identifier.alias("identifier"),
        F.col("s.channel").alias("channel"),
        F.when(F.col("s.granted"), "true").otherwise("false").alias("granted"),
        F.col("s.ts").alias("ts"),
    ).withColumn("recorded_at", F.date_format("ts", ISO))
