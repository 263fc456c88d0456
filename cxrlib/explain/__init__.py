"""Explanations: activation maps, CAMs, saliency, occlusion, and measured explanations.

- ``maps``: what a model looks at (activation maps; tf-keras-vis Grad-CAM/Grad-CAM++/ScoreCAM/
  saliency; occlusion; random baselines), as (N, S, S) maps in [0, 1].
- ``figures``: overlays, the prediction gallery, feature maps side by side.
- ``masks``: masks on the model's grid (a mask file, the border band, the central region).
- ``measures``: lesion energy, pointing game, border and lung shares, per film over a data set.
"""
