"""Use a trained model on new inputs: `--mode=predict` (`run.py`) and `--mode=export` (`export.py`).

A trained workdir is a product: its (best or latest) checkpoint, an ensemble or one model, is
applied to inputs given as a split of the workdir's dataset, a data root of the registered
dataset, a prepared folder (`inputs.py` opens each as a `Source`), and the predictions, in each
task's own terms, are written with the ensemble's uncertainty (`uncertainty.py`) under
`<workdir>/predict/<name>/`. Large rasters are predicted in blended tiles (`tiles.py`). The same
prediction function (`model.py`), with the input standardisation inside, is what `--mode=export`
serialises with `jax.export`; `loader.py` runs that artifact with jax and numpy alone.
"""
