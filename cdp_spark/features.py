"""Point-in-time customer features: what was known about each person at the end of an ``as_of`` day, and nothing later.

``FEATURES`` is the one documented list (docs/features.md is rendered from it by :func:`render_features_doc`).
Every fact is first cut at the end of the as_of day (UTC, inclusive), then aggregated per ``cdp_id`` and as_of
(several as_ofs in one pass); an ``N``-day window is the N calendar days ending on as_of (as_of - N + 1 .. as_of).
Counts and sums are 0 without activity; means and "days since" are null when there is nothing to measure.
The profiles stage writes the latest snapshot to ``gold.customer_features``; the ml stage computes the same features
at its training and scoring as_ofs, so the definitions, and the table's one writer (:func:`write_snapshots`), live
here, below both.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from cdp_spark import tables


@dataclass(frozen=True)
class Feature:
    name: str
    meaning: str
    window_days: int | None = None


FEATURES: list[Feature] = [
    Feature("recency_days", "days from the last order to as_of; null without orders"),
    Feature("frequency", "orders up to as_of"),
    Feature("monetary_value", "mean order amount up to as_of; null without orders"),
    Feature("total_spend", "sum of order amounts up to as_of"),
    Feature("tenure_days", "days from the first time the person was seen (any fact or record) to as_of"),
    Feature("orders_30d", "orders in the window", 30),
    Feature("orders_90d", "orders in the window", 90),
    Feature("orders_365d", "orders in the window", 365),
    Feature("spend_30d", "sum of order amounts in the window", 30),
    Feature("spend_90d", "sum of order amounts in the window", 90),
    Feature("spend_365d", "sum of order amounts in the window", 365),
    Feature("aov_90d", "mean order amount in the window; null without orders in it", 90),
    Feature("aov_365d", "mean order amount in the window; null without orders in it", 365),
    Feature("channel_online", "any online order in the window", 365),
    Feature("channel_store", "any store order in the window", 365),
    Feature("online_orders_365d", "online orders in the window", 365),
    Feature("store_orders_365d", "store orders in the window", 365),
    Feature("web_events_30d", "web events (platform web) in the window", 30),
    Feature("app_events_30d", "app events (platform app) in the window", 30),
    Feature("logins_30d", "login events in the window", 30),
    Feature("email_opens_90d", "email opens in the window", 90),
    Feature("email_clicks_90d", "email clicks in the window", 90),
    Feature("email_unsubscribed", "any email unsubscribe up to as_of"),
    Feature("tickets_365d", "support tickets opened in the window", 365),
    Feature("avg_satisfaction_365d", "mean satisfaction (1..5) of the window's tickets; null without any", 365),
    Feature("days_since_last_order", "days from the last order to as_of; null without orders"),
    Feature("days_since_last_web", "days from the last web event to as_of; null without any"),
    Feature("days_since_last_email_open", "days from the last email open to as_of; null without any"),
    Feature("days_since_last_ticket", "days from the last support ticket to as_of; null without any"),
    Feature("bgnbd_frequency", "BG/NBD frequency: distinct purchase days - 1 (repeat purchases); 0 without orders"),
    Feature("bgnbd_recency_days", "BG/NBD recency: days from the first to the last purchase day; null without orders"),
    Feature("bgnbd_t_days", "BG/NBD T: days from the first purchase day to as_of; null without orders"),
    Feature(
        "bgnbd_monetary",
        "BG/NBD/Gamma-Gamma monetary value: mean amount per repeat purchase day (first day excluded); 0 without repeats",
    ),
]

FEATURE_NAMES = [f.name for f in FEATURES]


@dataclass
class Facts:
    """The silver facts features are computed from, plus the identity map that ties each row to its cdp_id.

    ``customer_records`` is optional: when given, a record's ``updated_at`` also counts as "seen" for tenure.
    """

    orders: DataFrame
    events: DataFrame
    email_engagement: DataFrame
    support_tickets: DataFrame
    identity_map: DataFrame
    customer_records: DataFrame | None = None

    @classmethod
    def read(cls, spark: SparkSession, root: str) -> Facts:
        """Read silver; identity_map must exist, a missing fact table is empty with its catalog schema."""
        return cls(
            orders=tables.read_or_empty(spark, root, tables.ORDERS),
            events=tables.read_or_empty(spark, root, tables.EVENTS),
            email_engagement=tables.read_or_empty(spark, root, tables.EMAIL_ENGAGEMENT),
            support_tickets=tables.read_or_empty(spark, root, tables.SUPPORT_TICKETS),
            identity_map=tables.read(spark, root, tables.IDENTITY_MAP),
            customer_records=tables.read_or_empty(spark, root, tables.CUSTOMER_RECORDS),
        )


def write_snapshots(snapshots: DataFrame, root: str, as_ofs: Sequence[dt.date]) -> None:
    """Write feature snapshots (``cdp_id``, ``as_of``, features) to ``gold.customer_features``, replacing the rows of
    ``as_ofs`` in one replaceWhere (a rerun rewrites the same rows). The table's one writer: profiles writes the
    latest snapshot, the models the as-ofs they miss (:func:`cdp_spark.ml.snapshots.feature_snapshots`)."""
    dates = ", ".join(f"DATE'{as_of.isoformat()}'" for as_of in sorted(set(as_ofs)))
    tables.replace_where(snapshots, root, tables.CUSTOMER_FEATURES, f"as_of IN ({dates})")


def _with_cdp_id(fact: DataFrame, identity_map: DataFrame) -> DataFrame:
    # Anonymous store sales (record_id null) belong to nobody and drop out here.
    return fact.join(identity_map.select("record_id", "cdp_id"), on="record_id", how="inner")


def _fact_times(facts: Facts) -> DataFrame:
    """Every fact's (record_id, ts): the moments a record was seen in an order, event, ticket or email."""
    return (
        facts.orders.select("record_id", F.col("order_ts").alias("ts"))
        .unionByName(facts.events.select("record_id", F.col("event_ts").alias("ts")))
        .unionByName(facts.support_tickets.select("record_id", F.col("created_at").alias("ts")))
        .unionByName(facts.email_engagement.select("record_id", F.col("event_ts").alias("ts")))
        .where(F.col("record_id").isNotNull() & F.col("ts").isNotNull())
    )


