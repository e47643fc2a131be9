"""neuralreg: a DataJoint pipeline after Li et al., "Learning From Brains How to Regularize Machines"
(NeurIPS 2019). Tables in the schema modules, computation in `compute/`."""
from .compute.common.runtime import prefer_passive_openmp as _prefer_passive_openmp

# before anything imports torch: OpenMP threads sleep, not spin, while they wait (compute/common/runtime.py)
_prefer_passive_openmp()
