"""Standardization rules as data: the ``standardize:`` section users override in conf/sources.yaml or expectations.yaml.

Every model has defaults that suit US/UK customer data; every list and map can be replaced in YAML.
Values are normalized once here (lowercase, dots dropped from titles ...) so the Spark code below the
edge never has to second-guess them.
"""

from __future__ import annotations

import re
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from pydantic import Field, field_validator, model_validator

from cdp_spark.config import Strict

# --------------------------------------------------------------------------------------------
# Emails
# --------------------------------------------------------------------------------------------

_DOMAIN = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$")


def _domain(value: str) -> str:
    domain = value.strip().lower()
    if not _DOMAIN.match(domain):
        raise ValueError(f"{value!r} is not a domain name like gmail.com")
    return domain


class EmailProviderRule(Strict):
    """How one mailbox provider treats the local part: addresses that differ only by these land in one inbox."""

    domains: list[str] = Field(min_length=1, description="domains served by the provider, e.g. gmail.com")
    canonical_domain: str = Field(description="the one domain all of them are rewritten to")
    remove_dots: bool = Field(False, description="dots in the local part are ignored by the provider")
    remove_plus_tag: bool = Field(False, description="'+anything' after the local part is ignored")

    @field_validator("domains")
    @classmethod
    def _domains(cls, domains: list[str]) -> list[str]:
        return [_domain(d) for d in domains]

    @field_validator("canonical_domain")
    @classmethod
    def _canonical(cls, domain: str) -> str:
        return _domain(domain)


GMAIL = EmailProviderRule(
    domains=["gmail.com", "googlemail.com"], canonical_domain="gmail.com", remove_dots=True, remove_plus_tag=True
)


class EmailRules(Strict):
    providers: list[EmailProviderRule] = Field(default_factory=lambda: [GMAIL])

    @model_validator(mode="after")
    def _one_rule_per_domain(self) -> EmailRules:
        seen: set[str] = set()
        for rule in self.providers:
            twice = seen.intersection(rule.domains)
            if twice:
                raise ValueError(f"domain(s) {sorted(twice)} appear in more than one provider rule")
            seen.update(rule.domains)
        return self


# --------------------------------------------------------------------------------------------
# Phones
# --------------------------------------------------------------------------------------------


class PhoneRules(Strict):
    default_region: str = Field(
        "US", description="ISO 3166 region assumed for numbers written without +country code (and no row country)"
    )

    @field_validator("default_region")
    @classmethod
    def _known_region(cls, region: str) -> str:
        region = region.strip().upper()
        if region not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"{region!r} is not a region phonenumbers knows (ISO 3166 alpha-2, e.g. US, GB, DE)")
        return region


# --------------------------------------------------------------------------------------------
# Names
# --------------------------------------------------------------------------------------------

DEFAULT_TITLES = ["mr", "mrs", "ms", "miss", "mx", "dr", "prof", "sir", "dame", "lady", "lord", "rev", "fr", "hon"]
DEFAULT_SUFFIXES = ["jr", "sr", "ii", "iii", "iv", "phd", "md", "dds", "esq", "mba", "cpa", "jnr", "snr"]


def _word_list(words: list[str]) -> list[str]:
    # "Ph.D." and "phd" are the same suffix: the patterns accept dots after every letter anyway.
    cleaned = [w.strip().lower().replace(".", "") for w in words]
    bad = [w for w, c in zip(words, cleaned, strict=True) if not re.fullmatch(r"[a-z]+", c)]
    if bad:
        raise ValueError(f"entries must be single words of letters a-z (dots allowed), got {bad}")
    return list(dict.fromkeys(cleaned))


class NameRules(Strict):
    titles: list[str] = Field(default_factory=lambda: list(DEFAULT_TITLES), description="removed before a name")
    suffixes: list[str] = Field(default_factory=lambda: list(DEFAULT_SUFFIXES), description="removed after a name")

    @field_validator("titles", "suffixes")
    @classmethod
    def _words(cls, words: list[str]) -> list[str]:
        return _word_list(words)


# --------------------------------------------------------------------------------------------
# Addresses
# --------------------------------------------------------------------------------------------

# Variant -> canonical word, canonical = the USPS Publication 28 abbreviation. Abbreviating (not expanding)
# is the safe direction: "st" may mean street or saint, and both sides of a comparison map to "st" either way.
DEFAULT_ADDRESS_ABBREVIATIONS: dict[str, str] = {
    "street": "st", "str": "st", "strt": "st",
    "avenue": "ave", "av": "ave", "aven": "ave", "avenu": "ave", "avn": "ave", "avnue": "ave",
    "road": "rd",
    "boulevard": "blvd", "boul": "blvd", "boulv": "blvd",
    "drive": "dr", "drv": "dr", "driv": "dr",
    "lane": "ln",
    "court": "ct",
    "place": "pl",
    "terrace": "ter",
    "circle": "cir", "circ": "cir",
    "highway": "hwy", "hiway": "hwy",
    "parkway": "pkwy", "pky": "pkwy", "parkwy": "pkwy",
    "square": "sq",
    "trail": "trl",
    "crescent": "cres",
    "close": "cl",
    "gardens": "gdns",
    "expressway": "expy",
    "freeway": "fwy",
    "route": "rte",
    "mount": "mt",
    "fort": "ft",
    "heights": "hts",
    "apartment": "apt", "apmt": "apt",
    "suite": "ste",
    "floor": "fl",
    "building": "bldg", "bld": "bldg",
    "room": "rm",
    "north": "n", "south": "s", "east": "e", "west": "w",
    "northeast": "ne", "northwest": "nw", "southeast": "se", "southwest": "sw",
}  # fmt: skip