def record_activity(facts: Facts) -> DataFrame:
    """First and last fact timestamp per record (for a profile's first_seen/last_seen).

    Out: ``record_id``, ``first_fact_ts``, ``last_fact_ts``.
    """
    return (
        _fact_times(facts)
        .groupBy("record_id")
        .agg(F.min("ts").alias("first_fact_ts"), F.max("ts").alias("last_fact_ts"))
    )


def purchases(facts: Facts) -> DataFrame:
    """Every order of a known person, for the CLV model. Out: ``cdp_id``, ``order_ts``, ``amount``."""
    return _with_cdp_id(facts.orders, facts.identity_map).select("cdp_id", "order_ts", F.col("amount").cast("double"))


def default_as_of(facts: Facts) -> dt.date:
    """The date of the latest order or event timestamp (a two-number aggregate on the driver)."""
    latest = facts.orders.agg(F.max("order_ts").alias("ts")).unionByName(
        facts.events.agg(F.max("event_ts").alias("ts"))
    )
    row = latest.agg(F.max("ts").alias("ts")).first()
    if row is None or row["ts"] is None:
        raise ValueError("no order or event has a timestamp: pass --as-of YYYY-MM-DD")
    return row["ts"].date()


def _count(condition: Column) -> Column:
    return F.count_if(condition).cast("long")


def _sum(condition: Column, value: Column) -> Column:
    return F.coalesce(F.sum(F.when(condition, value)), F.lit(0.0))


def _day_end(as_of: dt.date) -> dt.datetime:
    """The exclusive end of an as_of day: the next midnight UTC, so every instant of the day counts, nothing after."""
    return dt.datetime.combine(as_of + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)


