"""Standardization functions, case by case: one table of (input -> expected) per kind of value.

Each table is evaluated in one Spark job (module fixture) and each case is its own test.
"""

from __future__ import annotations

import datetime as dt

import pytest
from pyspark.sql import functions as F

from cdp_spark.normalize.addresses import normalize_address, normalize_city, normalize_country, normalize_postcode
from cdp_spark.normalize.dates import parse_date, parse_timestamp
from cdp_spark.normalize.emails import email_valid, normalize_email
from cdp_spark.normalize.names import normalize_name, split_full_name
from cdp_spark.normalize.phones import phone_e164
from cdp_spark.normalize.rules import AddressRules, DateRules, EmailRules, NameRules, PhoneRules, StandardizeRules
from cdp_spark.silver import standardize_rows

EMAILS = [
    ("jane.doe@example.com", "jane.doe@example.com"),
    ("Jane.Doe@Example.COM", "jane.doe@example.com"),
    ("  jane@example.com  ", "jane@example.com"),
    ("jane @ example.com", "jane@example.com"),
    ("\u00a0jane@example.com\u200b", "jane@example.com"),
    ("j.a.n.e@gmail.com", "jane@gmail.com"),
    ("Jane.Doe+news@gmail.com", "janedoe@gmail.com"),
    ("janedoe@googlemail.com", "janedoe@gmail.com"),
    ("jane.doe+a+b@googlemail.com", "janedoe@gmail.com"),
    ("jane.doe+news@example.com", "jane.doe+news@example.com"),
    ("jane.doe@yahoo.com", "jane.doe@yahoo.com"),
    ("o'brien@example.ie", "o'brien@example.ie"),
    ("first_last-1@sub.example.co.uk", "first_last-1@sub.example.co.uk"),
    ("user@xn--bcher-kva.example", "user@xn--bcher-kva.example"),
    ("a@b.io", "a@b.io"),
    ("test@test.com", "test@test.com"),
    ("", None),
    ("   ", None),
    (None, None),
    ("jane", None),
    ("jane@", None),
    ("@example.com", None),
    ("jane@@example.com", None),
    ("jane@example", None),
    ("jane@example.c", None),
    ("jane..doe@example.com", None),
    (".jane@example.com", None),
    ("jane.@example.com", None),
    ("jane@-example.com", None),
    ("jane@example-.com", None),
    ("jane@exa_mple.com", None),
    ("jane(doe)@example.com", None),
    ("+news@gmail.com", None),
    ("...@gmail.com", None),
    ("a" * 65 + "@example.com", None),
    ("jane@" + "a" * 250 + ".com", None),
]

PHONES = [
    ("(415) 555-2671", "US", "+14155552671"),
    ("415.555.2671", "US", "+14155552671"),
    ("415-555-2671", "US", "+14155552671"),
    ("4155552671", "US", "+14155552671"),
    ("1 415 555 2671", "US", "+14155552671"),
    ("+1 415 555 2671", "US", "+14155552671"),
    ("+1-415-555-2671", "US", "+14155552671"),
    ("001 415 555 2671", "US", "+14155552671"),
    ("  (415)5552671 ", "US", "+14155552671"),
    ("415 555 2671 ext. 12", "US", "+14155552671"),
    ("+14155552671", "GB", "+14155552671"),
    ("(212) 555-0100", "US", "+12125550100"),
    ("020 7946 0018", "GB", "+442079460018"),
    ("+44 20 7946 0018", "US", "+442079460018"),
    ("0044 20 7946 0018", "US", "+442079460018"),
    ("07911 123456", "GB", "+447911123456"),
    ("+44 (0) 7911 123456", "GB", "+447911123456"),
    ("07700 900123", "GB", None),  # Ofcom's range reserved for drama: not a real mobile
    ("030 123456", "DE", "+4930123456"),
    ("+49 30 123456", "US", "+4930123456"),
    ("01 23 45 67 89", "FR", "+33123456789"),
    ("(613) 555-0199", "CA", "+16135550199"),
    ("613 995 0000", "CA", "+16139950000"),
    ("+33 1 23 45 67 89", "GB", "+33123456789"),
    ("02 9374 4000", "AU", "+61293744000"),
    ("555-2671", "US", None),
    ("123", "US", None),
    ("000-000-0000", "US", None),
    ("phone", "US", None),
    ("", "US", None),
    ("   ", "US", None),
    (None, "US", None),
    ("+999 123 456", "US", None),
    ("1" * 80, "US", None),
]

