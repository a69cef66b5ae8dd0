"""python3 -m agent.daemon: agentd (the tests, bench and the demo start it so)."""
import sys

from agent.daemon import main

sys.exit(main())
