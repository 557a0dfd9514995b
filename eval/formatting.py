"""Cell formatting for the Markdown reports (eval.report, eval.sbs_report) and their JSON files: one spelling of
a missing value ("–"), of percentages, of a value with its CI, and of NaN in JSON (null)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np


def num(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return str(int(value))
    return f"{float(value):.{digits}f}"


def with_ci(value: Any, ci: Any) -> str:
    text = num(value)
    if text == "–" or not ci or any(v is None or not math.isfinite(v) for v in ci):
        return text
    return f"{text} [{num(ci[0])}, {num(ci[1])}]"


def pct(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{100 * float(value):.1f} %"


def table(header: list[str], rows: list[list[str]]) -> str:
    escape = [[str(cell).replace("|", "\\|") for cell in row] for row in [header, *rows]]
    lines = ["| " + " | ".join(escape[0]) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in escape[1:]]
    return "\n".join(lines)


def jsonable(value: Any) -> Any:
    """NaN/inf -> None, numpy scalars -> Python, tuples -> lists, Paths -> str (json.dump with allow_nan=False)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(path: Path, results: dict[str, Any]) -> None:
    """``results`` as strict JSON (NaN -> null), indented, UTF-8."""
    path.write_text(
        json.dumps(jsonable(results), indent=2, ensure_ascii=False, allow_nan=False) + "\n", encoding="utf-8"
    )