NAMES = [
    ("jane", "Jane"),
    ("JANE", "Jane"),
    ("  jane   doe ", "Jane Doe"),
    ("Mr. John Smith", "John Smith"),
    ("mr john smith", "John Smith"),
    ("Dr John Smith", "John Smith"),
    ("Prof. Dr. Anna Weber", "Anna Weber"),
    ("Mrs. Smith", "Smith"),
    ("Ms Jane Doe", "Jane Doe"),
    ("Mx. Sam Lee", "Sam Lee"),
    ("John Smith Jr.", "John Smith"),
    ("John Smith, Jr.", "John Smith"),
    ("John Smith III", "John Smith"),
    ("Jane Doe, PhD", "Jane Doe"),
    ("Jane Doe Ph.D.", "Jane Doe"),
    ("Dr. Jane Doe, M.D.", "Jane Doe"),
    ("mary-jane o'neil", "Mary-Jane O'Neil"),
    ("O'BRIEN", "O'Brien"),
    ("smith-jones", "Smith-Jones"),
    ("josé garcía", "José García"),
    ("JOSÉ", "José"),
    ("Jose\u0301", "José"),  # decomposed accent -> composed
    ("ｊａｎｅ", "Jane"),  # fullwidth letters
    ("zoë", "Zoë"),
    ("MÜLLER", "Müller"),
    ("jane\u00a0doe", "Jane Doe"),
    ("Jane Doe,", "Jane Doe"),
    ("Miss", None),
    ("", None),
    ("   ", None),
    (None, None),
    ("Drake", "Drake"),  # a name starting with a title's letters is not a title
    ("Misty Reverend", "Misty Reverend"),
    ("Jr", None),
]

ADDRESSES = [
    ("12 Main Street", "12 main st"),
    ("12 MAIN ST.", "12 main st"),
    ("12  main   st", "12 main st"),
    ("12 Main St., Apt. #4", "12 main st apt 4"),
    ("12 Main Street Apartment 4", "12 main st apt 4"),
    ("99 Sunset Boulevard", "99 sunset blvd"),
    ("99 Sunset Blvd.", "99 sunset blvd"),
    ("5 Oak Avenue", "5 oak ave"),
    ("5 Oak Av", "5 oak ave"),
    ("5 Oak Ave.", "5 oak ave"),
    ("7 Elm Road", "7 elm rd"),
    ("7 Elm Drive", "7 elm dr"),
    ("7 Elm Lane", "7 elm ln"),
    ("7 Elm Court", "7 elm ct"),
    ("1 Park Place", "1 park pl"),
    ("1 Ocean Parkway", "1 ocean pkwy"),
    ("2 Pacific Highway", "2 pacific hwy"),
    ("10 North Main Street", "10 n main st"),
    ("10 N. Main St.", "10 n main st"),
    ("400 South West Street", "400 s w st"),
    ("3 Northeast Terrace", "3 ne ter"),
    ("Suite 200, 1 Market Square", "ste 200 1 market sq"),
    ("1 Rue de l'Église", "1 rue de leglise"),
    ("Königstraße 5", "konigstrasse 5"),
    ("12 Main St\u00a0", "12 main st"),
    ("PO Box 123", "po box 123"),
    ("221B Baker Street", "221b baker st"),
    ("1600 Pennsylvania Avenue NW", "1600 pennsylvania ave nw"),
    ("Flat 3, 10 Downing Street", "flat 3 10 downing st"),
    ("", None),
    ("  ,  ", None),
    (None, None),
]

POSTCODES = [
    ("02134", "US", "02134"),
    ("2134", "US", "02134"),
    ("213", "US", "00213"),
    ("02134-1234", "US", "02134-1234"),
    ("021341234", "US", "02134-1234"),
    (" 94103 ", "US", "94103"),
    ("94103", None, "94103"),
    ("9410", "US", "09410"),
    ("ABCDE", "US", None),
    ("941033", "US", None),
    ("sw1a 1aa", "GB", "SW1A 1AA"),
    ("SW1A1AA", "GB", "SW1A 1AA"),
    ("ec1a  1bb", "GB", "EC1A 1BB"),
    ("M1 1AE", "GB", "M1 1AE"),
    ("B33 8TH", "GB", "B33 8TH"),
    ("12345", "GB", None),
    ("10115", "DE", "10115"),
    ("k1a 0b1", "CA", "K1A0B1"),
    ("", "US", None),
    (None, "US", None),
]

COUNTRIES = [
    ("US", "US"),
    ("us", "US"),
    ("USA", "US"),
    ("U.S.A.", "US"),
    ("United States", "US"),
    ("united  states of america", "US"),
    ("UK", "GB"),
    ("United Kingdom", "GB"),
    ("England", "GB"),
    ("gb", "GB"),
    ("Deutschland", "DE"),
    ("France", "FR"),
    ("Narnia", None),
    ("", None),
    (None, None),
]

