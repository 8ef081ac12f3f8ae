"""The archive's one-writer rule across processes: an exclusive `flock` on a file in the repository."""

from __future__ import annotations

import fcntl
import os
import threading
from contextlib import contextmanager
from pathlib import Path


class WriterLock:
    """Held around every ref update and index write. Re-entrant within one thread."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._local = threading.local()
        self._thread_lock = threading.Lock()  # flock is per open file, so threads queue here first

    @contextmanager
    def held(self):
        depth = getattr(self._local, "depth", 0)
        if depth:
            self._local.depth += 1
            try:
                yield
            finally:
                self._local.depth -= 1
            return
        with self._thread_lock:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)  # released by the kernel if the process dies
                self._local.depth = 1
                try:
                    yield
                finally:
                    self._local.depth = 0
                    fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)
