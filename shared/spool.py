"""Where the text of one message waits: in memory while small, in an unlinked temporary file after.

The ingress holds DATA there until it is published; the delivery, a message from its arrival until a worker takes
it.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from typing import IO

from shared.errors import ConfigError

# A message up to this size stays in memory and is published as one `bytes` (the cheap path for ordinary mail);
# a larger one goes to a file, so the ingress never holds a 25 MiB message in memory (docs/performance.md). The
# delivery calls a message above it large: one it may spill to a file while it waits for a worker.
MEMORY_LIMIT = 1024 * 1024


class MessageSpool:
    """Append-only while DATA is read; then read once, from the start, by the publish. Close it when done."""

    def __init__(self, directory: str | None = None, memory_limit: int = MEMORY_LIMIT) -> None:
        self.directory = directory
        self.memory_limit = memory_limit
        self.size = 0
        self._parts: list[bytes] = []
        self._file: IO[bytes] | None = None

    @classmethod
    def of(cls, data: bytes) -> MessageSpool:
        """A spool holding `data` in memory, whatever its size."""
        spool = cls(memory_limit=len(data))
        spool.write(data)
        return spool

    @property
    def in_memory(self) -> bool:
        return self._file is None

    def write(self, data: bytes) -> None:
        if not data:
            return
        self.size += len(data)
        if self._file is not None:
            self._file.write(data)
            return
        self._parts.append(data)
        if self.size > self.memory_limit:
            # Unlinked at creation where the OS allows it (O_TMPFILE): nothing is left behind after a crash.
            self._file = tempfile.TemporaryFile(dir=self.directory)  # noqa: SIM115 (closed by close())
            self._file.writelines(self._parts)
            self._parts = []

    def getvalue(self) -> bytes:
        """The whole text; only for a spool still in memory."""
        assert self._file is None, "a spooled file is read in chunks"
        parts = self._parts
        if len(parts) != 1:
            parts[:] = [b"".join(parts)] if parts else [b""]
        return parts[0]

    def head(self, limit: int) -> bytes:
        """Up to `limit` bytes from the start (enough for the header block of any sane message)."""
        if self._file is None:
            value = self.getvalue()
            return value if len(value) <= limit else value[:limit]
        self._file.seek(0)
        return self._file.read(limit)

    def read(self) -> bytes:
        """The whole text, from memory or from the file."""
        if self._file is None:
            return self.getvalue()
        self._file.seek(0)
        return self._file.read(self.size)

    def chunks(self, prefix: bytes, size: int) -> Iterator[bytes]:
        """`prefix` then the text, cut into pieces of exactly `size` bytes (the last one shorter)."""
        if self._file is None:
            data = prefix + self.getvalue()
            for start in range(0, len(data), size):
                yield data[start : start + size]
            return
        self._file.seek(0)
        pending = prefix
        while True:
            if len(pending) < size:
                pending += self._file.read(size - len(pending))
            if not pending:
                return
            yield pending[:size]
            pending = pending[size:]

    def close(self) -> None:
        """Free the memory or the file; idempotent."""
        self._parts = []
        if self._file is not None:
            self._file.close()
            self._file = None


def check_spool_dir(path: str | None, variable: str) -> None:
    """Fail at start, naming the variable, rather than at the first large message."""
    if path is None:
        return
    try:
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise ConfigError(f"{variable}: cannot create files in {path}: {exc.strerror or exc}") from None
