"""A search's checkpoint: small gzip JSON files in a directory tied to the search's exact inputs.

Every stage writes what it computed (per example chunk, per map evaluation) before the next
starts, and every later stage reads those files back, never in-memory copies: a search killed
at any point and run again (in this process, a later one, or on another machine with the same
directory) reads the same numbers and ends with the identical map. Files are written atomically,
and their bytes are deterministic (no gzip timestamp), so a committed checkpoint diffs cleanly.
"""

from __future__ import annotations

import gzip
import json
import os
import time
from pathlib import Path
from typing import Any

from act_eval.files import atomic_file, atomic_write_text

STORE_VERSION = 2  # bump when the meaning of a stored file changes


class SearchStore:
    def __init__(self, directory: str | os.PathLike, digest: str, inputs: dict | None = None) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        meta = self.dir / "meta.json"
        if meta.is_file():
            stored = json.loads(meta.read_text()).get("digest")
            if stored != digest:
                raise ValueError(
                    f"checkpoint {self.dir} belongs to a search with other inputs (model, examples or settings); "
                    "use another --checkpoint directory or pass --restart"
                )
        else:
            atomic_write_text(meta, json.dumps({"digest": digest, "store_version": STORE_VERSION, "inputs": inputs}, indent=1))

    def _path(self, name: str) -> Path:
        return self.dir / f"{name}.json.gz"

    def has(self, name: str) -> bool:
        return self._path(name).is_file()

    def load(self, name: str) -> Any:
        return json.loads(gzip.decompress(self._path(name).read_bytes()))

    def save(self, name: str, data: Any) -> None:
        with atomic_file(self._path(name), "wb") as handle:
            handle.write(gzip.compress(json.dumps(data, separators=(",", ":")).encode(), mtime=0))

    def wait_for(self, names: list[str], poll: float = 2.0) -> None:
        """Block until every file in ``names`` exists (other ranks of a sharded search write them)."""
        while not all(self.has(n) for n in names):
            time.sleep(poll)
