"""Evaluation: attacks (:mod:`.attacks`; clean metrics and whole-ensemble PGD are :mod:`huang2021.measures`), the robustness evaluation (:mod:`.robustness`)
and its results (:mod:`.results`), the diversity analysis (:mod:`.diversity_analysis`) with Grad-CAM (:mod:`.gradcam`),
the report (:mod:`.report`) and merged evaluations (:mod:`.merge`)."""
