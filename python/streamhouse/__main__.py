"""``python -m streamhouse``: the same as the ``streamhouse`` command."""

import sys

from streamhouse.cli import main

sys.exit(main())
