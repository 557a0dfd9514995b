"""The README's shell examples as tests run them: found by a marker, run as written with JUDGE pointed at a test
server (tests/test_serving_e2e.py, tests/test_classify_e2e.py)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
README_JUDGE = "JUDGE=http://127.0.0.1:8000"


def readme_block(marker: str) -> str:
    """The first ```bash block of the README that contains `marker`."""
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    found = [block for block in blocks if marker in block]
    assert found, f"no README bash block contains {marker!r}"
    return found[0]


def run_readme_block(block: str, judge_root: str, folder: Path) -> str:
    """Run `block` with bash in `folder`, JUDGE set to `judge_root` (the README's own line, or one put first)."""
    script = (
        block.replace(README_JUDGE, f"JUDGE={judge_root}")
        if README_JUDGE in block
        else f"JUDGE={judge_root}\n{block}"
    )
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], cwd=folder, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"README block failed ({done.returncode}):\n{script}\n{done.stderr[-2000:]}"
    return done.stdout
