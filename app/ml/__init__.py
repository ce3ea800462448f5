"""MarrowDiff's image and model core.

Pure image and model code (quality checks, preprocessing, ReXNet-150 loading and batched
prediction, Grad-CAM, training, evaluation, EDA). It never imports the web, database or
queue layers: those depend on this package, not the other way round.
"""
