"""``python -m streams``: run the stream worker (settings from the environment)."""

from streams.worker import main

main()
