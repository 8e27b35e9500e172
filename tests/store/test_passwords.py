"""argon2id cost as settings (`POSTROOM_ARGON2_*`, OWASP defaults), and old hashes upgraded at the next login."""

from __future__ import annotations

import base64
import subprocess
import sys
import threading

import nacl.pwhash.argon2id
import pytest
from argon2 import PasswordHasher
from argon2.low_level import Type, hash_secret_raw

from services.pop3.config import Pop3Settings
from services.smtp_ingress.config import IngressSettings
from services.store import Store, passwords
from services.store.argon2_checkers import LIBRARIES, PASSWORD_CHECKS, SAMPLES, WARM_UP, Checker
from services.store.config import StoreSettings
from services.store.passwords import Argon2Settings
from shared.errors import ConfigError
from shared.settings import load_settings
from tests.helpers import ROOT

SETTINGS_CLASSES = [Pop3Settings, IngressSettings, StoreSettings]


def parameters(encoded: str) -> str:
    """The `m=…,t=…,p=…` part of an encoded argon2 hash."""
    return encoded.split("$")[3]


def test_defaults_are_the_owasp_argon2id_configuration() -> None:
    settings = Argon2Settings()
    assert (settings.argon2_memory_kib, settings.argon2_time_cost, settings.argon2_parallelism) == (19456, 2, 1)
    hasher = passwords._make_hasher(19456, 2, 1)
    assert hasher.type is Type.ID
    assert parameters(hasher.hash("pw")) == "m=19456,t=2,p=1"


@pytest.mark.parametrize("settings_class", SETTINGS_CLASSES)
def test_every_service_that_checks_passwords_reads_the_variables(
    settings_class: type[Argon2Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POSTROOM_ARGON2_MEMORY_KIB", "1024")
    monkeypatch.setenv("POSTROOM_ARGON2_TIME_COST", "1")
    monkeypatch.setenv("POSTROOM_ARGON2_PARALLELISM", "2")
    settings = load_settings(settings_class)  # type: ignore[type-var]
    passwords.configure(settings)
    assert parameters(passwords.hash_password("pw")) == "m=1024,t=1,p=2"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("POSTROOM_ARGON2_MEMORY_KIB", "19MiB"),
        ("POSTROOM_ARGON2_MEMORY_KIB", "0"),
        ("POSTROOM_ARGON2_TIME_COST", "0"),
        ("POSTROOM_ARGON2_PARALLELISM", "0"),
        ("POSTROOM_ARGON2_PARALLELISM", "65"),
        ("POSTROOM_ARGON2_CHECKER", "openssl"),
        ("POSTROOM_ARGON2_THREADS", "-1"),
        ("POSTROOM_ARGON2_THREADS", "65"),
    ],
)
def test_a_bad_value_names_the_variable(variable: str, value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=variable):
        load_settings(Pop3Settings)


def test_memory_below_eight_kib_per_lane_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSTROOM_ARGON2_MEMORY_KIB", "64")
    monkeypatch.setenv("POSTROOM_ARGON2_PARALLELISM", "16")
    with pytest.raises(ConfigError, match="POSTROOM_ARGON2_MEMORY_KIB: must be at least 8 KiB per lane"):
        load_settings(StoreSettings)


def test_importing_the_store_hashes_nothing() -> None:
    """Every service imports it; a hash at import cost each one a memory_kib high-water mark (delivery's peak)."""
    code = "import services.store.passwords as p, services.delivery.app; print(p._DUMMY_HASH)"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "None"


async def test_unknown_users_are_checked_against_a_hash_of_the_configured_cost() -> None:
    passwords.configure(Argon2Settings(argon2_memory_kib=1024, argon2_time_cost=1, argon2_parallelism=1))
    assert await passwords.verify_password(None, "anything") == (False, False)
    assert passwords._DUMMY_HASH is not None
    assert parameters(passwords._DUMMY_HASH) == "m=1024,t=1,p=1"


