"""Where third-party output goes while edgert works: one log file, or the screen with ``-v``.

onnxruntime's quantizers, transformers, optimum and torch log through Python's ``logging``
(onnxruntime's MatMulNBits module even configures the root logger at INFO when imported),
draw tqdm bars on stderr and raise warnings. Inside ``route_third_party()`` all of it goes
to one log file under the edgert cache directory (``${XDG_CACHE_HOME:-~/.cache}/edgert/logs``);
with ``verbose=True`` it stays on the screen. edgert's own progress goes through its progress
callback either way, and a rich console keeps drawing on the terminal: the stand-in for
``sys.stderr``/``sys.stdout`` names the real stream as ``rich_proxied_file``, which rich
writes to (the attribute rich's own ``FileProxy`` uses).

Everything changed (handlers, levels, ``propagate``, warning capture, the standard streams)
is restored on exit.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import io
import logging
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, TextIO

from .paths import cache_dir

#: loggers whose records are routed (their own handlers are detached meanwhile; transformers
#: and llama.cpp's bridge have one each); anything else reaches the root logger and is routed too
THIRD_PARTY_LOGGERS = ("onnxruntime", "onnx", "onnxscript", "transformers", "optimum", "torch", "huggingface_hub",
                       "accelerate", "py.warnings", "edgert.llama_cpp", "edgert.tensorrt")
LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s: %(message)s"


@dataclass
class LogRoute:
    """One active routing: ``path`` is the log file (None when verbose: output stays on screen)."""

    verbose: bool
    path: Optional[Path]

    @property
    def written(self) -> bool:
        """Whether anything reached the log file."""
        return self.path is not None and self.path.is_file() and self.path.stat().st_size > 0


_routes: List[LogRoute] = []


def active_route() -> Optional[LogRoute]:
    return _routes[-1] if _routes else None


def log_dir() -> Path:
    return cache_dir("logs")


def new_log_path(kind: str) -> Path:
    """A fresh log file name for one run of ``kind`` (e.g. ``convert``), in ``log_dir()``."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return log_dir() / f"{kind}-{stamp}-{os.getpid()}.log"


class _LogStream(io.TextIOBase):
    """Stands in for sys.stderr / sys.stdout: writes go to the log, rich draws on ``rich_proxied_file``."""

    def __init__(self, log: TextIO, terminal: TextIO):
        self._log = log
        self.rich_proxied_file = getattr(terminal, "rich_proxied_file", terminal)

    def write(self, text: str) -> int:
        self._log.write(text)
        return len(text)

    def flush(self) -> None:
        self._log.flush()

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:  # code that writes to the descriptor (or dups it) writes to the log too
        return self._log.fileno()

    def writable(self) -> bool:
        return True


@contextlib.contextmanager
def route_third_party(verbose: bool = False, path: Optional[Path] = None, kind: str = "edgert") -> Iterator[LogRoute]:
    """Send third-party logs, warnings and bars to ``path`` (default: a new file in ``log_dir()``),
    or leave them on the screen when ``verbose``. Yields the ``LogRoute``."""
    if verbose:
        route = LogRoute(True, None)
        _routes.append(route)
        try:
            yield route
        finally:
            _routes.remove(route)
        return
    path = Path(path) if path is not None else new_log_path(kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    route = LogRoute(False, path)
    with open(path, "a", encoding="utf-8", buffering=1) as log, contextlib.ExitStack() as stack:
        handler = logging.StreamHandler(log)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        root = logging.getLogger()
        stack.callback(_restore_logger, root, list(root.handlers), root.level, root.propagate)
        root.handlers = [handler]
        root.setLevel(logging.INFO)
        for name in THIRD_PARTY_LOGGERS:
            logger = logging.getLogger(name)
            stack.callback(_restore_logger, logger, list(logger.handlers), logger.level, logger.propagate)
            logger.handlers = []  # their own levels stay (transformers: WARNING)
            logger.propagate = True
        stack.enter_context(warnings.catch_warnings())
        warnings.simplefilter("default")
        logging.captureWarnings(True)
        stack.callback(logging.captureWarnings, False)
        stack.enter_context(contextlib.redirect_stderr(_LogStream(log, sys.stderr)))
        stack.enter_context(contextlib.redirect_stdout(_LogStream(log, sys.stdout)))
        _routes.append(route)
        stack.callback(_routes.remove, route)
        yield route


def _restore_logger(logger: logging.Logger, handlers, level: int, propagate: bool) -> None:
    logger.handlers = handlers
    logger.setLevel(level)
    logger.propagate = propagate
