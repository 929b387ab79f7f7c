"""Small reference networks: the PCA + tanh net of Mørch et al. (eq. 1) and a video classifier."""

from __future__ import annotations
