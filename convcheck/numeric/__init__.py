"""The finite-difference engine: every gradient entry of ``L = Σ out ⊙ G`` from few forward passes.

``groups`` says which entries are perturbed together and who owns each output, ``reduce`` turns one group's two
perturbed outputs into per-entry derivatives, intervals and noise, and ``engine`` runs the forward passes and
assembles one ``Estimate`` per tensor.
"""

from convcheck.numeric.engine import Engine, Estimate
from convcheck.numeric.groups import entrywise_passes, grouped_passes
from convcheck.numeric.reduce import NotLocalError

__all__ = ["Engine", "Estimate", "NotLocalError", "entrywise_passes", "grouped_passes"]
