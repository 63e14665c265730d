"""Test-wide settings, applied before torch is imported anywhere."""

import os

# Two cores shared by pytest and the subprocesses some tests start: spinning OpenMP threads
# starve each other (10x slower small LAPACK calls were measured), so threads sleep when idle.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
