"""Reproductions of the seed papers' experiments, the angiogram study and the image signature demo. Each writes its
tables and figures to ``results/<name>/`` here (the committed results; ``--quick`` runs write under
``outputs/quick/<name>/``, ``--output-dir`` redirects either)."""
