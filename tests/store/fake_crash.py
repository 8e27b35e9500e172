"""A stand-in child for `postroom run` tests that exits with status 3 right after starting."""

from __future__ import annotations

from tests.store.fake_service import main

if __name__ == "__main__":
    main(crash_with=3)
