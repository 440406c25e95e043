"""Datasets, partitions across clients, and the fetch helpers behind `mpifl data fetch`."""
