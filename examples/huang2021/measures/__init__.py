"""What both the training run and the evaluation measure: clean accuracy and the diversity metrics
on a split (:mod:`.clean`), and PGD on a whole ensemble (:mod:`.ensemble_pgd`). Below both
:mod:`huang2021.training` and :mod:`huang2021.evaluation`, so neither imports the other's way up."""
