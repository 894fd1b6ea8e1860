"""`python -m infra.demo`: the same as `fornax demo`."""

import sys

from .build import main

sys.exit(main())
