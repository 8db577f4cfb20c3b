"""Environment signals from real calendars, as ``EnvSignal`` messages for the env-signals topic.

Public holidays come from the ``holidays`` package (maintained, offline: no calendar service
to call), named in English whatever the country (the agents read them). Each holiday of a
country between two dates becomes:

* a ``holiday`` signal valid for its day (UTC), text ``"Christmas Day (United Kingdom)"``;
* for a gift holiday (``GIFT_HOLIDAYS``: Christmas by default), also a ``holiday_leadup``
  signal valid for the ``lead_days`` before it, text ``"lead-up to Christmas Day on
  25 December (United Kingdom)"``: the weeks a shop cares about.

The signal's region is the name the logs give the users' region (Online Retail writes
``"United Kingdom"``, not ``GB``): a country is given as ``CODE=Region name``, or as ``CODE``
alone when the users' region is the code; ``countries_of`` finds the countries of a log's
region names (``"EIRE"`` is Ireland). Signal ids are stable (the same calendar published
twice is the same signals), so a worker applies each once.

Weather has no offline source here: ``weather_signal`` is the example a forecast feed would
follow (a condition from a fixed list, the temperature as a 5 °C band, the region).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal

import holidays

from intentstream.schemas.events import EnvSignal, SignalKind

SignalSource = Literal["none", "holidays"]  # what `replay`, `bench replay` and `eval` carry
SIGNAL_SOURCES: tuple[SignalSource, ...] = ("none", "holidays")
GIFT_HOLIDAYS = ("christmas day",)  # names (case-folded) that get a lead-up signal
LEAD_DAYS = 21
MAX_SPAN_DAYS = 3 * 366  # a calendar request longer than this is a mistake, not a use
_CODE = re.compile(r"^[A-Z]{2}(-[A-Z0-9]{1,3})?$")  # ISO 3166-1 alpha-2, optional subdivision


class CalendarError(ValueError):
    """A country or a date range the calendar cannot serve, said in words."""


@dataclass(frozen=True, slots=True)
class Country:
    """A country (and optionally a subdivision) and the region name its users carry."""

    code: str  # "GB", or "GB-SCT" for a subdivision
    region: str

    @classmethod
    def parse(cls, spec: str) -> Country:
        """``"GB=United Kingdom"`` or ``"GB"``."""
        code, _, region = spec.partition("=")
        code = code.strip().upper()
        if not _CODE.match(code):
            raise CalendarError(
                f"{spec!r}: a country is an ISO code such as GB or GB-SCT, optionally =Region name"
            )
        region = region.strip() or code
        if len(region) > 64:
            raise CalendarError(f"{spec!r}: a region name is at most 64 characters")
        return cls(code, region)


def holiday_signals(
    countries: Iterable[Country],
    start: date,
    end: date,
    *,
    lead_days: int = LEAD_DAYS,
    gift_holidays: Iterable[str] = GIFT_HOLIDAYS,
    now: datetime | None = None,
) -> list[EnvSignal]:
    """The signals of ``countries`` in force between ``start`` and ``end`` inclusive, in time
    order: each holiday on those days, and each lead-up that overlaps them (the lead-up to a
    Christmas after ``end`` included). Raises :class:`CalendarError` for an unknown country
    or subdivision, or a range that is empty or longer than ``MAX_SPAN_DAYS``."""
    if end < start:
        raise CalendarError(f"the range ends ({end}) before it starts ({start})")
    if (end - start).days > MAX_SPAN_DAYS:
        raise CalendarError(f"the range is longer than {MAX_SPAN_DAYS} days: {start} to {end}")
    if not 0 <= lead_days <= 90:
        raise CalendarError(f"lead days must be 0 to 90, not {lead_days}")
    published = now or datetime.now(UTC)
    gifts = {g.casefold() for g in gift_holidays}
    last = end + timedelta(days=lead_days)  # a holiday this late still has its lead-up in range
    signals: list[EnvSignal] = []
    for country in countries:
        code, _, subdiv = country.code.partition("-")
        try:
            calendar = holidays.country_holidays(
                code, subdiv=subdiv or None, years=range(start.year, last.year + 1), language="en_US"
            )
        except NotImplementedError as exc:  # the package's way of saying "no such country"
            raise CalendarError(f"no holiday calendar for {country.code!r}: {exc}") from exc
        for day, names in sorted(calendar.items()):
            if not start <= day <= last:
                continue
            for name in names.split("; "):  # two holidays on one day come joined
                at = datetime.combine(day, time(), UTC)
                if day <= end:
                    signals.append(
                        EnvSignal(
                            signal_id=f"holiday-{country.code}-{day:%Y%m%d}-{_slug(name)}",
                            kind=SignalKind.HOLIDAY,
                            text=f"{name} ({country.region})",
                            region=country.region,
                            valid_from=at,
                            valid_until=at + timedelta(days=1),
                            ts=published,
                        )
                    )
                if lead_days and name.casefold() in gifts and day > start:
                    signals.append(
                        EnvSignal(
                            signal_id=f"leadup-{country.code}-{day:%Y%m%d}-{_slug(name)}",
                            kind=SignalKind.HOLIDAY_LEADUP,
                            text=f"lead-up to {name} on {day.day} {day:%B} ({country.region})",
                            region=country.region,
                            valid_from=at - timedelta(days=lead_days),
                            valid_until=at,
                            ts=published,
                        )
                    )
    return sorted(signals, key=lambda s: (s.valid_from, s.signal_id))


# Region names the logs use that are not a country's name in the calendar (Online Retail's).
REGION_ALIASES = {"eire": "IE", "usa": "US", "rsa": "ZA", "czech republic": "CZ"}


def countries_of(regions: Iterable[str]) -> tuple[list[Country], list[str]]:
    """The countries whose calendars serve users of ``regions`` (a log's region names: a
    country's English name, its ISO code, or an alias in ``REGION_ALIASES``), and the regions
    no country's calendar serves (say, "European Community" or "Unspecified")."""
    names: dict[str, str] = {}
    for entry in holidays.registry.COUNTRIES.values():
        class_name, code = entry[0], entry[1]
        names[class_name.casefold()] = code
        names[code.casefold()] = code
        names[entry[2].casefold()] = code
    names |= {alias: code for alias, code in REGION_ALIASES.items()}
    found: list[Country] = []
    unknown: list[str] = []
    for region in sorted(set(regions)):
        found_code = names.get(region.casefold()) or names.get(re.sub(r"[^a-z]", "", region.casefold()))
        if found_code is None:
            unknown.append(region)
        else:
            found.append(Country(found_code, region))
    return found, unknown


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.casefold()).strip("-")[:40]


