"""`python -m flightline` runs the command-line tool."""

from flightline.cli.main import main

main()
