"""The plain folder layout of generator renders, for label-free side-by-sides (``python -m eval.sbs``)::

    DIR/
      gen-v1/p0001.png           DIR/<system>/<prompt_id>.<ext>
      gen-v1/p0002.png
      gen-v2/p0001.png
      ...

It becomes a label table with the required columns only (``image`` relative to DIR, ``prompt_id`` = file
name without its extension, ``system`` = folder name), which then goes through the same quality guard as a
canonical dataset. Only files directly inside a system folder count; hidden files and folders (``.x``), files
directly in DIR and deeper folders are not part of the layout. Which files are images is the guard's call
(a non-image file is excluded with the reason, not skipped here).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .format import REQUIRED_COLUMNS, TABLE_NAMES, DataFormatError


def is_folder_layout(root: str | Path) -> bool:
    """A folder without a label table: read as DIR/<system>/<prompt_id>.<ext>."""
    root = Path(root)
    return root.is_dir() and not any((root / name).is_file() for name in TABLE_NAMES)


def folder_table(root: str | Path) -> pd.DataFrame:
    """The raw label table (image, prompt_id, system) of a DIR/<system>/<prompt_id>.<ext> folder, sorted."""
    root = Path(root)
    if not root.is_dir():
        raise DataFormatError(f"{root}: dataset folder does not exist")
    rows = []
    for system_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for file in sorted(p for p in system_dir.iterdir() if p.is_file() and not p.name.startswith(".")):
            rows.append(
                {"image": f"{system_dir.name}/{file.name}", "prompt_id": file.stem, "system": system_dir.name}
            )
    if not rows:
        raise DataFormatError(
            f"{root}: empty: no label table ({', '.join(TABLE_NAMES)}) and no DIR/<system>/<prompt_id>.<ext> files"
        )
    return pd.DataFrame(rows, columns=list(REQUIRED_COLUMNS), dtype=object)
