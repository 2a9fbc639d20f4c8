"""`python -m delivery_sync`: the same command line as `delivery-sync`."""

from .cli import main

main()
