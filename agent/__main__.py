"""``python -m agent`` = the ``gpulse`` command."""

from agent.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
