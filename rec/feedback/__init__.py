"""Learning from served feedback: off-policy evaluation (and, next, re-adaptation jobs).

- :mod:`rec.feedback.ope`: IPS, self-normalised IPS and doubly robust estimates of a candidate
  policy's value from the logged propensities, with confidence intervals.
- :mod:`rec.feedback.logged`: a tenant's log as logged slates (impressions joined to the clicks
  that quote them) and a candidate policy's propensities from the logged model ranks.
"""

from rec.feedback.logged import LoggedSlates, logged_slates, parse_target, target_propensities
from rec.feedback.ope import ESTIMATORS, Estimate, LoggedFeedback, bootstrap_interval, estimate, estimate_slates

__all__ = ["LoggedSlates", "logged_slates", "parse_target", "target_propensities", "ESTIMATORS", "Estimate", "LoggedFeedback", "bootstrap_interval", "estimate", "estimate_slates"]