WEATHER_CONDITIONS = (
    "clear",
    "cloudy",
    "rain",
    "heavy rain",
    "snow",
    "storm",
    "fog",
    "heat wave",
    "cold snap",
)
TEMPERATURE_BAND_C = 5  # temperatures are stated as 5 °C bands: "10 to 15 °C"


def weather_signal(
    region: str,
    condition: str,
    temperature_c: float,
    valid_from: datetime,
    valid_until: datetime,
    *,
    now: datetime | None = None,
) -> EnvSignal:
    """A weather signal as a forecast feed would publish it (an example producer: no weather
    service is called here). ``condition`` is one of ``WEATHER_CONDITIONS``; the temperature
    is stated as its 5 °C band, so a forecast that moves by a degree is the same signal (its
    id is the region, the window's start, the condition and the band)."""
    if condition not in WEATHER_CONDITIONS:
        raise CalendarError(
            f"unknown weather condition {condition!r}: one of {', '.join(WEATHER_CONDITIONS)}"
        )
    if not -60.0 <= temperature_c <= 60.0:
        raise CalendarError(f"a temperature of {temperature_c} °C is no forecast")
    low = int(temperature_c // TEMPERATURE_BAND_C * TEMPERATURE_BAND_C)
    band = f"{low} to {low + TEMPERATURE_BAND_C} °C"
    slug = _slug(f"{region} {valid_from:%Y%m%d%H} {condition} {low}")
    return EnvSignal(
        signal_id=f"weather-{slug}",
        kind=SignalKind.WEATHER,
        text=f"{condition}, {band}",
        region=region,
        valid_from=valid_from,
        valid_until=valid_until,
        ts=now or datetime.now(UTC),
    )
