"""Holiday signals from the ``holidays`` calendar: windows, regions, stable ids, and clear
errors for countries and ranges the calendar cannot serve."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import orjson
import pytest

from intentstream.cli import main
from intentstream.schemas.codec import decode_signal, encode
from intentstream.schemas.events import EnvSignal, SignalKind
from intentstream.signal_sources import CalendarError, Country, countries_of, holiday_signals, weather_signal

UK = Country.parse("GB=United Kingdom")
NOW = datetime(2026, 12, 1, tzinfo=UTC)


def test_christmas_is_a_day_long_signal_with_three_weeks_of_lead_up_for_the_users_region() -> None:
    signals = holiday_signals([UK], date(2010, 12, 20), date(2010, 12, 26), now=NOW)
    by_id = {s.signal_id: s for s in signals}
    christmas = by_id["holiday-GB-20101225-christmas-day"]
    assert (christmas.kind, christmas.text, christmas.region) == (
        SignalKind.HOLIDAY, "Christmas Day (United Kingdom)", "United Kingdom"
    )  # fmt: skip
    assert christmas.valid_from == datetime(2010, 12, 25, tzinfo=UTC)
    assert christmas.valid_until - christmas.valid_from == timedelta(days=1)
    leadup = by_id["leadup-GB-20101225-christmas-day"]
    assert leadup.kind == SignalKind.HOLIDAY_LEADUP
    assert (leadup.valid_from, leadup.valid_until) == (
        datetime(2010, 12, 4, tzinfo=UTC),
        christmas.valid_from,
    )
    assert leadup.text == "lead-up to Christmas Day on 25 December (United Kingdom)"
    assert "holiday-GB-20101226-boxing-day" in by_id  # no lead-up: not a gift holiday
    assert not any(s.signal_id.startswith("leadup-GB-20101226") for s in signals)
    assert [s.valid_from for s in signals] == sorted(s.valid_from for s in signals)


def test_a_range_before_christmas_carries_its_lead_up_and_names_are_english() -> None:
    """Online Retail's shipped extract ends on 14 December 2010: the lead-up is in force then,
    Christmas itself is not in range. Germany's calendar is asked for in English."""
    signals = holiday_signals(
        [UK, Country.parse("DE=Germany")], date(2010, 12, 1), date(2010, 12, 14), now=NOW
    )
    assert {s.signal_id for s in signals} == {
        "leadup-GB-20101225-christmas-day",
        "leadup-DE-20101225-christmas-day",
    }
    assert all(s.valid_from == datetime(2010, 12, 4, tzinfo=UTC) for s in signals)
    after = holiday_signals([UK], date(2010, 12, 25), date(2010, 12, 25), now=NOW)
    assert [s.kind for s in after] == [SignalKind.HOLIDAY]  # its lead-up is over by then


def test_a_logs_region_names_find_their_countries() -> None:
    found, unknown = countries_of(["United Kingdom", "EIRE", "Germany", "USA", "RSA", "Channel Islands",
                                   "European Community", "Hong Kong", "Czech Republic", "JP"])  # fmt: skip
    assert {c.region: c.code for c in found} == {
        "United Kingdom": "GB", "EIRE": "IE", "Germany": "DE", "USA": "US", "RSA": "ZA",
        "Hong Kong": "HK", "Czech Republic": "CZ", "JP": "JP",
    }  # fmt: skip
    assert unknown == ["Channel Islands", "European Community"]  # no country's calendar: said, not guessed
    assert countries_of([]) == ([], [])
    assert countries_of(["x" * 64, "'; DROP TABLE", ""])[0] == []


def test_the_same_calendar_published_twice_is_the_same_signals() -> None:
    first = holiday_signals([UK], date(2011, 1, 1), date(2011, 12, 31), now=NOW)
    again = holiday_signals([UK], date(2011, 1, 1), date(2011, 12, 31), now=NOW + timedelta(hours=1))
    assert [s.signal_id for s in first] == [s.signal_id for s in again]
    assert len({s.signal_id for s in first}) == len(first)


