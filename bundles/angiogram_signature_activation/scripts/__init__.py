"""Bundle-local helpers (MONAI puts the bundle root on ``sys.path`` when a workflow runs)."""
