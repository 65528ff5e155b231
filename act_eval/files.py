"""Files written whole or not at all: a temporary file beside the target, then a rename.

Head maps, submissions, checkpoints and reports are read by other processes (a second search
rank, the board, a later session), so none of them may ever see half a file.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


@contextmanager
def atomic_file(path: Path, mode: str = "w") -> Iterator[IO[Any]]:
    """A temporary file in ``path``'s directory that replaces ``path`` when the block ends without an error."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; a published file is for everyone
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` whole (:func:`atomic_file`); returns ``path``."""
    with atomic_file(path) as handle:
        handle.write(text)
    return path
