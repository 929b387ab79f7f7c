"""Glue of the ``pet_morch_saliency`` bundle: read a study folder (:mod:`.study`), fit/save/load the PCA + tanh
net (:mod:`.model`), compute and write the Mørch maps (:mod:`.outputs`).

The configs import it as ``scripts`` (``"$import scripts.model as model"``): ``monai.bundle run`` is started from
the bundle root (or with it on ``sys.path``), as for the angiogram bundle's ``scripts.cine_io``.
"""
