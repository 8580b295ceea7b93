"""jaxlimits: the theoretical limits of KL-regularised language-model alignment, in JAX.

The public API, one name a line below; submodules for the rest: :mod:`jaxlimits.io` (files),
:mod:`jaxlimits.plot` (figures), :mod:`jaxlimits.streaming` (init/update/merge/finalize, out of
core), :mod:`jaxlimits.sharding` (several devices and hosts), :mod:`jaxlimits.testbed` (an exact,
enumerable language model; imported on demand).
"""

from . import io as io
from . import plot as plot
from . import sharding as sharding
from . import streaming as streaming
from .bon import BestOfN as BestOfN
from .bon import SoftBestOfN as SoftBestOfN
from .bon import best_of_n as best_of_n
from .bon import soft_best_of_n as soft_best_of_n
from .cache import enable_compilation_cache as enable_compilation_cache
from .compare import Comparison as Comparison
from .compare import Measurement as Measurement
from .compare import Run as Run
from .compare import compare as compare
from .compare import load_runs as load_runs
from .compare import measure_run as measure_run
from .compare import run_from_samples as run_from_samples
from .ensembles import Ensemble as Ensemble
from .ensembles import EnsembleScaling as EnsembleScaling
from .ensembles import ensemble_gaps as ensemble_gaps
from .ensembles import ensemble_scaling as ensemble_scaling
from .ensembles import load_ensemble as load_ensemble
from .estimators import TiltStats as TiltStats
from .estimators import tilt as tilt
from .frontier import Bands as Bands
from .frontier import Frontier as Frontier
from .frontier import bootstrap_bands as bootstrap_bands
from .frontier import default_betas as default_betas
from .frontier import frontier as frontier
from .frontier import resample as resample
from .inversion import Solution as Solution
from .inversion import max_gain_at_kl as max_gain_at_kl
from .inversion import min_kl_for_gain as min_kl_for_gain
from .proxy import BlindSpot as BlindSpot
from .proxy import Overoptimization as Overoptimization
from .proxy import Peak as Peak
from .proxy import ProxyGap as ProxyGap
from .proxy import bt_blind_spot as bt_blind_spot
from .proxy import overoptimization as overoptimization
from .proxy import overoptimization_peak as overoptimization_peak
from .proxy import proxy_gap as proxy_gap
from .samples import PromptError as PromptError
from .samples import Samples as Samples
from .tail import TailCurve as TailCurve
from .tail import tail_curve as tail_curve
from .trainer_logs import runs_from_log as runs_from_log

__version__ = "0.1.0"

__all__ = [
    "io",
    "plot",
    "sharding",
    "streaming",
    "Bands",
    "BestOfN",
    "BlindSpot",
    "Comparison",
    "Ensemble",
    "EnsembleScaling",
    "Frontier",
    "Measurement",
    "Overoptimization",
    "Peak",
    "PromptError",
    "ProxyGap",
    "Run",
    "Samples",
    "SoftBestOfN",
    "Solution",
    "TailCurve",
    "TiltStats",
    "best_of_n",
    "bootstrap_bands",
    "bt_blind_spot",
    "compare",
    "enable_compilation_cache",
    "default_betas",
    "ensemble_gaps",
    "ensemble_scaling",
    "frontier",
    "load_ensemble",
    "load_runs",
    "max_gain_at_kl",
    "measure_run",
    "min_kl_for_gain",
    "overoptimization",
    "overoptimization_peak",
    "proxy_gap",
    "resample",
    "run_from_samples",
    "runs_from_log",
    "soft_best_of_n",
    "tail_curve",
    "tilt",
]
