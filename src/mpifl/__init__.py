"""mpifl: DiverseFL (Prakash & Avestimehr, "Mitigating Byzantine Attacks in Federated Learning") on MPI."""

__version__ = "0.1.0"
