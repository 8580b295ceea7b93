r"""Proxy rewards and reward hacking: the gold reward left behind by aligning to a proxy (MATH.md §7).

A policy is aligned to a proxy ``r`` and judged by a gold reward ``s``; ``delta = s - r`` is the
preference residual. With :class:`~jaxlimits.Samples` carrying the proxy as ``rewards`` and the
gold reward as ``scores``, everything here is the core estimator (:func:`jaxlimits.tilt`) with
different rewards and scores:

* the gold gain after aligning to the proxy, ``Delta_s(beta, r) = E_{pi^r}[s] - E_{pi0}[s]``
  (``tilt`` of ``Samples(rewards=r, scores=s)``);
* the gold gain after aligning to gold, ``Delta_s(beta, s)`` (``tilt`` of ``Samples(rewards=s)``);
* their difference, the **gap** (Prop. 3 of the paper). The proxy-aligned policy is the
  gold-aligned one tilted by ``exp(-delta/beta)``, hence the exact identity

  .. math::

     \mathrm{gap}(\beta) = \Delta_s(\beta, s) - \Delta_s(\beta, r)
       = -\frac{\mathrm{Cov}_{\pi^s}(s, e^{-\delta/\beta})}{E_{\pi^s}[e^{-\delta/\beta}]}.

  It is **not** always positive nor monotone in beta. What always holds (on samples as in the
  population, because each tilt maximises its own objective) is

  .. math::

     \beta\,(KL_s - KL_r) \;\le\; \mathrm{gap} \;\le\;
       \beta\,(KL_s - KL_r) + E_{\pi^s}[\delta] - E_{\pi^r}[\delta],
     \qquad |\mathrm{gap}| \le \max s - \min s,

  with ``KL_s``, ``KL_r`` the KL divergences of the gold- and proxy-aligned policies.

The gap compares the two policies at the same beta, so it depends on the proxy's scale; at the
same KL instead, the gold frontier (:func:`jaxlimits.max_gain_at_kl` of gold) bounds the proxy's
gold gain from above, and the difference, the *shortfall*, is never negative
(:func:`overoptimization` with ``same_kl=True``; exactly so on the plug-in estimates, by the
frontier's projection onto that bound on the bias-corrected ones, :func:`jaxlimits.peak.frontier_at_least`).

Over-optimisation (Gao et al.) is the gold gain of the proxy-aligned policy as a function of its
KL; its peak is where ``d gain / d beta = -Cov_beta(s, r) / beta^2`` (MATH.md §4) vanishes (by
default the slope of the bias-corrected gain, MATH.md §3b), found by a bracketed safeguarded
Newton solve in ``log beta`` on a one-beta softmax of the draws, and differentiable by the
implicit function theorem (:func:`overoptimization_peak`). The Bradley-Terry
blind spot of App. C is :func:`bt_blind_spot`; ensembles of proxies are in
:mod:`jaxlimits.ensembles`.

The parts, by concept: :mod:`jaxlimits.gap` (the gap), :mod:`jaxlimits.peak` (over-optimisation and
its peak), :mod:`jaxlimits.blind_spot` (the Bradley-Terry blind spot) and the figure in
:mod:`jaxlimits.plot`; this module re-exports their public names.
"""

from .blind_spot import BlindSpot as BlindSpot
from .blind_spot import bt_blind_spot as bt_blind_spot
from .gap import PromptGaps as PromptGaps
from .gap import ProxyGap as ProxyGap
from .gap import gold_aligned as gold_aligned
from .gap import proxy_gap as proxy_gap
from .peak import PEAK_AT_START as PEAK_AT_START
from .peak import PEAK_BEYOND_GRID as PEAK_BEYOND_GRID
from .peak import PEAK_FLAT as PEAK_FLAT
from .peak import PEAK_FOUND as PEAK_FOUND
from .peak import PEAK_MESSAGES as PEAK_MESSAGES
from .peak import PEAK_NAMES as PEAK_NAMES
from .peak import PEAK_NOT_BRACKETED as PEAK_NOT_BRACKETED
from .peak import Overoptimization as Overoptimization
from .peak import Peak as Peak
from .peak import overoptimization as overoptimization
from .peak import overoptimization_peak as overoptimization_peak
from .plot import overoptimization_figure as overoptimization_figure
