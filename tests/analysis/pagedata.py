"""Read back the figure that pareto.html hands to plotly.js (for the page's tests)."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import numpy as np


def page_figure(text: str) -> tuple[list[dict], dict]:
    """The traces and layout that pareto.html hands to ``Plotly.newPlot`` (typed arrays decoded)."""
    call = re.search(r'Plotly\.newPlot\(\s*"front",\s*', text)
    assert call is not None, "no Plotly.newPlot call for the front"
    decoder = json.JSONDecoder()
    data, end = decoder.raw_decode(text, call.end())
    rest = text[end:].lstrip().removeprefix(",").lstrip()
    layout, _ = decoder.raw_decode(rest)
    return [decode_arrays(t) for t in data], layout


def decode_arrays(value: Any) -> Any:
    """plotly >= 6 writes numpy arrays as {"dtype", "bdata"} (base64); decode them to lists."""
    if isinstance(value, dict) and set(value) >= {"dtype", "bdata"}:
        raw = base64.b64decode(value["bdata"])
        return np.frombuffer(raw, dtype=np.dtype(value["dtype"])).tolist()
    if isinstance(value, dict):
        return {k: decode_arrays(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode_arrays(v) for v in value]
    return value
