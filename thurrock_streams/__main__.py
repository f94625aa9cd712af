"""``python -m thurrock_streams`` is the ``thurrock-streams`` command."""

import sys

from .cli import main

sys.exit(main())
