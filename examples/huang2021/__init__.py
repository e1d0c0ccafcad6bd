"""The reproduction of Huang et al. (AAAI 2021) behind ``examples/train.py``, ``evaluate.py`` and ``diversity.py``.

By stage, each folder one job:

- :mod:`.data`: the data sets' splits, readers and augmentation;
- :mod:`.members`: the member architectures (CNN, ResNet-18/34, VGG-16);
- :mod:`.training`: the methods' objectives, adversarial training, the epoch loop, checkpoints, DDP;
- :mod:`.evaluation`: clean metrics, attacks, robustness results, diversity and Grad-CAM, the report;

and, shared by the stages, :mod:`.settings` (the commands' flags as dataclasses), :mod:`.run_dir`
(atomic files, library versions) and :mod:`.progress`. The commands parse their flags and call
one function here. Uses only the public API of ``ensemble_diversity`` plus torch, numpy and
scikit-learn (torchvision, ART and matplotlib where their stage needs them); nothing in
``src/`` imports from here, and this package is not part of the library's wheel.
"""
