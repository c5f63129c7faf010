"""The one progress callback type of long work (pack, convert, profile, calibrate).

The library reports progress by calling ``progress(label, done, total)``; it never prints.
The CLI turns the calls into one progress display (see ``cli``). ``None`` means nobody listens.
"""

from __future__ import annotations

from typing import Callable, Optional

#: ``progress(label, done, total)``: ``label`` names the step, ``done`` of ``total`` units
ProgressFn = Callable[[str, int, int], None]
Progress = Optional[ProgressFn]
#: byte counts of one copy or hash (``done``, ``total``), the unit of ``fileio``
ByteProgress = Callable[[int, int], None]
