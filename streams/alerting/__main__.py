"""``python -m streams.alerting worker -l warn``: run the alerting worker."""

from streams.alerting.app import main

main()
