"""`python -m subring.cli`: the same command as `subring` (test helpers start servers this way)."""
import sys

from . import main

sys.exit(main())
