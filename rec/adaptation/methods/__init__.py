"""One module per adaptation method; each registers an ``AdaptationMethod`` (``rec.adaptation.registry``).

Every module here is imported on the registry's first lookup, so a new method is one new file in
this package (plus its tests): see docs/adaptation.md. Modules must not import torch or peft at
import time (``rec.config`` reads the registry); import them inside the methods' functions.
"""