DATES = [
    ("2026-01-02", dt.date(2026, 1, 2)),
    ("2026-1-2", dt.date(2026, 1, 2)),
    ("1/2/2026", dt.date(2026, 1, 2)),
    ("01/02/2026", dt.date(2026, 1, 2)),
    ("2.1.2026", dt.date(2026, 1, 2)),
    ("2026-01-02T10:11:12Z", dt.date(2026, 1, 2)),
    ("2026-01-02 10:11:12", dt.date(2026, 1, 2)),
    (" 1985-07-30 ", dt.date(1985, 7, 30)),
    ("2026-02-30", None),
    ("13/13/2026", None),
    ("1850-01-01", None),
    ("9999-12-31", None),
    ("not a date", None),
    ("", None),
    (None, None),
]

TIMESTAMPS = [
    ("2026-01-02T10:11:12Z", dt.datetime(2026, 1, 2, 10, 11, 12)),
    ("2026-01-02T10:11:12+02:00", dt.datetime(2026, 1, 2, 8, 11, 12)),
    ("2026-01-02T10:11:12-0500", dt.datetime(2026, 1, 2, 15, 11, 12)),
    ("2026-01-02 10:11:12", dt.datetime(2026, 1, 2, 10, 11, 12)),
    ("2026-01-02T10:11:12.250Z", dt.datetime(2026, 1, 2, 10, 11, 12, 250000)),
    ("2026-01-02", dt.datetime(2026, 1, 2)),
    ("1/2/2026 10:11:12", dt.datetime(2026, 1, 2, 10, 11, 12)),
    ("1/2/2026 10:11", dt.datetime(2026, 1, 2, 10, 11)),
    ("2.1.2026 10:11:12", dt.datetime(2026, 1, 2, 10, 11, 12)),
    ("2026-13-02T10:11:12Z", None),
    ("yesterday", None),
    ("", None),
    (None, None),
]


def _evaluate(spark, rows, schema, expression):
    df = spark.createDataFrame(list(enumerate(rows)), f"i int, v struct<{schema}>")
    return {r["i"]: r["out"] for r in df.select("i", expression.alias("out")).collect()}


@pytest.fixture(scope="module")
def emails(spark):
    rules = EmailRules()
    rows = [(e,) for e, _ in EMAILS]
    out = _evaluate(
        spark,
        rows,
        "e:string",
        F.struct(normalize_email(F.col("v.e"), rules).alias("n"), email_valid(F.col("v.e"), rules).alias("ok")),
    )
    return out


@pytest.mark.parametrize(("i", "raw", "expected"), [(i, raw, exp) for i, (raw, exp) in enumerate(EMAILS)])
def test_email(emails, i, raw, expected):
    assert emails[i]["n"] == expected, raw
    # valid exactly when a canonical address came out; null only for a missing address
    assert emails[i]["ok"] == (None if raw is None or not raw.strip() else expected is not None)


@pytest.fixture(scope="module")
def phones(spark):
    rows = [(p, r) for p, r, _ in PHONES]
    return _evaluate(spark, rows, "p:string,r:string", phone_e164(F.col("v.p"), PhoneRules(), F.col("v.r")))


@pytest.mark.parametrize(("i", "raw", "region", "expected"), [(i, *case) for i, case in enumerate(PHONES)])
def test_phone(phones, i, raw, region, expected):
    assert phones[i] == expected


def test_phone_default_region_applies_when_the_row_has_none(spark):
    df = spark.createDataFrame([("020 7946 0018", None), ("020 7946 0018", "XX")], "p string, r string")
    out = [r[0] for r in df.select(phone_e164(F.col("p"), PhoneRules(default_region="GB"), F.col("r"))).collect()]
    assert out == ["+442079460018", "+442079460018"]


@pytest.fixture(scope="module")
def names(spark):
    return _evaluate(spark, [(n,) for n, _ in NAMES], "n:string", normalize_name(F.col("v.n"), NameRules()))


@pytest.mark.parametrize(("i", "raw", "expected"), [(i, raw, exp) for i, (raw, exp) in enumerate(NAMES)])
def test_name(names, i, raw, expected):
    assert names[i] == expected


def test_full_name_split(spark):
    df = spark.createDataFrame([("Dr. Mary Ann Smith",), ("Cher",), (None,)], "n string")
    df = df.withColumn("n", normalize_name(F.col("n"), NameRules())).withColumn("n", split_full_name(F.col("n")))
    assert [tuple(r) for r in df.select("n.first", "n.last").collect()] == [
        ("Mary Ann", "Smith"),
        ("Cher", None),
        (None, None),
    ]


@pytest.fixture(scope="module")
def addresses(spark):
    rows = [(a,) for a, _ in ADDRESSES]
    return _evaluate(spark, rows, "a:string", normalize_address(F.col("v.a"), AddressRules()))


