"""`python -m vlm_judge.serve --model DIR`: serve the judge with vLLM's OpenAI-compatible API.

The launcher is vlm_judge.serving.launcher (`--help` lists its options and exit codes); this module is the command.
"""

from __future__ import annotations

import os
import sys

from vlm_judge.serving.launcher import main

__all__ = ["main"]

if __name__ == "__main__":
    exit_code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Nothing is left to clean up (vLLM's process group is gone), but tearing down the interpreter with torch and
    # transformers loaded (for the plan) takes 10-15 s on a busy 2-core machine; orchestrators wait for this exit.
    os._exit(exit_code)
