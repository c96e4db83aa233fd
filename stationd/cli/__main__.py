"""`python -m stationd.cli`: the same as the `stationd` command."""

from stationd.cli import main

main()
