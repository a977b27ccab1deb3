"""Reading a small file the operator names (the private key file, the publisher config)
without waiting for ever. Opened as any file is, a fifo nothing writes to blocked open()
for ever, and a terminal's device the read: `--config FIFO` hung the command. A pipe
something writes into is still read, as a file is (`--private-key-file <(pass show
gitprov)`): its writer holds it open before the command starts."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path


class NotAFile(OSError):
    """What stands at the path is no file to read: `what` says what it is."""

    def __init__(self, path: str, what: str) -> None:
        super().__init__(f"{path}: {what}")
        self.what = what


_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def read_small(path: str | Path, limit: int) -> bytes:
    """At most `limit` + 1 bytes of the file at `path` (links followed): a regular file,
    or a pipe or fifo that something has open for writing. NotAFile for anything else,
    and for a fifo nothing writes to; OSError when it cannot be opened or read."""
    # O_NONBLOCK: the open of a fifo returns at once, writer or not.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISFIFO(mode):
            first = fifo_first(fd, limit + 1)
            if first == b"":
                # (no writer, or one that closed without a byte: both leave nothing to
                # read, and with no writer yet, none may ever come)
                raise NotAFile(str(path), "a fifo or pipe nothing writes to")
            os.set_blocking(fd, True)
            return _read_to(fd, first or b"", limit + 1)
        if not stat.S_ISREG(mode):
            what = next((w for test, w in _KINDS if test(mode)), "no regular file")
            raise NotAFile(str(path), what)
        return _read_to(fd, b"", limit + 1)
    finally:
        os.close(fd)


def fifo_first(fd: int, size: int, wait: float = 0.0) -> bytes | None:
    """Up to `size` first bytes of the fifo or pipe at `fd`, opened without blocking:
    b"" when nothing writes to it (no writer, or one that closed without a byte), None
    when a writer holds it and has written nothing yet. With `wait`, a writer blocked
    in its own open() of the fifo, which the reader's open wakes and which connects a
    moment later, is given that many seconds to."""
    deadline = time.monotonic() + wait
    while True:
        try:
            first = os.read(fd, size)
        except BlockingIOError:
            return None
        if first or time.monotonic() >= deadline:
            return first
        time.sleep(0.01)


def _read_to(fd: int, data: bytes, most: int) -> bytes:
    chunks = [data]
    got = len(data)
    while got < most:
        chunk = os.read(fd, most - got)
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)
