import sys

from augdag.cli import main

sys.exit(main())
