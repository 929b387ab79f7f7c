"""Small reference networks: the PCA + tanh net of Mørch et al. (eq. 1), a video classifier, a small CNN."""

from __future__ import annotations

from monai_saliency.models.pca import PCAProjection
from monai_saliency.models.small_cnn import SmallCNN
from monai_saliency.models.tanh_net import FitResult, TanhNet
from monai_saliency.models.video import VideoLesionNet

__all__ = ["FitResult", "PCAProjection", "SmallCNN", "TanhNet", "VideoLesionNet"]
