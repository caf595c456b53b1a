"""``python -m pyfory.integrations.zmq``: the command line of pyfory.integrations.zmq.cli."""

import sys

from pyfory.integrations.zmq.cli import main

if __name__ == "__main__":
    sys.exit(main())
