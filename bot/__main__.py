"""`python -m bot` runs the shira command line."""

import sys

from bot.cli import main

sys.exit(main())
