"""``python -m gateway``: the ims-gateway command."""

import sys

from gateway.service.cli import main

if __name__ == "__main__":
    sys.exit(main())
