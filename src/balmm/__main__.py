import sys

from balmm.cli import main

sys.exit(main())
