# Makes the repository root importable for the tests (configs, model, datasets, ...).
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
