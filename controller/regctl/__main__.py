import sys

from regctl.cli import main

sys.exit(main())