async def test_an_old_64_mib_hash_still_logs_in_and_is_rehashed_to_the_defaults(store: Store) -> None:
    """Hashes made before the settings existed (argon2-cffi's default: 64 MiB, t=3, p=4) keep working."""
    passwords.configure(Argon2Settings())
    await store.accounts.add_domain("example.test")
    await store.accounts.add_user("old@example.test", "pw")
    account = store.keys.mailbox("old@example.test").account
    old = PasswordHasher().hash("pw")
    assert parameters(old) == "m=65536,t=3,p=4"
    await store.redis.hset(account, "password", old)

    assert not await store.accounts.authenticate("old@example.test", "wrong")
    assert (await store.redis.hget(account, "password")).decode() == old  # a failed login changes nothing
    assert await store.accounts.authenticate("old@example.test", "pw")
    rehashed = (await store.redis.hget(account, "password")).decode()
    assert rehashed.startswith("$argon2id$") and parameters(rehashed) == "m=19456,t=2,p=1"

    assert await store.accounts.authenticate("old@example.test", "pw")
    assert (await store.redis.hget(account, "password")).decode() == rehashed  # up to date: not hashed again


HASHERS = {
    "the defaults": PasswordHasher(memory_cost=19456, time_cost=2, parallelism=1),
    "argon2-cffi's old defaults": PasswordHasher(),
    "two lanes": PasswordHasher(memory_cost=1024, time_cost=1, parallelism=2),
    "argon2i": PasswordHasher(memory_cost=1024, time_cost=1, parallelism=1, type=Type.I),
}


def checks_run(checker: Checker) -> float:
    return float(PASSWORD_CHECKS.labels(checker)._value.get())


@pytest.mark.parametrize("checker", LIBRARIES)
@pytest.mark.parametrize("made_by", HASHERS)
async def test_a_hash_made_by_argon2_cffi_is_checked_by_either_library(made_by: str, checker: Checker) -> None:
    passwords.configure(Argon2Settings(argon2_memory_kib=1024, argon2_time_cost=1, argon2_checker=checker))
    stored = HASHERS[made_by].hash("pässword")
    before = {library: checks_run(library) for library in LIBRARIES}
    assert (await passwords.verify_password(stored, "pässword"))[0]
    assert not (await passwords.verify_password(stored, "password"))[0]
    assert not (await passwords.verify_password(stored, ""))[0]
    assert {library: checks_run(library) - before[library] for library in LIBRARIES} == {
        library: 3 if library is checker else 0 for library in LIBRARIES
    }


async def test_libsodium_checks_the_very_string_stored(monkeypatch: pytest.MonkeyPatch) -> None:
    passwords.configure(Argon2Settings(argon2_memory_kib=1024, argon2_time_cost=1, argon2_checker=Checker.LIBSODIUM))
    stored = HASHERS["two lanes"].hash("pw")
    used: list[bytes] = []
    sodium = nacl.pwhash.argon2id.verify

    def spy(encoded: bytes, password: bytes) -> bool:
        used.append(encoded)
        return sodium(encoded, password)

    monkeypatch.setattr(nacl.pwhash.argon2id, "verify", spy)
    assert (await passwords.verify_password(stored, "pw"))[0]
    assert used == [stored.encode()]


@pytest.mark.parametrize(
    ("stored", "work"),
    [
        ("$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$aGFzaA", 38912),
        ("$argon2i$v=19$m=1024,t=3,p=1$c29tZXNhbHQ$aGFzaA", 3072),
        ("$argon2id$v=19$m=1024,t=1,p=2$c29tZXNhbHQ$aGFzaA", 0),  # lanes on argon2-cffi's own threads
        ("$argon2id$v=19$t=1,p=1$c29tZXNhbHQ$aGFzaA", 0),
        ("$argon2id$v=19$m=x,t=1,p=1$c29tZXNhbHQ$aGFzaA", 0),
        ("$argon2id$v=19$garbage$c29tZXNhbHQ$aGFzaA", 0),
        ("garbage", 0),
    ],
)
def test_only_a_one_lane_hash_of_stated_cost_is_a_sample(stored: str, work: int) -> None:
    assert passwords._work(stored) == work


