# Makes the repository root importable for the tests (configs, model, datasets, ...).
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# Idle OpenMP threads sleep instead of spinning (see utils.prefer_passive_omp). Must be set before
# torch is imported.
import utils  # noqa: E402

utils.prefer_passive_omp()
