"""ByzFL's benchmark JSON in mpifl: its grid expanded into mpifl runs (:mod:`.translate`), its names mapped to mpifl's
registry (:mod:`.names`), its evaluation computed from mpifl's HDF5 runs (:mod:`.evaluate`). See docs/byzfl.md."""
