import sys

from agent.launcher.boot import main

sys.exit(main())
