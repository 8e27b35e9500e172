"""Properties of settings parsing: any text gives a value or a ValueError (a one-line start-up error), nothing else."""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from services.delivery.config import DeliverySettings
from services.pop3.config import Pop3Settings
from services.smtp_ingress.config import IngressSettings
from services.store.config import StoreSettings
from shared.errors import ConfigError
from shared.netaddr import HostPort, parse_host_port
from shared.settings import ENV_PREFIX, CommonSettings, listen_address, load_settings, parse_duration

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "": 1}
# Text an operator might type, with the characters that trip number parsers: signs, exponents, unicode digits.
numberish = st.text("0123456789.+-_eEinfatyINFAN smhd:[]٣²\u00a0,", max_size=16)
any_text = st.one_of(numberish, st.text(max_size=30))
env_text = any_text.map(lambda text: text.replace("\x00", ""))  # environment values cannot hold NUL


@settings(max_examples=500, deadline=None)
@given(text=any_text)
@example("nan")
@example("inf")
@example("-inf")
@example("1e400")
@example("1e308m")
@example("0")
def test_a_duration_is_positive_and_finite_or_a_value_error(text: str) -> None:
    try:
        seconds = parse_duration(text)
    except ValueError as error:
        assert "\n" not in str(error)
        return
    assert math.isfinite(seconds) and seconds > 0


@settings(max_examples=300, deadline=None)
@given(number=st.integers(1, 10**9), unit=st.sampled_from(sorted(UNITS)), upper=st.booleans())
def test_a_number_and_a_unit_is_that_many_seconds(number: int, unit: str, upper: bool) -> None:
    text = f" {number}{unit.upper() if upper else unit} "
    assert parse_duration(text) == number * UNITS[unit]


@settings(max_examples=500, deadline=None)
@given(text=any_text, default_port=st.one_of(st.none(), st.just(53)))
@example("[::1]:25", None)
@example("[::1]x", None)
@example(":0", None)
@example("host:²", None)
def test_host_port_is_a_port_in_range_or_a_value_error(text: str, default_port: int | None) -> None:
    try:
        parsed = parse_host_port(text, default_port)
    except ValueError:
        return
    assert 0 < parsed.port < 65536
    assert parse_host_port(str(parsed)) == parsed  # what we print (logs, errors) reads back as the same address


@settings(max_examples=300, deadline=None)
@given(
    host=st.one_of(st.ip_addresses().map(str), st.from_regex(r"[a-z0-9]([a-z0-9.-]{0,18}[a-z0-9])?", fullmatch=True)),
    port=st.integers(1, 65535),
)
def test_host_port_round_trips(host: str, port: int) -> None:
    assert parse_host_port(str(HostPort(host, port))) == HostPort(host, port)


@settings(max_examples=300, deadline=None)
@given(text=any_text)
def test_a_listen_address_is_an_address_none_or_a_value_error(text: str) -> None:
    with contextlib.suppress(ValueError):
        assert listen_address(text) is None or isinstance(listen_address(text), HostPort)


@contextlib.contextmanager
def environment(name: str, value: str) -> Iterator[None]:
    saved = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if saved is None:
            del os.environ[name]
        else:
            os.environ[name] = saved


@pytest.mark.parametrize("cls", [IngressSettings, DeliverySettings, Pop3Settings, StoreSettings])
def test_any_value_of_any_setting_starts_or_names_the_variable(cls: type[CommonSettings]) -> None:
    names = sorted(cls.model_fields)

    @settings(max_examples=300, deadline=None)
    @given(name=st.sampled_from(names), value=env_text)
    @example(name=names[0], value="")
    def check(name: str, value: str) -> None:
        variable = ENV_PREFIX + name.upper()
        with environment(variable, value):
            try:
                load_settings(cls)
            except ConfigError as error:
                # One line that names the variable; never a traceback out of a validator.
                assert variable in str(error) and "\n" not in str(error)

    for special in ("nan", "inf", "1e400", "-1", "0", "1s,inf", "[::1]:99999"):
        for name in names:
            check_one(cls, name, special)
    check()


def check_one(cls: type[CommonSettings], name: str, value: str) -> None:
    variable = ENV_PREFIX + name.upper()
    with environment(variable, value):
        try:
            load_settings(cls)
        except ConfigError as error:
            assert variable in str(error), (variable, value, str(error))
