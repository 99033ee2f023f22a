"""``python -m speechprune`` runs the command line."""

import sys

from speechprune.cli import main

sys.exit(main())
