"""`python -m watchdog` runs the CLI."""

import sys

from watchdog.cli import main

sys.exit(main())
