"""python3 -m agent.cli: agentctl without its installed script."""
import sys

from agent.cli import main

sys.exit(main())
