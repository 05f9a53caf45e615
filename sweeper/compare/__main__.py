import signal
import sys

from sweeper.compare.cli import main

signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `| head` ends the table quietly, not with a traceback
sys.exit(main())
