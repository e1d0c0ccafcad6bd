"""The data sets: splits and batches (:mod:`.splits`), the published files' readers (:mod:`.image_files`), augmentation (:mod:`.augmentation`)."""
