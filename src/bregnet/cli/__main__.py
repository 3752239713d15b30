"""``python -m bregnet.cli`` (what ``torchrun ... -m bregnet.cli train ...`` runs)."""

import sys

from . import main

sys.exit(main())