# Names people write for a country -> ISO 3166 alpha-2. "uk" is listed because it is not ISO (GB is).
DEFAULT_COUNTRY_ALIASES: dict[str, str] = {
    "usa": "US", "united states": "US", "united states of america": "US", "america": "US",
    "uk": "GB", "united kingdom": "GB", "great britain": "GB", "britain": "GB",
    "england": "GB", "scotland": "GB", "wales": "GB", "northern ireland": "GB",
    "canada": "CA", "deutschland": "DE", "germany": "DE", "france": "FR", "ireland": "IE",
}  # fmt: skip


class AddressRules(Strict):
    abbreviations: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_ADDRESS_ABBREVIATIONS))
    country_aliases: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_COUNTRY_ALIASES))
    default_country: str | None = Field(None, description="ISO alpha-2 assumed when a row has no country")
    pad_us_zip: bool = Field(True, description="3-4 digit US ZIPs lost their leading zeros in a spreadsheet: pad")

    @field_validator("abbreviations")
    @classmethod
    def _single_words(cls, mapping: dict[str, str]) -> dict[str, str]:
        cleaned = {k.strip().lower(): v.strip().lower() for k, v in mapping.items()}
        bad = [f"{k}: {v}" for k, v in cleaned.items() if not re.fullmatch(r"[a-z0-9]+", k + v)]
        if bad:
            raise ValueError(f"abbreviations map one word (a-z, 0-9) to one word, got {bad}")
        return cleaned

    @field_validator("country_aliases")
    @classmethod
    def _aliases(cls, mapping: dict[str, str]) -> dict[str, str]:
        cleaned = {" ".join(k.lower().replace(".", "").split()): v.strip().upper() for k, v in mapping.items()}
        bad = [f"{k}: {v}" for k, v in cleaned.items() if not re.fullmatch(r"[A-Z]{2}", v)]
        if bad:
            raise ValueError(f"country aliases map a name to an ISO 3166 alpha-2 code like GB, got {bad}")
        return cleaned

    @field_validator("default_country")
    @classmethod
    def _country(cls, country: str | None) -> str | None:
        if country is None:
            return None
        if not re.fullmatch(r"[A-Za-z]{2}", country.strip()):
            raise ValueError(f"expected an ISO 3166 alpha-2 code like US, got {country!r}")
        return country.strip().upper()


# --------------------------------------------------------------------------------------------
# Dates and timestamps
# --------------------------------------------------------------------------------------------

# Letters Spark 3+ accepts in datetime patterns (others, like Y or u, fail at query time).
_PATTERN_LETTERS = set("GyDMLdQqEFahKkHmsSVzOXxZ")


def _check_pattern(pattern: str) -> str:
    unquoted = re.sub(r"'[^']*'", "", pattern)
    bad = sorted({ch for ch in unquoted if ch.isalpha() and ch not in _PATTERN_LETTERS})
    if not pattern.strip() or bad:
        raise ValueError(f"{pattern!r} is not a Spark datetime pattern (unsupported letters: {bad})")
    return pattern


class DateRules(Strict):
    # One letter (M, d) parses both "2/3/2024" and "02/03/2024". The first format that parses wins,
    # so the order settles ambiguous days like 02/03/2024 (US month-first by default).
    date_formats: list[str] = Field(default_factory=lambda: ["yyyy-M-d", "M/d/yyyy", "d.M.yyyy"], min_length=1)
    timestamp_formats: list[str] = Field(
        default_factory=lambda: ["M/d/yyyy H:mm:ss", "M/d/yyyy H:mm", "d.M.yyyy H:mm:ss", "d.M.yyyy H:mm"],
        description="non-ISO timestamp layouts, read as wall-clock time in naive_timezone (ISO 8601 is always read)",
    )
    naive_timezone: str = Field("UTC", description="IANA zone of timestamps written without Z or an offset")
    min_year: int = Field(1900, description="earlier values are placeholders or typos: null")
    max_year: int = Field(2100, description="later values are placeholders (9999-12-31) or typos: null")

    @field_validator("date_formats", "timestamp_formats")
    @classmethod
    def _patterns(cls, patterns: list[str]) -> list[str]:
        return [_check_pattern(p) for p in patterns]

    @field_validator("naive_timezone")
    @classmethod
    def _zone(cls, zone: str) -> str:
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{zone!r} is not an IANA time zone like UTC or Europe/London") from None
        return zone

    @model_validator(mode="after")
    def _years(self) -> DateRules:
        if not 1 <= self.min_year <= self.max_year <= 9999:
            raise ValueError(f"need 1 <= min_year <= max_year <= 9999, got {self.min_year} and {self.max_year}")
        return self


# --------------------------------------------------------------------------------------------
# All of them
# --------------------------------------------------------------------------------------------


class StandardizeRules(Strict):
    emails: EmailRules = Field(default_factory=EmailRules)
    phones: PhoneRules = Field(default_factory=PhoneRules)
    names: NameRules = Field(default_factory=NameRules)
    addresses: AddressRules = Field(default_factory=AddressRules)
    dates: DateRules = Field(default_factory=DateRules)


class StandardizeColumns(Strict):
    """Which columns of a source hold which kind of value; ``standardize`` adds the standard columns for each."""

    emails: list[str] = Field(default_factory=list)
    phones: list[str] = Field(default_factory=list)
    names: list[str] = Field(default_factory=list)
    addresses: list[str] = Field(default_factory=list, description="address lines (and city) to normalize")
    postcode: str | None = None
    country: str | None = Field(None, description="row country: postcode format and phone region")
    dates: list[str] = Field(default_factory=list)
    timestamps: list[str] = Field(default_factory=list)
