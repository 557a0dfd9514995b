"""`python -m eval` is `python -m eval.compare`."""

import sys

from .compare import main

sys.exit(main())
