"""An import whose Redis connection breaks at the worst moment (the store script sent, its reply lost) stores
every message exactly once once it is run again: no loss, no duplicate, counters in step."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest

from services.store import Store
from tests.faults.proxy import REDIS_EVALSHA, Action, Direction, FaultProxy
from tests.helpers import REDIS_URL
from tests.store.migration import DOMAIN, PASSWORD, postroom_cli
from tests.store.test_import import maildir, message

USER = f"kim@{DOMAIN}"


@pytest.fixture
def store_env() -> dict[str, str]:
    return {"POSTROOM_REDIS_URL": REDIS_URL, "POSTROOM_REDIS_CLUSTER": "false"}


@pytest.mark.parametrize(
    ("action", "forward"),
    [
        pytest.param(Action.CUT, False, id="cut-before-the-script"),
        pytest.param(Action.CUT, True, id="cut-after-the-script-ran"),
        pytest.param(Action.RESET, True, id="reset-after-the-script-ran"),
    ],
)
async def test_import_interrupted_then_repeated_stores_each_message_once(
    namespace: str, store_env: dict[str, str], store: Store, tmp_path: Path, action: Action, forward: bool
) -> None:
    await store.accounts.add_domain(DOMAIN)
    await store.accounts.add_user(USER, PASSWORD)
    bodies = [message(f"m{i}", f"body {i}\n") for i in range(5)]
    root = maildir(tmp_path / "box", {f"cur/{i}.M1.host:2,": b for i, b in enumerate(bodies)})
    redis = urlsplit(REDIS_URL)
    with FaultProxy(redis.hostname or "127.0.0.1", redis.port or 6379).start() as proxy:
        proxy.on(REDIS_EVALSHA, Direction.UP, action, forward=forward)
        postroom = postroom_cli(namespace, {**store_env, "POSTROOM_REDIS_URL": proxy.redis_url})
        first = postroom("import", "maildir", str(root), "--user", USER)
        assert proxy.fired, "the fault never hit"
        # Either the store's reconnect sent the script again (it recognises its own earlier write), or the run
        # stopped with the temporary-failure status; both leave a state that a second run completes.
        assert first.exit_code in (0, 75), first.output
        again = postroom("import", "maildir", str(root), "--user", USER)
        assert again.exit_code == 0, again.output
    infos = await store.mailboxes.snapshot(USER)
    stored = [await store.mailboxes.read(USER, i.uid) or b"" for i in infos]
    assert sorted(stored) == sorted(b.replace(b"\n", b"\r\n") for b in bodies)
    user = await store.accounts.get_user(USER)
    assert user is not None and (user.messages, user.bytes) == (5, sum(i.size for i in infos))
