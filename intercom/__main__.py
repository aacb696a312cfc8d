import sys

from intercom.cli import main

sys.exit(main())