def customer_features(facts: Facts, as_of: dt.date) -> DataFrame:
    """Features of every person seen by the end of ``as_of``, from facts up to then only.

    In: ``facts`` (silver contracts). Out: ``cdp_id``, ``as_of`` date, then every name in ``FEATURES`` in order;
    one row per cdp_id of the identity map with at least one fact (or record) at or before the end of as_of.
    """
    return customer_features_at(facts, [as_of])


def customer_features_at(facts: Facts, as_ofs: Sequence[dt.date]) -> DataFrame:
    """The snapshots of :func:`customer_features` at every date of ``as_ofs``, computed in one pass over the facts.

    In: ``facts`` (silver contracts), ``as_ofs`` (at least one date). Out: ``cdp_id``, ``as_of`` date, then every
    name in ``FEATURES`` in order; per as_of, one row per cdp_id of the identity map with at least one fact (or
    record) at or before the end of that as_of.
    """
    if not as_ofs:
        raise ValueError("customer_features_at: give at least one as-of date")
    dates = sorted(set(as_ofs))
    # A handful of (as_of, _end) pairs: a fact row becomes one row per as_of whose end it is before.
    as_of_ends = F.array(*[F.struct(F.lit(d).alias("as_of"), F.lit(_day_end(d)).alias("_end")) for d in dates])
    last_end = F.lit(_day_end(dates[-1]))
    imap = facts.identity_map

    def per_as_of(df: DataFrame, ts: str) -> DataFrame:
        return df.select("*", F.inline(as_of_ends)).where(F.col(ts) < F.col("_end")).drop("_end")

    def cut(fact: DataFrame, ts: str) -> DataFrame:
        # Each fact is joined with the identity map once for all as_ofs; facts after the last end never count.
        joined = _with_cdp_id(fact.where(F.col(ts) < last_end), imap)
        return per_as_of(joined, ts).withColumn("_age", F.datediff(F.col("as_of"), F.to_date(ts)))

    def within(days: int) -> Column:
        return F.col("_age") < days

    orders = cut(facts.orders, "order_ts").withColumn("amount", F.col("amount").cast("double"))
    amount = F.col("amount")
    online = F.col("channel") == "online"
    store = F.col("channel") == "store"
    order_features = orders.groupBy("cdp_id", "as_of").agg(
        F.min("_age").alias("recency_days"),
        F.count(F.lit(1)).alias("frequency"),
        F.avg(amount).alias("monetary_value"),
        F.coalesce(F.sum(amount), F.lit(0.0)).alias("total_spend"),
        *[_count(within(n)).alias(f"orders_{n}d") for n in (30, 90, 365)],
        *[_sum(within(n), amount).alias(f"spend_{n}d") for n in (30, 90, 365)],
        *[F.avg(F.when(within(n), amount)).alias(f"aov_{n}d") for n in (90, 365)],
        _count(within(365) & online).alias("online_orders_365d"),
        _count(within(365) & store).alias("store_orders_365d"),
    )

    # BG/NBD counts purchase occasions: one per person and day, valued at the day's total (cdp_spark.ml.clv).
    purchase_days = orders.groupBy("cdp_id", "as_of", "_age").agg(
        F.coalesce(F.sum(amount), F.lit(0.0)).alias("day_value")
    )
    bgnbd = purchase_days.groupBy("cdp_id", "as_of").agg(
        (F.count(F.lit(1)) - 1).cast("long").alias("bgnbd_frequency"),
        (F.max("_age") - F.min("_age")).alias("bgnbd_recency_days"),
        F.max("_age").alias("bgnbd_t_days"),
        F.when(
            F.count(F.lit(1)) > 1,
            (F.sum("day_value") - F.max_by("day_value", "_age")) / (F.count(F.lit(1)) - 1),
        )
        .otherwise(F.lit(0.0))
        .alias("bgnbd_monetary"),
    )

    events = cut(facts.events, "event_ts")
    web = F.col("platform") == "web"
    event_features = events.groupBy("cdp_id", "as_of").agg(
        _count(within(30) & web).alias("web_events_30d"),
        _count(within(30) & (F.col("platform") == "app")).alias("app_events_30d"),
        _count(within(30) & (F.col("event_type") == "login")).alias("logins_30d"),
        F.min(F.when(web, F.col("_age"))).alias("days_since_last_web"),
    )

    emails = cut(facts.email_engagement, "event_ts")
    opened = F.col("event_type") == "open"
    email_features = emails.groupBy("cdp_id", "as_of").agg(
        _count(within(90) & opened).alias("email_opens_90d"),
        _count(within(90) & (F.col("event_type") == "click")).alias("email_clicks_90d"),
        F.bool_or(F.col("event_type") == "unsubscribe").alias("email_unsubscribed"),
        F.min(F.when(opened, F.col("_age"))).alias("days_since_last_email_open"),
    )

    tickets = cut(facts.support_tickets, "created_at")
    ticket_features = tickets.groupBy("cdp_id", "as_of").agg(
        _count(within(365)).alias("tickets_365d"),
        F.avg(F.when(within(365), F.col("satisfaction").cast("double"))).alias("avg_satisfaction_365d"),
        F.min("_age").alias("days_since_last_ticket"),
    )

    seen = _fact_times(facts)
    if facts.customer_records is not None:
        seen = seen.unionByName(facts.customer_records.select("record_id", F.col("updated_at").alias("ts")))
    first_seen = (
        _with_cdp_id(seen.where(F.col("ts") < last_end), imap).groupBy("cdp_id").agg(F.min("ts").alias("first_ts"))
    )
    # The first moment seen before an as_of's end is the first moment of all, when that one is before the end.
    population = per_as_of(first_seen, "first_ts").select(
        "cdp_id", "as_of", F.datediff(F.col("as_of"), F.to_date("first_ts")).alias("tenure_days")
    )

    joined = population
    for part in (order_features, bgnbd, event_features, email_features, ticket_features):
        joined = joined.join(part, on=["cdp_id", "as_of"], how="left")

    zero_long = [
        "frequency",
        *[f"orders_{n}d" for n in (30, 90, 365)],
        "online_orders_365d",
        "store_orders_365d",
        "web_events_30d",
        "app_events_30d",
        "logins_30d",
        "email_opens_90d",
        "email_clicks_90d",
        "tickets_365d",
        "bgnbd_frequency",
    ]
    zero_double = ["total_spend", *[f"spend_{n}d" for n in (30, 90, 365)], "bgnbd_monetary"]
    derived = {
        **{c: F.coalesce(F.col(c).cast("long"), F.lit(0).cast("long")) for c in zero_long},
        **{c: F.coalesce(F.col(c), F.lit(0.0)) for c in zero_double},
        "email_unsubscribed": F.coalesce(F.col("email_unsubscribed"), F.lit(False)),
        "channel_online": F.coalesce(F.col("online_orders_365d") > 0, F.lit(False)),
        "channel_store": F.coalesce(F.col("store_orders_365d") > 0, F.lit(False)),
        "days_since_last_order": F.col("recency_days"),
    }
    return joined.select(
        "cdp_id",
        "as_of",
        *[(derived[name] if name in derived else F.col(name)).alias(name) for name in FEATURE_NAMES],
    )


def render_features_doc() -> str:
    """docs/features.md, rendered from ``FEATURES`` (a test keeps the file in step with the list)."""
    lines = [
        "# Customer features",
        "",
        "<!-- Generated from cdp_spark/features.py FEATURES by render_features_doc(); edit the list, not this"
        " file. -->",
        "",
        "`gold.customer_features` holds one row per person (`cdp_id`) and `as_of` date, computed only from facts",
        "dated at or before the end of the as_of day (UTC, inclusive). An N-day window is the N calendar days",
        'ending on as_of. Counts and sums are 0 without activity; means and "days since" are null when there is',
        "nothing to measure. A person appears in a snapshot once any fact or record of theirs is dated at or",
        "before its as_of.",
        "",
        "| feature | window (days) | meaning |",
        "| --- | --- | --- |",
    ]
    for feature in FEATURES:
        window = "" if feature.window_days is None else str(feature.window_days)
        lines.append(f"| `{feature.name}` | {window} | {feature.meaning} |")
    return "\n".join(lines) + "\n"
