"""`python -m mpifl` is `mpifl` (useful under mpirun where console scripts are not on PATH)."""

from .cli import main

main()
