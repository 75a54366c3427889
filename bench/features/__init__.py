"""Speech encoders behind one seam (``upstream``: s3prl, ``upstream_hf``, ``upstream_whisper``), the SUPERB
weighted-sum featurizer (``featurizer``) and the on-disk feature cache (``store``)."""
