"""`python -m likeflow` runs the `likeflow` command."""

import sys

from likeflow.cli import main

sys.exit(main())
