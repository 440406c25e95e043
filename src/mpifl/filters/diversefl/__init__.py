"""DiverseFL, all of it: the samples, the guiding gradients, the criteria and flag bits, the filter."""

from .criteria import criteria, diversefl_flags, similarity
from .filter import DiverseFLFilter, Params, SampleSource, client_test, guiding_samples
from .guiding import GuidingGradients, row_dots

__all__ = ["DiverseFLFilter", "GuidingGradients", "Params", "SampleSource", "client_test", "criteria",
           "diversefl_flags", "guiding_samples", "row_dots", "similarity"]