async def test_auto_keeps_the_library_it_measured_cheaper_and_every_answer_is_right() -> None:
    """Real checks through the real pool: the first ones alternate, then one library takes every check. How many
    measure depends on how many of the pool's threads ran them (each warms argon2-cffi up), so it is bounded."""
    passwords.configure(Argon2Settings(argon2_memory_kib=1024, argon2_time_cost=1))
    stored = passwords.hash_password("pw")
    before = {library: checks_run(library) for library in LIBRARIES}
    measuring = 0
    while passwords._checker.chosen is None:
        assert measuring < 20, "auto never chose"
        assert await passwords.verify_password(stored, "px") == (False, False)
        measuring += 1
    chosen = passwords._checker.chosen
    ran = {library: checks_run(library) - before[library] for library in LIBRARIES}
    assert sum(ran.values()) == measuring
    assert all(ran[library] >= SAMPLES[library] + WARM_UP[library] for library in LIBRARIES)
    assert await passwords.verify_password(None, "pw") == (False, False)
    assert await passwords.verify_password(stored, "pw") == (True, False)
    assert checks_run(chosen) - before[chosen] == ran[chosen] + 2


async def test_argon2d_and_overlong_hashes_are_still_checked_by_argon2_cffi() -> None:
    for hasher in (
        PasswordHasher(memory_cost=1024, time_cost=1, parallelism=1, type=Type.D),
        PasswordHasher(memory_cost=1024, time_cost=1, parallelism=1, salt_len=64),
    ):
        stored = hasher.hash("pw")
        assert await passwords.verify_password(stored, "pw") == (True, True)  # not today's parameters: rehashed
        assert await passwords.verify_password(stored, "px") == (False, False)


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "garbage",
        "$argon2id$",
        "$argon2id$v=19$m=1024,t=1,p=1$zzz$yyy",
        "$argon2id$v=19$m=1024,t=1,p=1$c29tZXNhbHQ",
        "$argon2i$v=19$m=0,t=0,p=0$c29tZXNhbHQ$aGFzaA",
        "$argon2d$v=19$m=1024,t=1,p=1$!!!$aGFzaA",
        "$argon2id$v=19$m=1024,t=1,p=1$" + "A" * 200 + "$aGFzaA",
        "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW",
        "$argon2id$v=19$m=1024,t=1,p=1$c29tZXNhbHQ$aGFzaA\udcff",
    ],
)
async def test_a_malformed_hash_is_a_failed_check_not_an_error(stored: str) -> None:
    assert await passwords.verify_password(stored, "pw") == (False, False)


async def test_the_check_runs_on_the_argon2_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[str] = []
    matches = passwords._matches

    def spy(stored: str, password: str) -> bool:
        threads.append(threading.current_thread().name)
        return matches(stored, password)

    monkeypatch.setattr(passwords, "_matches", spy)
    await passwords.verify_password(passwords.hash_password("pw"), "pw")
    await passwords.verify_password(None, "pw")
    assert len(threads) == 2 and all(name.startswith("argon2") for name in threads)


def test_the_unknown_user_hash_is_a_well_formed_string_of_the_configured_cost() -> None:
    """Nothing is hashed to make it, yet libsodium reads it whole: the same salt and parameters with the right tag
    for a password pass, so a check against it runs the full argon2 work before the tag differs."""
    passwords.configure(Argon2Settings(argon2_memory_kib=1024, argon2_time_cost=1, argon2_parallelism=2))
    dummy = passwords._dummy_hash()
    assert dummy.startswith("$argon2id$v=19$m=1024,t=1,p=2$")
    head, salt, _ = dummy.rsplit("$", 2)
    raw = hash_secret_raw(
        b"pw", base64.b64decode(salt + "=="), time_cost=1, memory_cost=1024, parallelism=2, hash_len=32, type=Type.ID
    )
    assert passwords._matches(f"{head}${salt}${passwords._b64(raw)}", "pw")
    assert not passwords._matches(dummy, "pw")
    assert passwords._dummy_hash() == dummy  # made once per configuration