@pytest.mark.parametrize(("i", "raw", "expected"), [(i, raw, exp) for i, (raw, exp) in enumerate(ADDRESSES)])
def test_address(addresses, i, raw, expected):
    assert addresses[i] == expected


@pytest.fixture(scope="module")
def postcodes(spark):
    rows = [(p, c) for p, c, _ in POSTCODES]
    return _evaluate(spark, rows, "p:string,c:string", normalize_postcode(F.col("v.p"), F.col("v.c"), AddressRules()))


@pytest.mark.parametrize(("i", "raw", "country", "expected"), [(i, *case) for i, case in enumerate(POSTCODES)])
def test_postcode(postcodes, i, raw, country, expected):
    assert postcodes[i] == expected


@pytest.fixture(scope="module")
def countries(spark):
    rows = [(c,) for c, _ in COUNTRIES]
    return _evaluate(spark, rows, "c:string", normalize_country(F.col("v.c"), AddressRules()))


@pytest.mark.parametrize(("i", "raw", "expected"), [(i, raw, exp) for i, (raw, exp) in enumerate(COUNTRIES)])
def test_country(countries, i, raw, expected):
    assert countries[i] == expected


def test_city(spark):
    df = spark.createDataFrame([(" St. Louis ",), ("SÃO PAULO",), ("",)], "c string")
    assert [r[0] for r in df.select(normalize_city(F.col("c"))).collect()] == ["st louis", "sao paulo", None]


@pytest.fixture(scope="module")
def dates(spark):
    return _evaluate(spark, [(d,) for d, _ in DATES], "d:string", parse_date(F.col("v.d"), DateRules()))


@pytest.mark.parametrize(("i", "raw", "expected"), [(i, raw, exp) for i, (raw, exp) in enumerate(DATES)])
def test_date(dates, i, raw, expected):
    assert dates[i] == expected


@pytest.fixture(scope="module")
def timestamps(spark):
    rows = [(t,) for t, _ in TIMESTAMPS]
    return _evaluate(spark, rows, "t:string", parse_timestamp(F.col("v.t"), DateRules()))


@pytest.mark.parametrize(("i", "raw", "expected"), [(i, raw, exp) for i, (raw, exp) in enumerate(TIMESTAMPS)])
def test_timestamp(timestamps, i, raw, expected):
    assert timestamps[i] == expected


def test_naive_timestamps_read_in_the_configured_zone(spark):
    df = spark.createDataFrame([("2026-07-01 12:00:00",), ("2026-07-01T12:00:00Z",)], "t string")
    rules = DateRules(naive_timezone="America/New_York")
    out = [r[0] for r in df.select(parse_timestamp(F.col("t"), rules)).collect()]
    assert out == [dt.datetime(2026, 7, 1, 16, 0), dt.datetime(2026, 7, 1, 12, 0)]


@pytest.mark.parametrize(
    ("model", "data", "message"),
    [
        (PhoneRules, {"default_region": "ZZ"}, "not a region"),
        (EmailRules, {"providers": [{"domains": ["gmail"], "canonical_domain": "gmail.com"}]}, "not a domain"),
        (NameRules, {"titles": ["dr x"]}, "single words"),
        (AddressRules, {"country_aliases": {"usa": "USA"}}, "alpha-2"),
        (DateRules, {"naive_timezone": "Mars/Base"}, "IANA"),
        (DateRules, {"date_formats": ["yyyy-MM-dd YY"]}, "not a Spark datetime pattern"),
    ],
)
def test_rules_reject_bad_config(model, data, message):
    with pytest.raises(ValueError, match=message):
        model.model_validate(data)


def test_customer_records_take_first_and_last_from_a_full_name(spark):
    """A source that maps only a full name (support): Python UDFs run on it twice (the full name, then the
    first name it gives), so the split must not put one UDF inside a higher-order function under another."""
    rows = [("  dr.  JOSÉ  garcía-lópez ", None), ("Mary Ann Smith", "Marie"), ("Cher", None), (None, None)]
    mapped = spark.createDataFrame(rows, "full_name string, first_name string")
    out = standardize_rows(mapped, "customer_records", StandardizeRules(), columns={"first_name", "last_name"})
    assert "full_name" not in out.columns
    assert [tuple(r) for r in out.select("first_name", "last_name").collect()] == [
        ("José", "García-López"),
        ("Marie", "Smith"),
        ("Cher", None),
        (None, None),
    ]
    only_full = standardize_rows(
        mapped.drop("first_name"), "customer_records", StandardizeRules(), columns={"first_name"}
    )
    assert [r[0] for r in only_full.select("first_name").collect()] == ["José", "Mary Ann", "Cher", None]
