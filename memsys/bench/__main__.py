"""``python -m memsys.bench gate|report ...`` (the same as ``memsys bench gate|report ...``)."""

import sys

from memsys.bench import main

sys.exit(main())
