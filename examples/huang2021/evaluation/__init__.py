"""Evaluation: clean metrics (:mod:`.clean`), attacks (:mod:`.attacks`), the robustness evaluation (:mod:`.robustness`)
and its results (:mod:`.results`), the diversity analysis (:mod:`.diversity_analysis`) with Grad-CAM (:mod:`.gradcam`),
the report (:mod:`.report`)."""
