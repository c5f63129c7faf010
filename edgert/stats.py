"""Small statistics shared by calibration, the policies and the planner."""

from __future__ import annotations

import math
from typing import Tuple


def wilson_interval(correct: int, total: int, z: float = 1.959964) -> Tuple[float, float]:
    """95% Wilson score interval of a proportion (sensible at small counts and at 0 or 1)."""
    if total == 0:
        return 0.0, 1.0
    p = correct / total
    denom = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denom
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)
