"""Learning from served feedback: off-policy evaluation (and, next, re-adaptation jobs).

- :mod:`rec.feedback.ope`: IPS, self-normalised IPS and doubly robust estimates of a candidate
  policy's value from the logged propensities, with confidence intervals.
"""

from rec.feedback.ope import ESTIMATORS, Estimate, LoggedFeedback, bootstrap_interval, estimate, estimate_slates

__all__ = ["ESTIMATORS", "Estimate", "LoggedFeedback", "bootstrap_interval", "estimate", "estimate_slates"]
