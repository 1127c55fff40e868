"""`python -m mambadna ...` is the `mambadna` command."""

import sys

from mambadna.cli import main

sys.exit(main())
