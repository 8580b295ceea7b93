"""jaxlimits: the theoretical limits of KL-regularised language-model alignment, in JAX."""

from .frontier import Bands as Bands
from .frontier import Frontier as Frontier
from .frontier import bootstrap_bands as bootstrap_bands
from .frontier import default_betas as default_betas
from .frontier import frontier as frontier
from .frontier import resample as resample
from .inversion import Solution as Solution
from .inversion import max_gain_at_kl as max_gain_at_kl
from .inversion import min_kl_for_gain as min_kl_for_gain
from .samples import Samples as Samples
from .estimators import TiltStats as TiltStats
from .estimators import tilt as tilt

__version__ = "0.1.0"

__all__ = [
    "Bands",
    "Frontier",
    "Samples",
    "Solution",
    "TiltStats",
    "bootstrap_bands",
    "default_betas",
    "frontier",
    "max_gain_at_kl",
    "min_kl_for_gain",
    "resample",
    "tilt",
]