def counted(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Counts the argon2 checks the pool runs."""
    calls: list[str] = []
    matches = passwords._matches

    def spy(stored: str, password: str) -> bool:
        calls.append(password)
        return matches(stored, password)

    monkeypatch.setattr(passwords, "_matches", spy)
    return calls


def cache_lookups(result: str) -> float:
    return float(passwords.AUTH_CACHE_LOOKUPS.labels(result)._value.get())


async def test_a_verified_login_is_served_from_the_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    passwords.configure(Argon2Settings(argon2_memory_kib=1024, argon2_time_cost=1))
    calls = counted(monkeypatch)
    stored = passwords.hash_password("pw")
    hits = cache_lookups("hit")
    assert await passwords.verify_password(stored, "pw") == (True, False)
    assert await passwords.verify_password(stored, "pw") == (True, False)
    assert calls == ["pw"] and cache_lookups("hit") == hits + 1
    assert await passwords.verify_password(stored, "px") == (False, False)  # a wrong password: full argon2 check
    assert calls == ["pw", "px"]
    assert await passwords.verify_password(passwords.hash_password("pw"), "pw") == (True, False)  # new hash misses
    assert calls == ["pw", "px", "pw"]


async def test_a_cached_login_is_still_rehashed(monkeypatch: pytest.MonkeyPatch) -> None:
    passwords.configure(Argon2Settings(argon2_memory_kib=1024, argon2_time_cost=1))
    calls = counted(monkeypatch)
    stored = PasswordHasher(memory_cost=2048, time_cost=1, parallelism=1).hash("pw")
    assert await passwords.verify_password(stored, "pw") == (True, True)
    assert await passwords.verify_password(stored, "pw") == (True, True)
    assert len(calls) == 1


async def test_a_login_after_its_rehash_is_served_from_the_cache(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    passwords.configure(Argon2Settings(argon2_memory_kib=1024, argon2_time_cost=1))
    await store.accounts.add_domain("example.test")
    await store.accounts.add_user("old@example.test", "pw")
    account = store.keys.mailbox("old@example.test").account
    weak = PasswordHasher(memory_cost=2048, time_cost=1, parallelism=1).hash("pw")
    await store.redis.hset(account, "password", weak)
    calls = counted(monkeypatch)
    misses, hits = cache_lookups("miss"), cache_lookups("hit")
    assert await store.accounts.authenticate("old@example.test", "pw")  # checked, then rehashed
    assert (await store.redis.hget(account, "password")).decode() != weak
    assert await store.accounts.authenticate("old@example.test", "pw")  # the new hash, already remembered
    assert not await store.accounts.authenticate("old@example.test", "px")
    assert calls == ["pw", "px"]
    assert (cache_lookups("miss"), cache_lookups("hit")) == (misses + 2, hits + 1)


def test_cache_entries_expire_and_the_oldest_is_evicted() -> None:
    now = [0.0]
    cache = passwords.AuthCache(ttl=60, size=2, clock=lambda: now[0])
    cache.store("h1", "pw")
    assert cache.hit("h1", "pw") and not cache.hit("h1", "px") and not cache.hit("h2", "pw")
    now[0] = 60.0
    assert not cache.hit("h1", "pw")
    for key in ("a", "b", "c"):
        cache.store(key, "pw")
    assert len(cache) == 2 and not cache.hit("a", "pw") and cache.hit("c", "pw")
    off = passwords.AuthCache(ttl=0, size=2)
    off.store("h1", "pw")
    assert not off.hit("h1", "pw") and len(off) == 0


def test_auth_cache_settings() -> None:
    assert (Argon2Settings().auth_cache_ttl, Argon2Settings().auth_cache_size) == (3600.0, 100_000)
    assert Argon2Settings.model_validate({"auth_cache_ttl": "10m"}).auth_cache_ttl == 600.0
    assert Argon2Settings.model_validate({"auth_cache_ttl": "0"}).auth_cache_ttl == 0.0
