"""`python -m flightline` runs the command-line tool."""

from flightline.cli import main

main()
