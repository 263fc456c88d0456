"""Explanations: activation maps, CAMs, saliency, occlusion, and measured explanations.

- ``maps``: what a model looks at (tf-keras-vis Grad-CAM/Grad-CAM++/ScoreCAM/saliency,
  occlusion), overlays, and the measures (lesion energy, pointing game, border share).
"""
