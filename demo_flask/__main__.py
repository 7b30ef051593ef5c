"""``python -m demo_flask``: the whole demo with one command (see :mod:`demo_flask.launcher`).

Ctrl-C handling is installed before anything else is imported, so an
interruption at any moment of start-up exits cleanly, without a traceback.
"""

import sys

from .interrupts import Interrupted, stop_on_signals

if __name__ == "__main__":
    stop_on_signals()
    try:
        from .launcher import main

        status = main()
    except Interrupted:  # while the launcher was being imported: nothing was started
        status = 0
    sys.exit(status)