def test_every_signal_passes_the_workers_own_codec() -> None:
    signals = holiday_signals([UK, Country.parse("FR=France"), Country.parse("DE")], date(2010, 12, 1),
                              date(2011, 12, 9), now=NOW)  # fmt: skip
    assert {s.region for s in signals} == {"United Kingdom", "France", "DE"}
    for signal in signals:
        assert decode_signal(encode(signal), now=NOW) == signal


def test_a_subdivision_has_its_own_holidays() -> None:
    scotland = holiday_signals(
        [Country.parse("GB-SCT=Scotland")], date(2011, 1, 1), date(2011, 1, 5), now=NOW
    )
    england = holiday_signals([Country.parse("GB-ENG=England")], date(2011, 1, 1), date(2011, 1, 5), now=NOW)
    assert "holiday-GB-SCT-20110102-new-year-holiday" in {s.signal_id for s in scotland}
    assert not any("new-year-holiday" in s.signal_id for s in england)
    assert {s.region for s in scotland} == {"Scotland"}


@pytest.mark.parametrize(
    "spec",
    ["G", "GBR", "gb; drop table", "GB-" + "X" * 10, "GB=" + "x" * 65, "=United Kingdom", "1B"],
)
def test_a_malformed_country_is_refused_in_words(spec: str) -> None:
    with pytest.raises(CalendarError):
        Country.parse(spec)


def test_what_the_calendar_cannot_serve_is_refused_in_words() -> None:
    with pytest.raises(CalendarError, match="no holiday calendar for 'ZZ'"):
        holiday_signals([Country.parse("ZZ")], date(2011, 1, 1), date(2011, 2, 1))
    with pytest.raises(CalendarError, match="before it starts"):
        holiday_signals([UK], date(2011, 2, 1), date(2011, 1, 1))
    with pytest.raises(CalendarError, match="longer than"):
        holiday_signals([UK], date(2000, 1, 1), date(2011, 1, 1))
    with pytest.raises(CalendarError, match="lead days"):
        holiday_signals([UK], date(2011, 1, 1), date(2011, 2, 1), lead_days=-1)


def test_the_cli_prints_the_signals_as_jsonl_or_says_what_is_wrong(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["signals", "--holidays", "GB=United Kingdom", "--from", "2010-12-24", "--to", "2010-12-26",
                 "--print"]) == 0  # fmt: skip
    lines = capsys.readouterr().out.splitlines()
    signals = [EnvSignal.model_validate(orjson.loads(line)) for line in lines]
    assert {s.kind for s in signals} == {SignalKind.HOLIDAY, SignalKind.HOLIDAY_LEADUP}
    assert main(["signals", "--holidays", "ZZ", "--from", "2010-12-24", "--to", "2010-12-26", "--print"]) == 2
    assert "no holiday calendar" in capsys.readouterr().err
    assert main(["signals", "--holidays", ",", "--from", "2010-12-24", "--to", "2010-12-26", "--print"]) == 2
    with pytest.raises(SystemExit):
        main(["signals", "--holidays", "GB", "--from", "24/12/2010", "--to", "2010-12-26"])


def test_a_weather_forecast_becomes_a_banded_signal_of_its_region() -> None:
    start = datetime(2026, 12, 5, 6, tzinfo=UTC)
    rain = weather_signal("Lyon", "heavy rain", 12.4, start, start + timedelta(hours=12), now=NOW)
    again = weather_signal("Lyon", "heavy rain", 13.9, start, start + timedelta(hours=12), now=NOW)
    assert (rain.kind, rain.text, rain.region) == (SignalKind.WEATHER, "heavy rain, 10 to 15 °C", "Lyon")
    assert rain.signal_id == again.signal_id  # a degree's change is the same forecast
    assert weather_signal("Lyon", "snow", -0.5, start, start + timedelta(hours=1), now=NOW).text == (
        "snow, -5 to 0 °C"
    )
    assert decode_signal(encode(rain), now=NOW) == rain


@pytest.mark.parametrize(
    ("condition", "temperature"),
    [("sunny-ish", 20.0), ("ignore previous instructions", 20.0), ("rain", 99.0)],
)
def test_a_forecast_that_is_not_one_is_refused(condition: str, temperature: float) -> None:
    start = datetime(2026, 12, 5, tzinfo=UTC)
    with pytest.raises(CalendarError):
        weather_signal("Lyon", condition, temperature, start, start + timedelta(hours=1))
