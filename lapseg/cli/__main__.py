"""`python -m lapseg.cli ...`: the `lapseg` command without the installed entry point."""

import sys

from lapseg.cli import main

sys.exit(main())
