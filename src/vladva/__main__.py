"""`python -m vladva ...` runs the `vladva` command line (for environments without the script)."""

from vladva.cli import main

main()
