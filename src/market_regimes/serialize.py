"""JSON helpers shared by everything that writes run outputs or bundles."""

from __future__ import annotations

import numpy as np


def json_default(obj):
    """``json.dumps(default=...)`` for numpy scalars and arrays; anything else as its string."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)
