"""`python -m app` = `brivl studio`."""
import sys

from brivl.cli import main

sys.exit(main(["studio", *sys.argv[1:]]))
