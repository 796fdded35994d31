"""``python -m sparkfleet`` runs the command line."""

import sys

from sparkfleet.cli import main

sys.exit(main())
