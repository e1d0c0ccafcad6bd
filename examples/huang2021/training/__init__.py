"""Training: the methods (:mod:`.methods`) and their objective (:mod:`.objective`), adversarial training (:mod:`.adversarial`),
the epoch loop (:mod:`.loop`), checkpoints and kept models (:mod:`.checkpoints`), torchrun / DDP (:mod:`.distributed`),
the train command's settings (:mod:`.config`) and its run (:mod:`.compare`)."""
