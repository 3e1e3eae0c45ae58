import sys

from pyro_contrast.cli import main

sys.exit(main())
