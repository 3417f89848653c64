"""Strict JSON: NaN and infinity become null, since strict parsers (JavaScript, jq, Go) reject the bare tokens."""

import json
import math
from typing import Any

import numpy as np


def to_strict(value: Any) -> Any:
    """A copy of nested dicts and sequences with non-finite floats as None and numpy values as Python ones."""
    if isinstance(value, dict):
        return {key: to_strict(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_strict(item) for item in value]
    if isinstance(value, (np.ndarray, np.generic)):
        return to_strict(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def dumps(value: Any, **kwargs: Any) -> str:
    """json.dumps of to_strict(value), refusing anything non-finite that slipped through."""
    return json.dumps(to_strict(value), allow_nan=False, **kwargs)
