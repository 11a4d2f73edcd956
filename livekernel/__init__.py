"""The live kernel: capability probe, settings journal, LiveBackend, calibration.

Everything that touches a running kernel lives here; simcore never imports it.
"""
